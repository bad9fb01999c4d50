"""TensorBoardCallback: event files that TensorBoard's own reader opens, with the run's numbers in them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gccs_core.data import load_dataset
from gccs_core.train import TrainConfig, train


def test_missing_tensorboard_is_one_line_naming_the_install(tmp_path):
    code = ("import sys; sys.modules['tensorboard'] = None\n"  # what Python does when the package is absent
            "from gccs_core.tensorboard_log import TensorBoardCallback\n"
            f"try:\n    TensorBoardCallback({str(tmp_path / 'tb')!r})\n"
            "except ValueError as err:\n    print(type(err).__name__, '|', err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout.strip()
    assert out.startswith("TensorBoardUnavailable |") and "pip install tensorboard" in out and "\n" not in out
    assert not (tmp_path / "tb").exists()


def test_run_is_logged_and_read_back_by_tensorboards_event_reader(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard (optional extra) is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gccs_core.tensorboard_log import TensorBoardCallback

    probe = load_dataset("digits", "test", limit=100)
    cb = TensorBoardCallback(tmp_path / "tb", probe=(probe.x, probe.y), class_names=probe.class_names, embed_every=2)
    config = TrainConfig(dataset="digits", loss="gccs", epochs=3, batch_size=128, seed=0, device="cpu")
    result = train(config, [cb])
    cb.close()

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    steps_per_epoch = -(-1437 // 128)
    assert len(acc.Scalars("train/loss")) == 3 * steps_per_epoch
    assert [e.step for e in acc.Scalars("epoch/test_accuracy")] == [1, 2, 3]
    assert np.allclose([e.value for e in acc.Scalars("epoch/test_accuracy")],
                       [h["test_accuracy"] for h in result.history], atol=1e-6)
    assert np.allclose([e.value for e in acc.Scalars("epoch/train_loss")], [h["train_loss"] for h in result.history], atol=1e-5)
    lrs = [e.value for e in acc.Scalars("train/lr")]
    assert max(lrs) == pytest.approx(config.lr, rel=1e-5) and lrs[-1] < lrs[len(lrs) // 2]  # warm-up then cosine
    z = result.model.embed(probe.x).detach()
    terms = result.model.head.compute_terms(z, probe.y)
    for name, value in terms.items():  # the probe's loss terms after the last epoch
        assert f"loss_terms/{name}" in scalars
        assert acc.Scalars(f"loss_terms/{name}")[-1].value == pytest.approx(float(value), rel=1e-4, abs=1e-5)

    # the latent snapshots, in the Projector's layout (epochs 2 and the last one, 3)
    config_text = (tmp_path / "tb" / "projector_config.pbtxt").read_text()
    assert config_text.count("embeddings {") == 2
    tensors = sorted((tmp_path / "tb").glob("*/latent/tensors.tsv"))
    assert [p.parent.parent.name for p in tensors] == ["00002", "00003"]
    last = np.loadtxt(tensors[-1], delimiter="\t")
    assert last.shape == (100, result.model.latent_dim) and np.allclose(last, z.numpy(), atol=1e-4)
    meta = (tensors[-1].parent / "metadata.tsv").read_text().splitlines()
    assert meta[0] == "label\tclass" and meta[1] == f"{int(probe.y[0])}\t{probe.class_names[int(probe.y[0])]}"
    assert (tensors[-1].parent / "sprite.png").exists()


def test_bad_arguments_are_clear(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard (optional extra) is not installed")
    from gccs_core.tensorboard_log import TensorBoardCallback

    with pytest.raises(ValueError, match="embed_every=0 is invalid"):
        TensorBoardCallback(tmp_path, embed_every=0)
    with pytest.raises(ValueError, match="probe must be"):
        TensorBoardCallback(tmp_path, probe=(np.zeros(3), np.zeros(3)))
    assert not list(Path(tmp_path).glob("events*"))
