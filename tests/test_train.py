import math

import pytest
import torch

from gccs_core import TrainConfig, TrainingDiverged, load_model, train
from gccs_core.checkpoint import MODEL_FILE, TRAINING_FILE
from gccs_core.train import Callback, lr_at


@pytest.mark.parametrize("loss", ["gccs", "ce", "mmc", "center"])
def test_training_on_real_digits_reaches_97_percent(loss, tmp_path):
    result = train(TrainConfig(dataset="digits", loss=loss, epochs=15, seed=0, device="cpu"), out_dir=tmp_path)
    assert result.metrics["test_accuracy"] >= 0.97, result.history
    reloaded = load_model(tmp_path)
    from gccs_core import load_dataset
    from gccs_core.train import accuracy

    assert accuracy(reloaded, load_dataset("digits", "test"), torch.device("cpu")) == pytest.approx(
        result.metrics["test_accuracy"])


def test_training_is_deterministic_for_a_seed():
    cfg = TrainConfig(dataset="digits", loss="gccs", epochs=2, seed=3, device="cpu")
    a, b = train(cfg).model, train(cfg).model
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(dataset="digits", loss="gccs", epochs=4, seed=1, device="cpu")
    full = train(cfg, out_dir=tmp_path / "full").model

    class StopAfterTwo(Callback):
        def on_epoch(self, info, model):
            return info.epoch == 1

    part = train(cfg, [StopAfterTwo()], out_dir=tmp_path / "part")
    assert part.stopped_early and len(part.history) == 2
    resumed = train(TrainConfig(device="cpu"), out_dir=tmp_path / "part", resume=True)
    assert len(resumed.history) == 4
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert resumed.history[-1]["test_accuracy"] == pytest.approx(train(cfg).history[-1]["test_accuracy"])


def test_callbacks_see_every_step_and_epoch():
    seen = {"steps": 0, "epochs": []}

    class Count(Callback):
        def on_step(self, info):
            seen["steps"] += 1
            assert math.isfinite(info.loss) and 0 <= info.accuracy <= 1 and info.elapsed_s >= 0

        def on_epoch(self, info, model):
            seen["epochs"].append(info.test_accuracy)

    train(TrainConfig(dataset="digits", loss="ce", epochs=2, batch_size=256, device="cpu"), [Count()])
    assert seen["steps"] == 2 * math.ceil(1437 / 256) and len(seen["epochs"]) == 2


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path):
    class Poison(Callback):
        def on_epoch(self, info, model):
            if info.epoch == 0:
                with torch.no_grad():
                    for p in model.encoder.parameters():
                        p.fill_(float("nan"))

    cfg = TrainConfig(dataset="digits", loss="gccs", epochs=3, device="cpu")
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2"):
        train(cfg, [Poison()], out_dir=tmp_path)
    good = load_model(tmp_path / MODEL_FILE)  # saved after epoch 1, before the poison
    assert all(torch.isfinite(p).all() for p in good.parameters())
    assert (tmp_path / TRAINING_FILE).exists()


def test_adversarial_training_keeps_accuracy_and_buys_robustness(digits_ce_model):
    """PGD-3 training at eps 0.1 keeps clean accuracy and beats the plain model under PGD-10 at that eps
    (about 0.8 against 0.45 robust accuracy on the 360 test digits)."""
    from gccs_core import load_dataset
    from gccs_core.attacks import run_attack

    cfg = TrainConfig(dataset="digits", loss="ce", epochs=6, adv_train=True, adv_eps=0.1, adv_steps=3, device="cpu")
    result = train(cfg)
    assert result.metrics["test_accuracy"] > 0.85
    test = load_dataset("digits", "test")
    robust = {name: float((~run_attack(m, test.x, test.y, "pgd", eps=0.1, steps=10, objective="margin").success).float().mean())
              for name, m in (("adversarial", result.model), ("plain", digits_ce_model))}
    assert robust["adversarial"] > robust["plain"] + 0.2, robust


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    cfg = TrainConfig(dataset="digits", loss="ce", epochs=1, device="cpu")
    train(cfg, out_dir=tmp_path)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, out_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train(cfg, out_dir=tmp_path / "empty", resume=True)


def test_lr_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 100, 10, 1.0, "cosine") for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.01


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dataset": "imagenet"}, "dataset='imagenet' is unknown"),
        ({"loss": "hinge"}, "loss='hinge' is unknown; allowed: gccs, ce, mmc, center"),
        ({"epochs": 0}, "epochs=0 is invalid"),
        ({"lr": -1.0}, "lr=-1.0 is invalid"),
        ({"latent_dim": 4}, "latent_dim=4 is too small.*>= 9"),
        ({"loss_params": {"sigma": 1.0}, "loss": "ce"}, "does not take sigma"),
        ({"optimizer": "lion"}, "optimizer='lion' is unknown; allowed: adamw, adam, sgd"),
        ({"device": "tpu"}, "device='tpu' is unknown"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_bad_loss_parameter_value_is_a_clear_error():
    with pytest.raises(ValueError, match="sigma=0.0 is invalid"):
        train(TrainConfig(dataset="digits", loss="gccs", loss_params={"sigma": 0.0}, epochs=1, device="cpu"))


def test_unknown_config_key_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown training option\\(s\\) epoch"):
        TrainConfig.from_dict({"epoch": 3})
