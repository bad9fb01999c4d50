"""The study's files: one result file per finished job, written atomically, and the version check.

``<work>/jobs/<key>.json`` exists only for a finished job (the file is written whole or not at all), so
"finished" never depends on a half-written file. A file of another study version is an error naming
the version, never silently mixed in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gccs_core import files

from .config import STUDY_FORMAT, STUDY_VERSION


class StudyError(ValueError):
    """A bad input or a foreign/old file: reported on one line."""


atomic_write_text = files.atomic_write_text


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False, sort_keys=False) + "\n")


sha256_file = files.file_sha256


def check_version(data: Any, source: str) -> None:
    """Refuse a file that is not a study file of this version (one line, naming both versions)."""
    if not isinstance(data, dict) or data.get("format") != STUDY_FORMAT:
        raise StudyError(f"{source} is not a study file (format={data.get('format') if isinstance(data, dict) else None!r}, "
                         f"expected {STUDY_FORMAT!r}).")
    if data.get("version") != STUDY_VERSION:
        raise StudyError(f"{source} was written by study version {data.get('version')!r}; this is version {STUDY_VERSION}: "
                         "use another --work/--out folder or remove the old one.")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StudyError(f"{path} is not readable JSON ({err}).") from err


class Store:
    """Finished jobs in ``<work>/jobs``; the study's settings in ``<work>/study.json``."""

    def __init__(self, work: str | os.PathLike) -> None:
        self.work = Path(work)
        self.jobs = self.work / "jobs"

    def open(self, settings: dict[str, Any]) -> None:
        """Create the folder, or check that an existing one belongs to this study version."""
        meta = self.work / "study.json"
        if meta.exists():
            check_version(read_json(meta), str(meta))
        else:
            write_json(meta, {"format": STUDY_FORMAT, "version": STUDY_VERSION, "settings": settings})
        self.jobs.mkdir(parents=True, exist_ok=True)
        for tmp in (self.work / "models").glob(".*.tmp-*") if (self.work / "models").exists() else []:
            _remove_tree(tmp)  # a training killed in flight: its job will run again from scratch

    def finished(self) -> dict[str, dict[str, Any]]:
        """key -> stored record (``job``, ``result``, ``wall_s``)."""
        out = {}
        if not self.jobs.exists():
            return out
        for p in sorted(self.jobs.glob("*.json")):
            data = read_json(p)
            check_version(data, str(p))
            out[p.stem] = data
        return out

    def save(self, job: dict[str, Any], result: dict[str, Any], wall_s: float, finished_at: str) -> None:
        write_json(self.jobs / f"{job['key']}.json", {"format": STUDY_FORMAT, "version": STUDY_VERSION, "job": job,
                                                      "result": result, "wall_s": wall_s, "finished_at": finished_at})


def _remove_tree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)
