"""AppTest of the Compare page: the L-inf / L2 reports, and the study's weak / strong readings with intervals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from apptest import ROOT, arr, errors, run_app, spec_by_trace, specs, url

from gccs_core.study_table import attack_breaks, load_results, missing, readings_table

STUDY = ROOT / "tests" / "data" / "study_results_be4e390.json"
"""The study's real partial results as committed in be4e390 (the live file changes while the study runs)."""


@pytest.fixture
def l2_report(pretrained):
    """An L2 report of the tiny digits-gccs model in ``robustness/l2/`` (removed afterwards)."""
    from gccs_core import load_dataset, load_model
    from gccs_core.evaluate import evaluate_robustness, save_report

    data = load_dataset("digits", "test", limit=30)
    rep = evaluate_robustness(load_model(pretrained["gccs"]), data.x, data.y, [0.5, 1.5], norm="l2", steps=3,
                              attacks=["fgsm", "pgd-margin"], min_l2=None)
    path = Path(pretrained["gccs"]).parent / "robustness" / "l2" / "digits-gccs.json"
    save_report(rep, path)
    yield rep
    shutil.rmtree(path.parent)


@pytest.fixture
def study(tmp_path, monkeypatch):
    """The snapshot of the study's real (partial) results, as the app's results file."""
    path = tmp_path / "results.json"
    shutil.copyfile(STUDY, path)
    monkeypatch.setenv("GCCS_STUDY_RESULTS", str(path))
    return path


def _frames(at):
    return [d.value for d in at.dataframe]


def test_the_norm_selector_shows_the_l2_reports_and_evaluates_in_l2(pretrained, l2_report, study):
    at = run_app(page="compare")
    assert not at.exception and not errors(at)
    assert {"eps 0", "eps 0.1"} <= set(_frames(at)[0].columns)
    at.radio(key="norm").set_value("l2").run()
    assert not at.exception and not errors(at)
    assert url(at, "norm") == "l2"
    table = _frames(at)[0]
    assert list(table["model"]) == ["digits-gccs · gccs"]
    assert [c for c in table.columns if c.startswith("eps")] == ["eps 0.5", "eps 1.5"]
    assert table["eps 1.5"].iloc[0] == pytest.approx(l2_report.worst_case()[1], abs=1e-4)
    curves = spec_by_trace(at, "digits-gccs · gccs")
    assert arr(curves["data"][0]["x"]).tolist() == [0.5, 1.5] and "(L2)" in curves["layout"]["title"]["text"]
    detail = _frames(at)[1]  # the per-attack table of the picked model, one click away
    assert {"fgsm", "pgd-margin", "worst_case"} <= set(detail.columns) and list(detail["eps"]) == [0.5, 1.5]
    # the cross-entropy model has no L2 report: a quick L2 evaluation adds it
    at.button(key="eval_run").click().run()
    assert not at.exception and not errors(at)
    table = _frames(at)[0]
    assert sorted(table["model"]) == ["digits-ce · ce", "digits-gccs · gccs"]
    assert at.session_state["eval_reports"][next(k for k in at.session_state["eval_reports"] if "|l2" in k)].norm == "l2"
    at.radio(key="norm").set_value("linf").run()
    assert list(_frames(at)[0]["model"]) == ["digits-gccs · gccs"]  # the L2 evaluation is not an L-inf report


@pytest.mark.parametrize("protocol", ["weak", "strong"])
def test_the_protocol_selector_shows_that_protocols_study_rows_with_intervals(pretrained, study, protocol):
    results = load_results(study)
    want = readings_table(results, protocol)
    at = run_app({"protocol": protocol}, page="compare")
    assert not at.exception and not errors(at)
    shown = _frames(at)[2]
    assert list(zip(shown["arm"], shown["eps"])) == [(r["arm"], r["eps"]) for r in want]
    np.testing.assert_allclose(shown["robust"], [r["robust"] for r in want])
    assert (shown["low"] <= shown["robust"]).all() and (shown["robust"] <= shown["high"]).all()
    rows = [r for r in results["rows"] if r["protocol"] == protocol]
    assert set(shown["arm"]) == {r["arm"] for r in rows}
    chart = next(s for s in specs(at) if "study: robust accuracy" in s["layout"]["title"]["text"])
    assert [d["name"] for d in chart["data"]] == sorted({r["arm"] for r in want}, key=[r["arm"] for r in want].index)
    first = chart["data"][0]
    lows = [r for r in want if r["arm"] == first["name"]]
    np.testing.assert_allclose(arr(first["error_y"]["arrayminus"]), [r["robust"] - r["low"] for r in lows], atol=1e-9)
    np.testing.assert_allclose(arr(first["error_y"]["array"]), [r["high"] - r["robust"] for r in lows], atol=1e-9)
    captions = " ".join(c.value for c in at.caption)
    gone = missing(results, protocol)
    assert all(arm in captions for arm in gone["arms"]) and "Missing:" in captions
    # the per-attack table of a study model
    model = at.selectbox(key="study_detail").value
    assert _frames(at)[3].to_dict("records") == attack_breaks(results, model, protocol)


def test_the_study_in_l2_and_a_broken_or_absent_results_file(pretrained, study, tmp_path, monkeypatch):
    at = run_app({"norm": "l2"}, page="compare")
    assert not at.exception
    assert any("The study does not evaluate L2: its plan holds L∞ only" in i.value for i in at.info)
    assert not any(c.value.startswith("Missing:") for c in at.caption)
    study.write_text('{"rows": [{"reading": "gccs"}]}')
    at = run_app(page="compare")
    assert not at.exception
    assert any("The study's results cannot be read" in e and "row 0 lacks" in e for e in errors(at))
    assert list(_frames(at)[0]["model"]) == ["digits-gccs · gccs"]  # the rest of the page still works
    monkeypatch.setenv("GCCS_STUDY_RESULTS", str(tmp_path / "nowhere.json"))
    at = run_app(page="compare")
    assert not at.exception and any("are not there yet" in i.value for i in at.info)


def test_the_shipped_l2_reports_of_the_mnist5k_models(pretrained, study, monkeypatch):
    """With the repository's own pretrained/ folder: L2 shows every shipped report of robustness/l2/, as written."""
    import json

    folder = ROOT / "pretrained" / "robustness" / "l2"
    shipped = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("mnist5k-*.json"))}
    assert shipped, "no L2 report ships with the pretrained models"
    monkeypatch.setenv("GCCS_PRETRAINED_DIR", str(ROOT / "pretrained"))
    at = run_app({"dataset": "mnist5k", "norm": "l2"}, page="compare")
    assert not at.exception and not errors(at)
    table = _frames(at)[0]
    assert sorted(m.split(" · ")[0] for m in table["model"]) == sorted(shipped)
    for _, row in table.iterrows():
        rep = shipped[row["model"].split(" · ")[0]]
        assert rep["norm"] == "l2"
        for r in rep["results"]:
            assert row[f"eps {r['eps']:g}"] == pytest.approx(r["worst_case"], abs=1e-4)
    at.radio(key="norm").set_value("linf").run()
    linf = _frames(at)[0]
    assert "eps 0.3" in linf.columns and "eps 1.5" not in linf.columns
