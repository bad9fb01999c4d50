import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save as st_save

from gccs_core import CheckpointError, load_metadata, load_model, save_model
from gccs_core.checkpoint import load_model_bytes
from gccs_core.models import ModelSpec, build_model


def _model(loss="gccs"):
    torch.manual_seed(0)
    spec = ModelSpec("mlp", (1, 8, 8), 10, 16, loss, {}, (0.3,), (0.38,))
    return build_model(spec).eval()


@pytest.mark.parametrize("loss", ["gccs", "ce", "mmc", "center"])
def test_round_trip_rebuilds_the_same_model(tmp_path, loss):
    model = _model(loss)
    path = save_model(model, tmp_path / "m.safetensors", {"dataset": "digits", "metrics": {"test_accuracy": 0.5}})
    loaded, meta = load_model(path, with_metadata=True)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    assert meta["dataset"] == "digits" and meta["metrics"]["test_accuracy"] == 0.5
    assert meta["spec"]["loss"] == loss and "library_version" in meta
    assert load_metadata(path)["spec"] == meta["spec"]


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    model = _model()
    save_model(model, tmp_path / "m.safetensors")
    save_model(model, tmp_path / "m.safetensors")  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_run_folder_is_accepted(tmp_path):
    save_model(_model(), tmp_path / "model.safetensors")
    assert isinstance(load_model(tmp_path), torch.nn.Module)


def _good_bytes():
    model = _model()
    meta = {"format": "gccs-checkpoint", "format_version": "1", "kind": "model",
            "metadata": json.dumps({"spec": model.spec.to_dict()})}
    return model, meta


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("cut", [0, 4, 8, 100, -10])
def test_truncated_file_is_a_clear_error(tmp_path, cut):
    path = save_model(_model(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError):
        load_model(path)


def test_foreign_and_hostile_files_are_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "PWNED"), "w"))

    pkl = tmp_path / "evil.safetensors"
    pkl.write_bytes(pickle.dumps({"state_dict": Boom()}))
    with pytest.raises(CheckpointError):
        load_model(pkl)
    assert not (tmp_path / "PWNED").exists()
    # a valid safetensors file that is not ours
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(st_save({"w": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match="not a gccs-checkpoint"):
        load_model(plain)
    # a header that lies about its size
    liar = tmp_path / "liar.safetensors"
    liar.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(CheckpointError, match="header declares"):
        load_model(liar)


def test_wrong_shapes_nan_weights_and_bad_metadata_are_refused():
    model, header = _good_bytes()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bad_shape = dict(state)
    bad_shape["encoder.1.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="encoder.1.weight"):
        load_model_bytes(st_save(bad_shape, metadata=header))
    nan = dict(state)
    nan["encoder.1.weight"] = torch.full_like(state["encoder.1.weight"], float("nan"))
    with pytest.raises(CheckpointError, match="NaN"):
        load_model_bytes(st_save(nan, metadata=header))
    missing = dict(state)
    missing.pop("encoder.1.weight")
    with pytest.raises(CheckpointError, match="missing"):
        load_model_bytes(st_save(missing, metadata=header))
    unknown_loss = dict(header, metadata=json.dumps({"spec": {**model.spec.to_dict(), "loss": "magic"}}))
    with pytest.raises(CheckpointError, match="loss='magic' is unknown"):
        load_model_bytes(st_save(state, metadata=unknown_loss))
    wrong_type = dict(header, metadata=json.dumps({"spec": {**model.spec.to_dict(), "latent_dim": "16"}}))
    with pytest.raises(CheckpointError, match="latent_dim"):
        load_model_bytes(st_save(state, metadata=wrong_type))
    no_spec = dict(header, metadata=json.dumps({}))
    with pytest.raises(CheckpointError, match="no 'spec'"):
        load_model_bytes(st_save(state, metadata=no_spec))
