"""The model registry: entries from checkpoint headers (no torch), the one key format, the datasets on offer."""

from __future__ import annotations

from pathlib import Path

import pytest
from apptest import ROOT

from app import registry
from gccs_core.data import torchvision_files


def test_model_keys_have_one_format():
    assert registry.model_key("pretrained", "digits-gccs") == "pretrained:digits-gccs"
    assert registry.model_key("user", "run-1", "abc123") == "user:abc123/run-1"
    assert registry.model_key("upload", "0123456789ab") == "upload:0123456789ab"
    assert registry.user_model_key(Path("/m/abc123/run-1")) == "user:abc123/run-1"
    with pytest.raises(ValueError, match="source='hub' is unknown; allowed: pretrained, user, upload"):
        registry.model_key("hub", "x")


def test_entries_come_from_the_checkpoint_headers(tmp_path):
    ckpts = sorted((ROOT / "pretrained").glob("*.safetensors"))
    if not ckpts:
        pytest.skip("no pretrained models in this checkout")
    entries = registry._scan_models.__wrapped__(str(ROOT / "pretrained"), str(tmp_path))
    by_name = {e.name: e for e in entries}
    assert set(by_name) == {p.stem for p in ckpts}
    assert by_name["digits-gccs"].loss == "gccs" and by_name["digits-gccs"].dataset == "digits"
    assert by_name["digits-ce"].key == "pretrained:digits-ce" and by_name["digits-ce"].label == "digits-ce"
    # a half-written or foreign file is not offered, and does not hide the others
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    (tmp_path / "cut.safetensors").write_bytes(ckpts[0].read_bytes()[:50])
    for src in ckpts[:1]:
        (tmp_path / src.name).write_bytes(src.read_bytes())
    entries = registry._scan_models.__wrapped__(str(tmp_path), str(tmp_path / "none"))
    assert [e.name for e in entries] == [ckpts[0].stem]
    left, right = registry.default_pair(registry._scan_models.__wrapped__(str(ROOT / "pretrained"), str(tmp_path)))
    assert by_name[left.split(":")[1]].loss == "gccs" and by_name[right.split(":")[1]].loss == "ce"


def test_torchvision_datasets_are_offered_once_their_files_are_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("GCCS_DATA", str(tmp_path))
    assert registry.available_datasets() == ["digits", "mnist5k"]
    for path in torchvision_files("fashion-mnist", "test", tmp_path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert registry.available_datasets() == ["digits", "mnist5k", "fashion-mnist"]
