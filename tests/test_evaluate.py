"""Tests of gccs_core.evaluate and the ``evaluate`` CLI on small digits models."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from gccs_core import save_model
from gccs_core.cli import main
from gccs_core.evaluate import (
    REPORT_FORMAT,
    RobustnessReport,
    evaluate_robustness,
    load_report,
    parse_eps_list,
    save_report,
    zero_gradient_fraction,
)

FAST = {"steps": 8, "square_queries": 40, "batch_size": 200}


@pytest.fixture(scope="module")
def ce_report(digits_ce_model, digits_test):
    x, y = digits_test.x[:80], digits_test.y[:80]
    return evaluate_robustness(digits_ce_model, x, y, [0.0, 0.1, 0.3], **FAST)


def test_report_layout_and_invariants(ce_report, digits_ce_model, digits_test):
    d = ce_report.to_dict()
    assert d["format"] == REPORT_FORMAT and d["n"] == 80 and d["norm"] == "linf" and d["seed"] == 0
    assert d["eps"] == [0.0, 0.1, 0.3]
    clean = float((digits_ce_model.predict(digits_test.x[:80]) == digits_test.y[:80]).float().mean())
    assert d["clean_accuracy"] == pytest.approx(clean)
    labels = list(d["attacks"])
    assert labels == ["fgsm", "pgd-ce", "pgd-margin", "apgd-ce", "apgd-dlr", "pgd-margin-x2", "square"]  # no centres: no latent
    for row in d["results"]:
        assert set(labels) - {"square"} <= set(row) and "eps" in row and "worst_case" in row
        for lb in set(labels) - {"square"}:
            assert 0.0 <= row["worst_case"] <= row["white_box_worst_case"] <= row[lb] <= d["clean_accuracy"] + 1e-9
        assert row["pgd-margin-x2"] <= row["pgd-margin"]
        assert row["worst_case"] == pytest.approx(row["white_box_worst_case"] - row["square_only"] / d["n"])
    assert d["results"][0]["worst_case"] == pytest.approx(d["clean_accuracy"])  # eps = 0 reproduces clean accuracy
    worst = [r["worst_case"] for r in d["results"]]
    assert worst == sorted(worst, reverse=True)
    assert worst[-1] <= 0.05  # an undefended model at eps 0.3
    assert d["median_min_l2"] is not None and 0.05 < d["median_min_l2"] < 2.0 and d["min_l2_attack"] == "deepfool"
    assert d["min_l2_n"] == min(100, round(80 * d["clean_accuracy"]))
    assert d["versions"]["adversarial-robustness-toolbox"]
    assert json.loads(json.dumps(d)) == d  # plain JSON


def test_save_load_round_trip(ce_report, tmp_path):
    p = save_report(ce_report, tmp_path / "r.json")
    back = load_report(p)
    assert isinstance(back, RobustnessReport) and back.to_dict() == ce_report.to_dict()
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a robustness report"):
        load_report(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_report(tmp_path / "missing.json")


def test_prototype_model_gets_latent_attack(digits_gccs_model, digits_test):
    rep = evaluate_robustness(digits_gccs_model, digits_test.x[:40], digits_test.y[:40], [0.1], min_l2=None,
                              attacks=["pgd-margin", "pgd-latent"], **FAST)
    assert list(rep.attacks) == ["pgd-margin", "pgd-latent"]
    row = rep.results[0]
    assert row["worst_case"] <= min(row["pgd-margin"], row["pgd-latent"])
    assert rep.median_min_l2 is None


def test_refuses_training_mode_and_restores(digits_ce_model, digits_test):
    model = copy.deepcopy(digits_ce_model)
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        evaluate_robustness(model, digits_test.x[:10], digits_test.y[:10], [0.1])
    assert model.training
    model.eval()
    evaluate_robustness(model, digits_test.x[:10], digits_test.y[:10], [0.1], attacks=["fgsm"], min_l2=None)
    assert not model.training


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"eps_list": [-0.1]}, r"eps=-0\.1 .*>= 0"),
        ({"attacks": ["pgd-ce", "boom"]}, r"unknown attack\(s\) 'boom'; allowed: fgsm"),
        ({"steps": 0}, r"steps=0 .*>= 1"),
        ({"norm": "l3"}, r"norm='l3' is unknown"),
        ({"min_l2": "fab"}, r"min_l2='fab' is unknown"),
    ],
)
def test_bad_input(digits_ce_model, digits_test, kwargs, match):
    args = {"eps_list": [0.1], **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate_robustness(digits_ce_model, digits_test.x[:5], digits_test.y[:5], **args)


def test_parse_eps_list():
    assert parse_eps_list("0.3,0.05, 0.1,0.1") == [0.05, 0.1, 0.3]
    with pytest.raises(ValueError, match="'x' is not a number"):
        parse_eps_list("0.1,x")


class _Saturate(nn.Module):
    """Multiplies the scores: softmax becomes exactly one-hot in float32, so CE gradients vanish."""

    def __init__(self, head: nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = head, factor

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner(z) * self.factor


class _Quantise(nn.Module):
    """Rounds inputs to 1/2 steps: every input gradient is exactly zero (gradient masking)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 2) / 2


def test_zero_gradient_flag_on_saturated_scores(digits_ce_model, digits_test):
    x, y = digits_test.x[:60], digits_test.y[:60]
    assert zero_gradient_fraction(digits_ce_model, x, y) < 0.05
    model = copy.deepcopy(digits_ce_model)
    model.head.head = _Saturate(model.head.head, 1e4)
    assert zero_gradient_fraction(model, x, y) > 0.5
    rep = evaluate_robustness(model, x, y, [0.3], attacks=["pgd-ce", "pgd-margin"], min_l2=None, **FAST)
    assert "zero_gradients" in {f["code"] for f in rep.flags}
    row = rep.results[0]
    assert row["pgd-ce"] > row["pgd-margin"] + 0.3  # CE stalls, the margin attack does not
    assert row["worst_case"] == row["pgd-margin"]


def test_gradient_masking_is_flagged(digits_ce_model, digits_test):
    x, y = digits_test.x[:60], digits_test.y[:60]
    model = copy.deepcopy(digits_ce_model)
    model.normalize = nn.Sequential(_Quantise(), model.normalize)
    model.eval()
    rep = evaluate_robustness(model, x, y, [0.1, 0.3], attacks=["fgsm", "pgd-margin", "square"], min_l2=None,
                              steps=5, square_queries=100, batch_size=200, square_on_all=True)
    codes = {f["code"] for f in rep.flags}
    assert {"gradient_free_beats_white_box", "zero_gradients"} <= codes
    last = rep.results[-1]
    assert last["white_box_worst_case"] > 0.8 and last["square"] < last["pgd-margin"] - 0.5  # white-box attacks are blind
    assert last["square_only"] > 0 and last["worst_case"] <= last["square"]


def test_progress_callback(digits_ce_model, digits_test):
    calls = []
    evaluate_robustness(digits_ce_model, digits_test.x[:10], digits_test.y[:10], [0.1, 0.2], attacks=["fgsm", "pgd-ce"],
                        min_l2=None, steps=2, progress=lambda done, total, label: calls.append((done, total, label)))
    assert [c[0] for c in calls] == list(range(1, 6)) and all(c[1] == 5 for c in calls)
    assert calls[-1][2] == "eps=0.2 pgd-ce"


def test_cli_evaluate_writes_json(digits_ce_model, tmp_path, capsys):
    ckpt = save_model(digits_ce_model, tmp_path / "m.safetensors", {"dataset": "digits"})
    out = tmp_path / "rep.json"
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--eps", "0.1,0.3", "--n", "30", "--steps", "4",
               "--square-queries", "20", "--json", str(out), "--quiet", "--threads", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "clean accuracy" in text and "worst_case" in text and "sanity flags" in text
    d = json.loads(out.read_text())
    assert [r["eps"] for r in d["results"]] == [0.1, 0.3] and d["n"] == 30
    assert len(d["model"]["sha256"]) == 64 and d["model"]["loss"] == "ce"
    assert all(0.0 <= r["worst_case"] <= 1.0 for r in d["results"])


@pytest.mark.parametrize(
    "args,match",
    [
        (["--checkpoint", "nope/missing.safetensors"], "does not exist"),
        (["--eps", "-0.1"], r"eps=-0\.1"),
        (["--attacks", "pgd-ce,laser"], "unknown attack"),
        (["--steps", "0"], "steps=0"),
        (["--norm", "l7"], "norm='l7'"),
    ],
)
def test_cli_bad_input_one_line_error(digits_ce_model, tmp_path, capsys, args, match):
    ckpt = save_model(digits_ce_model, tmp_path / "m.safetensors", {"dataset": "digits"})
    full = ["evaluate", "--checkpoint", str(ckpt), "--n", "5", "--quiet", *args]
    rc = main(full)
    err = capsys.readouterr().err
    assert rc == 2
    assert "evaluate: error:" in err and len(err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(match, err)


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_committed_reports_match_checkpoints_and_fall_with_eps():
    """Every report in pretrained/robustness/ belongs to the checkpoint next to it and is monotone in eps."""
    from gccs_core.evaluate import file_sha256

    folder = ROOT / "pretrained" / "robustness"
    reports = sorted(folder.glob("*.json")) + sorted(folder.glob("l2/*.json"))
    assert reports, "no robustness reports committed under pretrained/robustness/"
    assert {load_report(p).norm for p in reports} == {"linf", "l2"}
    for path in reports:
        rep = load_report(path)
        ckpt = ROOT / "pretrained" / f"{path.stem}.safetensors"
        assert ckpt.exists(), f"{path.name} has no checkpoint"
        assert rep.model["sha256"] == file_sha256(ckpt), f"{path.name} is stale: its checkpoint changed"
        worst = rep.worst_case()
        assert worst == sorted(worst, reverse=True), f"{path.name}: worst case not monotone {worst}"
        assert all(w <= rep.clean_accuracy for w in worst)


def test_undefended_ce_mnist5k_is_broken_at_eps_03():
    """The plain cross-entropy mnist5k model: worst-case accuracy <= 2% at L-inf eps 0.3 (re-measured, 100 digits)."""
    from gccs_core import load_dataset, load_model

    ckpt = ROOT / "pretrained" / "mnist5k-ce.safetensors"
    assert ckpt.exists(), "pretrained/mnist5k-ce.safetensors is missing"
    ds = load_dataset("mnist5k", "test", limit=100)
    rep = evaluate_robustness(load_model(ckpt), ds.x, ds.y, [0.3], attacks=["pgd-margin", "apgd-dlr"], min_l2=None,
                              steps=20)
    assert rep.clean_accuracy > 0.9
    assert rep.results[0]["worst_case"] <= 0.02


def test_apgd_on_survivors_keeps_the_worst_case(digits_ce_model, digits_test):
    x, y = digits_test.x[:60], digits_test.y[:60]
    kw = {"attacks": ["fgsm", "apgd-dlr"], "min_l2": None, "steps": 10}
    full = evaluate_robustness(digits_ce_model, x, y, [0.1], **kw)
    cheap = evaluate_robustness(digits_ce_model, x, y, [0.1], apgd_on_all=False, **kw)
    rf, rc = full.results[0], cheap.results[0]
    assert "apgd-dlr" in rf and "apgd-dlr" not in rc and rc["apgd-dlr_extra"] >= 0
    assert rc["fgsm"] == rf["fgsm"]
    assert rc["worst_case"] == pytest.approx(rc["fgsm"] - rc["apgd-dlr_extra"] / 60)
    assert abs(rc["worst_case"] - rf["worst_case"]) <= 0.05  # same attacks, same worst case up to ART's randomness
    assert cheap.attacks["apgd-dlr"]["on"] == "survivors"


def test_merge_reports_equals_one_run(digits_ce_model, digits_test):
    from gccs_core.evaluate import merge_reports

    x, y = digits_test.x[:40], digits_test.y[:40]
    kw = {"attacks": ["fgsm", "pgd-margin"], "min_l2": None, "steps": 5}
    whole = evaluate_robustness(digits_ce_model, x, y, [0.1, 0.3], **kw)
    parts = [evaluate_robustness(digits_ce_model, x, y, [e], **kw) for e in (0.3, 0.1)]
    merged = merge_reports(parts)
    assert merged.eps == [0.1, 0.3] and merged.results == whole.results
    assert sorted(f["code"] for f in merged.flags) == sorted(f["code"] for f in whole.flags)
    with pytest.raises(ValueError, match="overlap"):
        merge_reports([parts[0], parts[0]])
