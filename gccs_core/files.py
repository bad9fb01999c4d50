"""File primitives without torch: atomic writes, hashes, and the safetensors header of a checkpoint.

Importing this module costs no torch, so the app can list models and check files before torch is
loaded. Every writer is atomic (temporary file in the same folder, fsync, ``os.replace``): a reader
sees the old file or the whole new one, never half of it. Every reader is bounded: a hostile header
cannot make it read or parse more than ``MAX_HEADER_BYTES``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

CHECKPOINT_FORMAT = "gccs-checkpoint"
CHECKPOINT_FORMAT_VERSION = "1"
CHECKPOINT_KINDS = ("model", "training")
MAX_HEADER_BYTES = 1024 * 1024
"""Largest safetensors JSON header read (ours are a few kB: the tensor table plus the metadata)."""


class CheckpointError(ValueError):
    """A file is not a valid checkpoint of this library (wrong, truncated, foreign or hostile)."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """``atomic_write_bytes`` for text."""
    return atomic_write_bytes(path, text.encode(encoding))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_safetensors_header(head: bytes, size: int, source: str) -> dict[str, Any]:
    """The JSON header of a safetensors file from its first bytes ``head`` (file ``size`` bytes in all).

    ``head`` must hold the 8-byte length and the header itself; the declared length is checked
    against ``MAX_HEADER_BYTES`` and the file size before anything is parsed.
    """
    if size < 8 or len(head) < 8:
        raise CheckpointError(f"{source}: file is {size} bytes, too short to be a safetensors checkpoint.")
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER_BYTES or n > size - 8:
        raise CheckpointError(
            f"{source}: header declares {n} bytes but the file holds {size - 8} after the length field "
            f"(limit {MAX_HEADER_BYTES}); the file is truncated or not a safetensors checkpoint."
        )
    try:
        header = json.loads(head[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:  # RecursionError: hostile nesting
        raise CheckpointError(f"{source}: header is not valid JSON ({err}); not a safetensors checkpoint.") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: header is not a JSON object; not a safetensors checkpoint.")
    return header


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` table of a safetensors file, reading only its header (bounded, no tensors)."""
    p = Path(path)
    with open(p, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        if len(head) == 8:
            head += fh.read(min(struct.unpack("<Q", head)[0], MAX_HEADER_BYTES))
    info = parse_safetensors_header(head, size, str(p)).get("__metadata__")
    return info if isinstance(info, dict) else {}


def checkpoint_info(info: dict[str, Any], source: str) -> tuple[str, dict[str, Any]]:
    """Validate a checkpoint's ``__metadata__`` table; returns ``(kind, metadata)``."""
    if not isinstance(info, dict) or info.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{source}: a safetensors file, but not a {CHECKPOINT_FORMAT} (no GCCS metadata in its header).")
    if info.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{source}: format_version={info.get('format_version')!r}; "
                              f"this library reads version {CHECKPOINT_FORMAT_VERSION}.")
    kind = info.get("kind")
    if kind not in CHECKPOINT_KINDS:
        raise CheckpointError(f"{source}: kind={kind!r}; allowed: {', '.join(CHECKPOINT_KINDS)}.")
    try:
        meta = json.loads(info.get("metadata", ""))
    except (TypeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{source}: metadata is not valid JSON ({err}).") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: metadata must be a JSON object, got {type(meta).__name__}.")
    return kind, meta


def read_checkpoint_header(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """``(kind, metadata)`` of a checkpoint from its header alone: no torch, no tensor data read."""
    return checkpoint_info(read_safetensors_metadata(path), str(path))
