"""Numerical faults: NaN or inf injected into a training batch or into the loss stops training cleanly
(``TrainingDiverged``) with the last good checkpoint kept intact, and ``--resume`` then finishes the run
bit-equal to an uninterrupted one; a real divergence on the command line is one line and exit code 1;
attacks and evaluations of a model that outputs NaN report the problem instead of accuracies.

The faults are injected with ordinary torch hooks from a training ``Callback`` (the public API): a forward
pre-hook on the model's input normalisation puts NaN/inf into the batch, a forward hook on the loss head
makes the loss NaN/inf. Nothing of the library is replaced.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from gccs_core import TrainConfig, load_dataset, load_model, train
from gccs_core.attacks import run_attack
from gccs_core.checkpoint import MODEL_FILE, TRAINING_FILE, read_checkpoint_bytes, save_model
from gccs_core.cli import main as cli_main
from gccs_core.evaluate import evaluate_robustness
from gccs_core.models import ModelSpec, build_model
from gccs_core.train import Callback, EpochInfo, TrainingDiverged

EPOCHS, FAULT_AFTER = 4, 2
"""Train 4 epochs; the fault hits the first step after epoch 2 was saved."""


def _config(loss: str) -> TrainConfig:
    return TrainConfig(dataset="digits", loss=loss, epochs=EPOCHS, limit_train=96, batch_size=32, seed=1, device="cpu")


class InjectFault(Callback):
    """After epoch ``after`` is saved, make every later training batch (``where="batch"``) or loss
    (``where="loss"``) NaN or inf, using torch hooks on the live model."""

    def __init__(self, after: int, where: str, value: float) -> None:
        self.after, self.where, self.value = after, where, value
        self.saved_state: dict[str, torch.Tensor] | None = None

    def on_epoch(self, info: EpochInfo, model: Any) -> None:
        if info.epoch + 1 != self.after:
            return
        self.saved_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        value = self.value
        if self.where == "batch":
            def poison_batch(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
                x = args[0].clone()
                x[0, 0, 0, 0] = value  # one pixel of one example
                return (x,)

            model.normalize.register_forward_pre_hook(poison_batch)
        else:
            model.head.register_forward_hook(lambda module, args, out: out + value)  # the head's forward is the loss


_REFERENCE: dict[str, dict[str, torch.Tensor]] = {}


def _reference(loss: str, tmp: Path) -> dict[str, torch.Tensor]:
    """Tensors (model + optimizer) of an uninterrupted run's final training checkpoint."""
    if loss not in _REFERENCE:
        train(_config(loss), out_dir=tmp / f"reference-{loss}")
        _REFERENCE[loss] = read_checkpoint_bytes((tmp / f"reference-{loss}" / TRAINING_FILE).read_bytes())[2]
    return _REFERENCE[loss]


@pytest.mark.parametrize("loss", ["gccs", "ce", "mmc", "center"])
@pytest.mark.parametrize("where,value", [("batch", math.nan), ("batch", math.inf), ("loss", math.nan), ("loss", math.inf)])
def test_fault_stops_training_keeps_the_last_good_checkpoint_and_resume_loses_nothing(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, loss: str, where: str, value: float
) -> None:
    out = tmp_path / "run"
    fault = InjectFault(FAULT_AFTER, where, value)
    with pytest.raises(TrainingDiverged, match=rf"loss became (nan|inf) at epoch {FAULT_AFTER + 1}, step 1 .*last good "
                                               rf"checkpoint is kept in {out}"):
        train(_config(loss), callbacks=[fault], out_dir=out)

    # the last good checkpoint: epoch 2, loadable, finite, exactly the weights the model had after epoch 2
    kind, meta, tensors = read_checkpoint_bytes((out / TRAINING_FILE).read_bytes())
    assert kind == "training" and meta["epoch"] == FAULT_AFTER and len(meta["history"]) == FAULT_AFTER
    assert fault.saved_state is not None
    for key, want in fault.saved_state.items():
        assert torch.equal(tensors[f"model/{key}"], want), key
    model = load_model(out / MODEL_FILE)  # refuses NaN/inf weights, so this also proves they are finite
    assert all(torch.equal(model.state_dict()[k], v) for k, v in fault.saved_state.items())
    assert sorted(p.name for p in out.iterdir()) == sorted([MODEL_FILE, TRAINING_FILE])  # nothing half-written

    # resuming (the fault was transient) loses nothing: bit-equal to an uninterrupted run, optimizer included
    result = train(_config(loss), out_dir=out, resume=True)
    assert len(result.history) == EPOCHS and result.metrics["epochs_done"] == EPOCHS
    got = read_checkpoint_bytes((out / TRAINING_FILE).read_bytes())[2]
    want_all = _reference(loss, tmp_path_factory.mktemp("ref"))
    assert got.keys() == want_all.keys()
    assert all(torch.equal(got[k], want_all[k]) for k in want_all), [k for k in want_all if not torch.equal(got[k], want_all[k])]


def test_real_divergence_on_the_command_line_is_one_line_and_exit_code_1(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A learning rate of 1e30 really blows the weights up in the first epoch; the CLI stops with one line and exit
    code 1, and writes no checkpoint (there is no good epoch to keep)."""
    out = tmp_path / "run"
    code = cli_main(["train", "--dataset", "digits", "--epochs", "2", "--limit-train", "128", "--batch-size", "32",
                     "--lr", "1e30", "--optimizer", "sgd", "--warmup-epochs", "0", "--device", "cpu", "--quiet",
                     "--out", str(out)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1, err
    assert "training stopped: loss became" in lines[0] and "Lower the learning rate" in lines[0]
    assert not out.exists() or not any(out.iterdir())


# -- attacks and evaluation on a model that outputs NaN ---------------------------------------------------


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec("mlp", (1, 8, 8), 10, 16, "gccs", {}, (0.3,), (0.38,))).eval()


def _nan_for_lit_corner(model: torch.nn.Module) -> torch.nn.Module:
    """Finite weights (a checkpoint accepts them) that overflow to inf/NaN for inputs whose top-left pixel is lit
    (it is dark in every digit, so clean digits are fine)."""
    with torch.no_grad():
        model.encoder[1].weight[:, 0] = 3e38
    return model


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_dataset("digits", "test", limit=20)


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "deepfool", "square"])
def test_attack_on_a_nan_model_reports_the_problem(digits: Any, attack: str) -> None:
    model = _model()
    with torch.no_grad():
        model.encoder[-1].bias[3] = math.nan
    with pytest.raises(ValueError, match="outputs NaN or inf scores for 20 of 20 inputs.*meaningless"):
        run_attack(model, digits.x, digits.y, attack=attack, eps=0.1, steps=2)
    x = digits.x.clone()
    x[[4, 7], :, 0, 0] = 1.0
    with pytest.raises(ValueError, match="for 2 of 20 inputs \\(first: example 4\\)"):
        run_attack(_nan_for_lit_corner(_model()), x, digits.y, attack=attack, eps=0.1, steps=2)


def test_evaluation_of_a_nan_model_reports_the_problem_instead_of_accuracies(digits: Any, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    model = _model()
    with torch.no_grad():
        model.encoder[-1].weight[0, 0] = math.inf
    with pytest.raises(ValueError, match="outputs NaN or inf scores for 20 of 20 inputs"):
        evaluate_robustness(model, digits.x, digits.y, [0.1], steps=2, min_l2=None, attacks=["fgsm"])
    # through the command line: a finite-weight checkpoint whose outputs overflow; no accuracy table is printed
    path = save_model(_nan_for_lit_corner(_model()), tmp_path / "overflow.safetensors", {"dataset": "digits"})
    with torch.no_grad():
        huge = load_model(path)
        huge.encoder[-1].weight.mul_(1e30)  # now every input overflows
    save_model(huge, path, {"dataset": "digits"})
    code = cli_main(["evaluate", "--checkpoint", str(path), "--n", "10", "--steps", "1", "--min-l2", "none",
                     "--attacks", "fgsm", "--quiet"])
    captured = capsys.readouterr()
    assert code == 2 and "NaN or inf scores" in captured.err and "meaningless" in captured.err
    assert "accuracy" not in captured.out
