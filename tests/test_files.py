"""gccs_core.files (atomic writes, hashes, the checkpoint header without torch) and gccs_core.validation."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
import torch

from gccs_core.checkpoint import save_model
from gccs_core.files import (
    MAX_HEADER_BYTES,
    CheckpointError,
    atomic_write_bytes,
    atomic_write_text,
    file_sha256,
    read_checkpoint_header,
)
from gccs_core.models import ModelSpec, build_model
from gccs_core.validation import check_choice, check_int, check_labels, check_number


def test_atomic_write_replaces_the_whole_file_and_keeps_it_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "report.json"
    atomic_write_text(path, "first\n")
    atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_text() == "second\n"
    assert [p.name for p in path.parent.iterdir()] == ["report.json"], "a temporary file was left behind"


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # more than one 1 MiB chunk
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_checkpoint_header_reads_the_metadata_of_a_real_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec("mlp", (1, 8, 8), 10, 16, "gccs", {"sigma": 2.0}, (0.3,), (0.38,)))
    path = save_model(model, tmp_path / "m.safetensors", {"dataset": "digits"})
    kind, meta = read_checkpoint_header(path)
    assert kind == "model" and meta["dataset"] == "digits" and meta["spec"]["loss_params"] == {"sigma": 2.0}


def test_checkpoint_header_refuses_hostile_and_foreign_files(tmp_path: Path) -> None:
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}" * 10)
    with pytest.raises(CheckpointError, match="header declares"):
        read_checkpoint_header(huge)
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="too short"):
        read_checkpoint_header(short)
    foreign = tmp_path / "foreign.safetensors"
    header = b'{"__metadata__": {"format": "other"}}'
    foreign.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(CheckpointError, match="not a gccs-checkpoint"):
        read_checkpoint_header(foreign)


def test_validators_name_the_value_and_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"norm='l3' is unknown; allowed: linf, l2\."):
        check_choice("norm", "l3", ("linf", "l2"))
    with pytest.raises(ValueError, match=r"norm=\['linf'\] is unknown"):  # unhashable: refused, not a TypeError
        check_choice("norm", ["linf"], ("linf", "l2"))
    with pytest.raises(ValueError, match=r"steps=True is invalid: it must be an integer >= 1\."):
        check_int("steps", True, 1)
    with pytest.raises(ValueError, match=r"seed=5 is invalid: it must be an integer from 0 to 4\."):
        check_int("seed", 5, 0, 4)
    for bad in (float("nan"), float("inf"), 10**400, -1e-9, "0.1"):
        with pytest.raises(ValueError, match=r"eps=.* is invalid: it must be a finite number >= 0"):
            check_number("eps", bad, 0.0)
    assert check_number("eps", 1, 0.0) == 1.0 and isinstance(check_number("eps", 1, 0.0), float)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.9"):
        check_labels(torch.tensor([0, 10]), 2, 10)
    with pytest.raises(ValueError, match="integer class indices"):
        check_labels(torch.tensor([0.0, 1.0]), 2, 10)
    assert check_labels(torch.tensor([3, 4], dtype=torch.int32), 2, 10).dtype == torch.int64
