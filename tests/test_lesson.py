"""The 'why it looked robust' lesson on the shipped digits GCCS model: PGD-CE from the clean input stalls where
the CE gradient is exactly zero, PGD-margin does not; weak/strong readings from the real report and study file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gccs_core import load_dataset, load_model
from gccs_core.evaluate import zero_gradient_fraction
from gccs_core.lesson import (
    DEFAULT_RESULTS,
    UNDERFLOW_GAP,
    live_sweep,
    main,
    protocol_readings,
    report_reading,
    run_lesson,
    study_readings,
)
from gccs_core.views import VIEW_SEED, sample_indices, view_samples

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "pretrained" / "digits-gccs.safetensors"


@pytest.fixture(scope="module")
def digits() -> tuple[torch.nn.Module, object, np.ndarray]:
    torch.manual_seed(0)
    data = load_dataset("digits", "test")
    pool = sample_indices(data.y.numpy(), view_samples("digits"), VIEW_SEED)
    return load_model(CKPT), data, pool


@pytest.fixture(scope="module")
def lesson(digits):  # type: ignore[no-untyped-def]
    model, data, pool = digits
    idx = pool[data.y.numpy()[pool] == 3][:40]
    return run_lesson(model, data.x[idx], data.y[idx], eps=0.2, steps=20), (data.x[idx], data.y[idx])


def test_ce_pgd_leaves_clearly_more_correct_than_margin_pgd(lesson) -> None:  # type: ignore[no-untyped-def]
    les, _ = lesson
    # measured: 37 threes, clean 100%; PGD-CE from the clean input 40.5% still correct, PGD-margin 0%
    assert les.clean_accuracy > 0.9
    assert les.weak.accuracy - les.strong.accuracy > 0.25
    assert les.strong.accuracy < 0.1


def test_zero_gradient_fraction_is_real_and_explains_the_stall(lesson, digits) -> None:  # type: ignore[no-untyped-def]
    les, (x, y) = lesson
    model = digits[0]
    assert les.zero_grad_fraction > 0.2  # measured 0.405
    assert les.zero_grad_fraction == pytest.approx(zero_gradient_fraction(model, x, y))
    stuck = les.zero_grad
    # no gradient, no step: those samples never leave the clean input and stay correct under PGD-CE ...
    assert np.array_equal(les.weak.x[:, stuck], np.broadcast_to(les.weak.x[0, stuck], les.weak.x[:, stuck].shape))
    assert les.weak.correct[stuck].all()
    # ... and PGD-margin breaks them all the same
    assert not les.strong.correct[stuck].any()
    # the mechanism: float32 softmax underflows beyond a score gap of 149 ln 2
    assert (les.score_gap[stuck] > UNDERFLOW_GAP - 1.0).all()
    assert (les.score_gap[~stuck] < UNDERFLOW_GAP + 1.0).all()


def test_decision_plane_coordinates_are_exact(lesson) -> None:  # type: ignore[no-untyped-def]
    les, _ = lesson
    y, t = les.plane.y, les.plane.t
    assert y == 3 and t != y
    for att in (les.weak, les.strong):
        assert att.plane.shape == (*att.pred.shape, 2)
        np.testing.assert_allclose(att.plane[..., 0], att.distance, atol=1e-4)
        assert (att.distance[att.pred == t] > 0).all()  # predicted t: on t's side of the boundary
        assert (att.distance[att.pred == y] < 0).all()
        assert att.linf.max() <= les.eps + 1e-6
    # the strong attack carries samples across the drawn line; t is where it took most of them
    assert (les.strong.pred[-1] == t).sum() >= 1
    assert (les.strong.pred[-1] == t).sum() == max((les.strong.pred[-1] == k).sum() for k in range(10) if k != y)


def test_holds_on_a_stratified_sample_too(digits) -> None:  # type: ignore[no-untyped-def]
    model, data, pool = digits
    idx = pool[::3]
    les = run_lesson(model, data.x[idx], data.y[idx], eps=0.2, steps=20, plane_y=3, plane_t=8)
    assert les.weak.accuracy > les.strong.accuracy + 0.2
    assert les.notes and "not of class 3" in les.notes[0]


def test_bad_input_is_named(digits) -> None:  # type: ignore[no-untyped-def]
    model, data, _ = digits
    with pytest.raises(ValueError, match="eps"):
        run_lesson(model, data.x[:4], data.y[:4], eps=0.0)
    with pytest.raises(ValueError, match="steps"):
        run_lesson(model, data.x[:4], data.y[:4], steps=0)
    with pytest.raises(ValueError, match="no samples"):
        run_lesson(model, data.x[:0], data.y[:0])
    with pytest.raises(ValueError, match="t=3"):
        run_lesson(model, data.x[:4], data.y[:4], plane_y=3, plane_t=3)
    with pytest.raises(ValueError, match="plane_y"):
        run_lesson(model, data.x[:4], data.y[:4], plane_y=12)
    with pytest.raises(ValueError, match="eps_list"):
        live_sweep(model, data.x[:4], data.y[:4], [])
    with pytest.raises(ValueError, match="eps"):
        live_sweep(model, data.x[:4], data.y[:4], [0.1, -0.2])


def test_live_sweep_weak_never_below_strong(digits) -> None:  # type: ignore[no-untyped-def]
    model, data, pool = digits
    idx = pool[data.y.numpy()[pool] == 3][:40]
    r = live_sweep(model, data.x[idx], data.y[idx], [0.1, 0.2], steps=20)
    assert r.source == "live" and r.n == len(idx)
    assert all(w >= s for w, s in zip(r.weak, r.strong))
    assert r.gap[1] > 0.25  # eps 0.2: the same figures as the lesson (PGD-CE 40%, worst of both 0%)


def test_report_reading_is_the_report() -> None:
    path = ROOT / "pretrained" / "robustness" / "mnist5k-gccs.json"
    rows = json.loads(path.read_text())["results"]
    r = report_reading(path)
    assert r.eps == tuple(row["eps"] for row in rows)
    for row, w, s, g in zip(rows, r.weak, r.strong, r.gap):
        assert w == min(row["fgsm"], row["pgd-ce"], row["apgd-ce"])
        assert s == row["worst_case"]
        assert g == pytest.approx(w - s) and g >= 0
    assert max(r.gap) > 0.1  # the CE-only table flatters this model by more than 10 points somewhere


def test_study_readings_real_partial_and_missing(tmp_path: Path) -> None:
    data = json.loads(DEFAULT_RESULTS.read_text())  # the study's file as it stands (it grows while the study runs)
    readings, _ = study_readings(DEFAULT_RESULTS, dataset="mnist5k", loss="gccs", sigma=1.0)
    expected = {r["model"] for r in data["rows"] if r.get("loss") == "gccs" and r.get("reading") == "gccs"
                and r.get("sigma") == 1.0 and not r.get("adv_train")}
    assert {r.model for r in readings} == expected
    for rd in readings:
        for e, w in zip(rd.eps, rd.weak):
            row = [x for x in data["rows"] if x["model"] == rd.model and x["protocol"] == "weak" and x["eps"] == e]
            assert (w is None) == (not row) and (not row or w == row[0]["robust"])
    # a partial file in the study's row layout: weak rows only -> strong is None and the note says so
    rows = [{"model": "m", "loss": "gccs", "reading": "gccs", "sigma": 1.0, "adv_train": False, "protocol": "weak",
             "norm": "linf", "eps": e, "robust": r, "n": 250} for e, r in ((0.05, 0.6), (0.1, 0.2))]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"settings": {"dataset": "mnist5k"}, "rows": rows}))
    (rd,), notes = study_readings(path, dataset="mnist5k", loss="gccs", sigma=1.0)
    assert rd.eps == (0.05, 0.1) and rd.weak == (0.6, 0.2)
    assert all(s is None for s in rd.strong) and all(g is None for g in rd.gap)
    assert any("strong protocol not finished" in n for n in notes)
    assert study_readings(path, dataset="mnist5k", loss="gccs", sigma=3.73)[0] == []  # another sigma: not this recipe
    assert study_readings(tmp_path / "none.json", dataset="mnist5k", loss="gccs", sigma=1.0)[1][0].endswith("yet.")
    if data.get("settings", {}).get("dataset") == "mnist5k":
        assert "not 'digits'" in study_readings(DEFAULT_RESULTS, dataset="digits", loss="gccs", sigma=1.0)[1][0]
    readings, notes = protocol_readings("no-such-model", dataset="digits", loss="gccs", reports_dir=tmp_path)
    assert readings == [] and any("no shipped robustness report" in n for n in notes)


def test_cli_prints_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", str(CKPT), "--n", "12", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 12 and out["weak"]["accuracy"] >= out["strong"]["accuracy"]
    assert out["readings"][0]["source"] == "report"


def test_cli_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--model", str(tmp_path / "nope.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--model", str(CKPT), "--class", "12"]) == 2
    assert "--class 12 is invalid: allowed classes are 0..9" in capsys.readouterr().err
