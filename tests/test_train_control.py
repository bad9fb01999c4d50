"""Steering a run: a stop request from another thread ends it cleanly at an epoch boundary with a usable
checkpoint, and a finished or stopped run continues for more epochs from that checkpoint."""

from __future__ import annotations

import threading

import pytest
import torch

from gccs_core import StopRequest, TrainConfig, load_model, train
from gccs_core.checkpoint import TRAINING_FILE
from gccs_core.files import read_checkpoint_header
from gccs_core.train import Callback, resume_config

CFG = dict(dataset="digits", loss="gccs", batch_size=128, seed=3, device="cpu")


class AskAfterSteps(Callback):
    """Sets the stop event from another thread after ``n`` steps (as the app's Stop button does)."""

    def __init__(self, stop: StopRequest, n: int) -> None:
        self.stop, self.n, self.seen = stop, n, 0

    def on_step(self, info):
        self.seen += 1
        if self.seen == self.n:
            t = threading.Thread(target=self.stop.request)
            t.start()
            t.join()


def test_a_stop_request_ends_the_run_after_the_current_epoch_with_a_usable_checkpoint(tmp_path):
    stop = StopRequest()
    res = train(TrainConfig(epochs=6, **CFG), [AskAfterSteps(stop, 3), stop], tmp_path / "run")
    assert res.stopped_early and len(res.history) == 1  # asked in epoch 1 (12 steps): epoch 1 is finished
    kind, meta = read_checkpoint_header(tmp_path / "run" / TRAINING_FILE)
    assert kind == "training" and meta["epoch"] == 1 and meta["complete"] is False
    model = load_model(tmp_path / "run")
    from gccs_core import load_dataset

    test = load_dataset("digits", "test")
    acc = float((model(test.x).argmax(1) == test.y).float().mean())
    assert acc == pytest.approx(res.history[-1]["test_accuracy"], abs=1e-6) and acc > 0.5


def test_continue_a_finished_run_for_more_epochs(tmp_path):
    first = train(TrainConfig(epochs=2, **CFG), out_dir=tmp_path / "run")
    more = train(TrainConfig(device="cpu"), out_dir=tmp_path / "run", resume=True, epochs=4)
    assert [h["epoch"] for h in more.history] == [1, 2, 3, 4]
    assert more.history[:2] == first.history
    assert more.config.epochs == 4 and read_checkpoint_header(tmp_path / "run" / TRAINING_FILE)[1]["complete"] is True
    assert not all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), more.model.state_dict().values()))


def test_continue_a_stopped_run_to_its_planned_length_is_an_exact_resume(tmp_path):
    cfg = TrainConfig(epochs=3, **CFG)
    full = train(cfg).model
    stop = StopRequest()
    stop.request()  # asked before the start: stops after the first epoch
    assert train(cfg, [stop], tmp_path / "run").stopped_early
    resumed = train(TrainConfig(device="cpu"), out_dir=tmp_path / "run", resume=True, epochs=3)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_bad_continue_requests_name_the_value(tmp_path):
    train(TrainConfig(epochs=2, **CFG), out_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="epochs=1 is fewer than the 2 epochs already done"):
        resume_config(TrainConfig(device="cpu"), tmp_path / "run", 1)
    with pytest.raises(ValueError, match="resume=True only"):
        train(TrainConfig(epochs=1, **CFG), epochs=3)
    with pytest.raises(ValueError, match="epochs"):
        train(TrainConfig(device="cpu"), out_dir=tmp_path / "run", resume=True, epochs=0)
