"""Bad parameters, property-based (hypothesis): every invalid value of the public Python API and of the
command line is refused with a ``ValueError`` (exit code 2 and one line on the command line) whose message
names the parameter and says what is allowed. Valid values drawn the same way are accepted, so the
refusals are not blanket.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gccs_core import TrainConfig, load_dataset
from gccs_core.attacks import ATTACKS, NORMS, OBJECTIVES, run_attack
from gccs_core.checkpoint import save_model
from gccs_core.cli import main as cli_main
from gccs_core.data import DATASETS
from gccs_core.evaluate import SUITE_LABELS, evaluate_robustness, parse_eps_list
from gccs_core.losses import LOSSES, build_loss, loss_parameters
from gccs_core.models import ENCODERS, ModelSpec, build_model
from gccs_core.train import DEVICES, OPTIMIZERS, SCHEDULES

ROOT = Path(__file__).resolve().parent.parent
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- strategies of invalid values ---------------------------------------------------------------------

junk = st.one_of(st.none(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
                 st.binary(max_size=3), st.just(object()))
"""Values of no sensible type for any parameter."""


def bad_choice(allowed: tuple[str, ...] | list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=12).filter(lambda s: s not in allowed), st.integers(), st.booleans(),
                     st.sampled_from([a.upper() + "x" for a in allowed]), junk)


def bad_int(minimum: int, maximum: int | None = None) -> st.SearchStrategy[Any]:
    too_big = [st.integers(min_value=maximum + 1)] if maximum is not None else []
    return st.one_of(st.integers(max_value=minimum - 1), *too_big, st.floats(allow_nan=True), st.booleans(),
                     st.text(max_size=4), junk)


def bad_number(minimum: float, open_low: bool = False) -> st.SearchStrategy[Any]:
    below = st.floats(max_value=minimum, exclude_max=not open_low, allow_nan=False)
    return st.one_of(below, st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(10**400)]), st.booleans(),
                     st.text(max_size=4), junk)


def bad_bool() -> st.SearchStrategy[Any]:
    return st.one_of(st.integers(), st.text(max_size=3), st.floats(), junk)


def assert_clear(err: BaseException, *names: str) -> None:
    """The message names the parameter (any of ``names``) and what is allowed."""
    msg = str(err)
    assert any(n in msg for n in names), f"{names} not named in {msg!r}"
    assert any(w in msg for w in ("allowed", "must", "expected", "give", "choose from", "at most", "outside",
                                  "invalid int value", "invalid float value")), msg  # argparse: the type is required


# -- TrainConfig ------------------------------------------------------------------------------------------

TRAIN_INVALID: dict[str, st.SearchStrategy[Any]] = {
    "dataset": bad_choice(tuple(DATASETS)),
    "data_root": st.one_of(st.integers(), st.floats(), st.lists(st.text(max_size=2), max_size=2)),
    "download": bad_bool(),
    "limit_train": bad_int(1).filter(lambda v: v is not None),
    "augment": bad_bool(),
    "encoder": bad_choice(tuple(ENCODERS)).filter(lambda v: v is not None),
    "latent_dim": bad_int(1, 4096),
    "loss": bad_choice(tuple(LOSSES)),
    "loss_params": st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=3), st.integers(),
                             st.dictionaries(st.integers(), st.floats(), min_size=1, max_size=2),
                             st.dictionaries(st.text(max_size=6).filter(lambda k: k not in loss_parameters("gccs")),
                                             st.floats(), min_size=1, max_size=2)),
    "epochs": bad_int(1),
    "batch_size": bad_int(1),
    "optimizer": bad_choice(OPTIMIZERS),
    "lr": bad_number(0.0, open_low=True),
    "weight_decay": bad_number(0.0),
    "schedule": bad_choice(SCHEDULES),
    "warmup_epochs": bad_number(0.0),
    "grad_clip": bad_number(0.0, open_low=True).filter(lambda v: v is not None),
    "adv_train": bad_bool(),
    "adv_eps": bad_number(0.0),
    "adv_steps": bad_int(1),
    "adv_step_size": bad_number(0.0, open_low=True).filter(lambda v: v is not None),
    "adv_objective": bad_choice(OBJECTIVES),
    "seed": bad_int(0, 2**32 - 1),
    "device": bad_choice(DEVICES),
    "amp": bad_choice(("none", "bf16", "fp16")),
    "sync_batchnorm": bad_bool(),
}


def test_every_train_config_field_has_an_invalid_strategy() -> None:
    from dataclasses import fields

    assert {f.name for f in fields(TrainConfig)} == set(TRAIN_INVALID)


@FAST
@given(data=st.data(), field=st.sampled_from(sorted(TRAIN_INVALID)))
def test_train_config_refuses_every_invalid_value(data: st.DataObject, field: str) -> None:
    value = data.draw(TRAIN_INVALID[field], label=field)
    with pytest.raises(ValueError) as info:
        TrainConfig(**{field: value})
    # loss_params with an unknown or badly typed key is refused by naming that key and the allowed ones
    assert_clear(info.value, field, *(value if field == "loss_params" and isinstance(value, dict) else ()))


@FAST
@given(dataset=st.sampled_from(["digits", "mnist5k"]), loss=st.sampled_from(tuple(LOSSES)),
       latent_dim=st.integers(9, 4096), epochs=st.integers(1, 10**6), batch_size=st.integers(1, 10**6),
       lr=st.floats(1e-12, 1e3), seed=st.integers(0, 2**32 - 1), optimizer=st.sampled_from(OPTIMIZERS),
       adv_train=st.booleans(), encoder=st.sampled_from((None, *ENCODERS)))
def test_train_config_accepts_valid_values(dataset: str, loss: str, latent_dim: int, epochs: int, batch_size: int,
                                           lr: float, seed: int, optimizer: str, adv_train: bool, encoder: str | None) -> None:
    cfg = TrainConfig(dataset=dataset, loss=loss, latent_dim=min(latent_dim, 64), epochs=epochs, batch_size=batch_size,
                      lr=lr, seed=seed, optimizer=optimizer, adv_train=adv_train, encoder=encoder, device="cpu")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@FAST
@given(data=st.data(), loss=st.sampled_from(tuple(LOSSES)))
def test_loss_parameters_refuse_invalid_values(data: st.DataObject, loss: str) -> None:
    names = loss_parameters(loss)
    if not names:  # cross-entropy takes none: any name is refused
        name = data.draw(st.text(min_size=1, max_size=6))
        with pytest.raises(ValueError) as info:
            build_loss(loss, 10, 16, **{name: 1.0})
        assert_clear(info.value, name)
        return
    name = data.draw(st.sampled_from(names))
    value = data.draw(st.one_of(bad_number(0.0, open_low=True), st.floats(max_value=-1e-9), st.floats(min_value=1e6)))
    try:
        build_loss(loss, 10, 16, **{name: value})
    except ValueError as err:
        assert_clear(err, name)
    else:  # bounds differ per parameter (lam may be 0, sigma may not); what is accepted is a finite number >= 0
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


@FAST
@given(num_classes=bad_int(2), latent_dim=bad_int(1))
def test_build_loss_refuses_bad_sizes(num_classes: Any, latent_dim: Any) -> None:
    with pytest.raises(ValueError) as info:
        build_loss("gccs", num_classes, 16)
    assert_clear(info.value, "num_classes")
    with pytest.raises(ValueError) as info:
        build_loss("ce", 10, latent_dim)
    assert_clear(info.value, "latent_dim")


# -- attacks and evaluation --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(ModelSpec("mlp", (1, 8, 8), 10, 16, "gccs", {}, (0.3,), (0.38,))).eval()
    return model, torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])


ATTACK_INVALID: dict[str, st.SearchStrategy[Any]] = {
    "attack": bad_choice(ATTACKS),
    "eps": bad_number(0.0),
    "steps": bad_int(1),
    "norm": bad_choice(NORMS),
    "objective": bad_choice(OBJECTIVES),
    "restarts": bad_int(1),
    "step_size": bad_number(0.0, open_low=True).filter(lambda v: v is not None),
    "seed": bad_int(0),
    "target": st.one_of(st.integers(max_value=-1), st.integers(min_value=10), st.floats(), st.text(max_size=3),
                        st.booleans(), st.lists(st.integers(), max_size=2)),
}


@FAST
@given(data=st.data(), field=st.sampled_from(sorted(ATTACK_INVALID)))
def test_run_attack_refuses_every_invalid_value(tiny: Any, data: st.DataObject, field: str) -> None:
    model, x, y = tiny
    value = data.draw(ATTACK_INVALID[field], label=field)
    with pytest.raises(ValueError) as info:
        run_attack(model, x, y, **{"steps": 1, field: value})
    assert_clear(info.value, field)


@FAST
@given(y=st.one_of(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=3, max_size=3).filter(lambda v: min(v) < 0 or max(v) > 9),
                   st.lists(st.integers(0, 9), max_size=5).filter(lambda v: len(v) != 3)))
def test_run_attack_refuses_bad_labels(tiny: Any, y: list[int]) -> None:
    model, x, _ = tiny
    with pytest.raises(ValueError) as info:
        run_attack(model, x, torch.tensor(y, dtype=torch.long), steps=1)
    assert_clear(info.value, "labels")


EVAL_INVALID: dict[str, st.SearchStrategy[Any]] = {
    "norm": bad_choice(NORMS),
    "steps": bad_int(1),
    "restarts": bad_int(1),
    "square_queries": bad_int(1),
    "min_l2_n": bad_int(1),
    "seed": bad_int(0),
    "batch_size": bad_int(1),
    "min_l2": bad_choice(("deepfool", "cw", "both")).filter(lambda v: v is not None),
    "attacks": st.lists(bad_choice(SUITE_LABELS).filter(lambda v: isinstance(v, str)), min_size=1, max_size=2),
    "eps_list": st.one_of(st.lists(bad_number(0.0).filter(lambda v: not isinstance(v, (str, bool))), min_size=1,
                                   max_size=2), st.just([])),
}


@FAST
@given(data=st.data(), field=st.sampled_from(sorted(EVAL_INVALID)))
def test_evaluate_robustness_refuses_every_invalid_value(tiny: Any, data: st.DataObject, field: str) -> None:
    model, x, y = tiny
    value = data.draw(EVAL_INVALID[field], label=field)
    kwargs: dict[str, Any] = {"eps_list": [0.1], "steps": 1, "min_l2": None, "attacks": ["fgsm"], field: value}
    with pytest.raises(ValueError) as info:
        evaluate_robustness(model, x, y, **kwargs)
    assert_clear(info.value, "eps" if field == "eps_list" else field, "attack")


@FAST
@given(text=st.text(max_size=10))
def test_eps_list_text_is_parsed_or_refused_clearly(text: str) -> None:
    try:
        out = parse_eps_list(text)
    except ValueError as err:
        assert_clear(err, "eps")
    else:
        assert out == sorted(set(out)) and all(math.isfinite(v) and v >= 0 for v in out)


@FAST
@given(name=bad_choice(tuple(DATASETS)), split=bad_choice(("train", "test")), limit=bad_int(1).filter(lambda v: v is not None))
def test_load_dataset_refuses_invalid_values(name: Any, split: Any, limit: Any) -> None:
    with pytest.raises(ValueError) as info:
        load_dataset(name, "test")
    assert_clear(info.value, "dataset")
    with pytest.raises(ValueError) as info:
        load_dataset("digits", split)
    assert_clear(info.value, "split")
    with pytest.raises(ValueError) as info:
        load_dataset("digits", "test", limit=limit)
    assert_clear(info.value, "limit")


# -- the command line ---------------------------------------------------------------------------------------


def _text(strategy: st.SearchStrategy[Any], valid: Any = None) -> st.SearchStrategy[str]:
    """Command-line text of invalid values; ``valid(text)`` drops texts argparse would turn into a valid value
    (``int(" 5")`` is 5)."""
    out = strategy.filter(lambda v: isinstance(v, (int, float, str)) and not isinstance(v, bool)).map(str)
    return out.filter(lambda s: not valid(s)) if valid else out


def _int_ok(minimum: int, maximum: int = 2**63) -> Any:
    def ok(s: str) -> bool:
        try:
            return minimum <= int(s) <= maximum
        except ValueError:
            return False

    return ok


def _float_ok(minimum: float, open_low: bool = False) -> Any:
    def ok(s: str) -> bool:
        try:
            v = float(s)
        except ValueError:
            return False
        return math.isfinite(v) and (v > minimum if open_low else v >= minimum)

    return ok


CLI_TRAIN_INVALID: dict[str, st.SearchStrategy[str]] = {
    "--dataset": _text(bad_choice(tuple(DATASETS))),
    "--loss": _text(bad_choice(tuple(LOSSES))),
    "--encoder": _text(bad_choice(tuple(ENCODERS))),
    "--latent-dim": _text(bad_int(1, 4096), _int_ok(1, 4096)),
    "--epochs": _text(bad_int(1), _int_ok(1)),
    "--batch-size": _text(bad_int(1), _int_ok(1)),
    "--optimizer": _text(bad_choice(OPTIMIZERS)),
    "--lr": _text(bad_number(0.0, open_low=True), _float_ok(0.0, open_low=True)),
    "--weight-decay": _text(bad_number(0.0), _float_ok(0.0)),
    "--schedule": _text(bad_choice(SCHEDULES)),
    "--warmup-epochs": _text(bad_number(0.0), _float_ok(0.0)),
    "--sigma": _text(bad_number(0.0, open_low=True), _float_ok(0.0, open_low=True)),
    "--radius": _text(bad_number(0.0, open_low=True), _float_ok(0.0, open_low=True)),
    "--adv-eps": _text(bad_number(0.0), _float_ok(0.0)),
    "--adv-steps": _text(bad_int(1), _int_ok(1)),
    "--adv-step-size": _text(bad_number(0.0, open_low=True), _float_ok(0.0, open_low=True)),
    "--adv-objective": _text(bad_choice(("ce", "margin"))),
    "--seed": _text(bad_int(0, 2**32 - 1), _int_ok(0, 2**32 - 1)),
    "--device": _text(bad_choice(DEVICES)),
    "--limit-train": _text(bad_int(1), _int_ok(1)),
}


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = cli_main(argv)
    except SystemExit as stop:  # argparse's own errors
        code = int(stop.code or 0)
    return code, capsys.readouterr().err


@FAST
@given(data=st.data(), flag=st.sampled_from(sorted(CLI_TRAIN_INVALID)))
def test_cli_train_refuses_every_invalid_value_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           data: st.DataObject, flag: str) -> None:
    value = data.draw(CLI_TRAIN_INVALID[flag], label=flag)
    code, err = _run_cli(["train", "--out", str(tmp_path / "never"), f"{flag}={value}"], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, (flag, value, code, err)
    assert_clear(Exception(lines[0]), flag, flag[2:].replace("-", "_"), "invalid choice", "invalid int value",
                 "invalid float value")
    assert not (tmp_path / "never").exists(), "training started"


CLI_EVAL_INVALID: dict[str, st.SearchStrategy[str]] = {
    "--eps": st.one_of(st.just(""), st.just(","), st.sampled_from(["-0.1", "nan", "inf", "a,b", "0.1;0.2"])),
    "--norm": _text(bad_choice(NORMS)),
    "--n": _text(bad_int(1), _int_ok(1)),
    "--split": _text(bad_choice(("train", "test"))),
    "--steps": _text(bad_int(1), _int_ok(1)),
    "--restarts": _text(bad_int(1), _int_ok(1)),
    "--square-queries": _text(bad_int(1), _int_ok(1)),
    "--attacks": _text(bad_choice(SUITE_LABELS)).filter(lambda s: "," not in s and s.strip()),
    "--min-l2": _text(bad_choice(("deepfool", "cw", "both", "none"))),
    "--min-l2-n": _text(bad_int(1), _int_ok(1)),
    "--seed": _text(bad_int(0), _int_ok(0)),
    "--batch-size": _text(bad_int(1), _int_ok(1)),
    "--threads": _text(bad_int(1), _int_ok(1)),
    "--dataset": _text(bad_choice(tuple(DATASETS))).filter(bool),  # "" means the checkpoint's own dataset
}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model(ModelSpec("mlp", (1, 8, 8), 10, 16, "gccs", {}, (0.3,), (0.38,))).eval()
    return save_model(model, tmp_path_factory.mktemp("m") / "m.safetensors", {"dataset": "digits"})


@FAST
@given(data=st.data(), flag=st.sampled_from(sorted(CLI_EVAL_INVALID)))
def test_cli_evaluate_refuses_every_invalid_value_in_one_line(model_file: Path, capsys: pytest.CaptureFixture[str],
                                                              data: st.DataObject, flag: str) -> None:
    value = data.draw(CLI_EVAL_INVALID[flag], label=flag)
    code, err = _run_cli(["evaluate", "--checkpoint", str(model_file), "--quiet", "--n", "5", "--steps", "1",
                          "--min-l2", "none", "--attacks", "fgsm", f"{flag}={value}"], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, (flag, value, code, err)
    assert_clear(Exception(lines[0]), flag, flag[2:].replace("-", "_"), "eps", "attack", "invalid int value")


def test_the_real_command_line_gives_the_same_one_line_error(tmp_path: Path) -> None:
    """One real process, to show ``python -m gccs_core`` behaves like ``main()`` above."""
    r = subprocess.run([sys.executable, "-m", "gccs_core", "train", "--out", str(tmp_path / "x"), "--lr=nan"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "lr=nan is invalid" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()
