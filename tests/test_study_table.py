"""gccs_core.study_table on the study's real (partial) results file: intervals, what is missing, per-attack rows."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from gccs_core import stats
from gccs_core.study_table import (
    PROTOCOLS,
    attack_breaks,
    load_results,
    missing,
    readings_table,
    study_models,
    wilson_interval,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "tests" / "data" / "study_results_be4e390.json"
"""The study's real partial results as committed in be4e390 (19 of 565 jobs: seed 0, first 250 test digits): the
live docs/study/results.json is rewritten while the study runs (and starts empty after a restart)."""
PER_EXAMPLE = ROOT / "tests" / "data" / "study_per_example_be4e390.json"
LIVE = ROOT / "docs" / "study" / "results.json"


@pytest.fixture(scope="module")
def results():
    return load_results(RESULTS)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_row_per_configuration_and_eps_with_the_mean_inside_its_interval(results, protocol):
    rows = [r for r in results["rows"] if r["protocol"] == protocol and r["norm"] == "linf"]
    table = readings_table(results, protocol)
    assert len(table) == len({(r["arm"], r["eps"]) for r in rows})
    for line in table:
        mine = [r for r in rows if r["arm"] == line["arm"] and r["eps"] == line["eps"]]
        assert line["seeds"] == sorted(r["seed"] for r in mine)
        assert math.isclose(line["robust"], np.mean([r["robust"] for r in mine]), abs_tol=1e-9)
        assert 0.0 <= line["low"] <= line["robust"] <= line["high"] <= 1.0
        assert line["high"] > line["low"]  # never a zero-width interval, even at 0 % robust
        assert line["interval"] in ("bootstrap", "Wilson", "Wilson (bootstrap degenerate)")


def test_a_bootstrap_interval_is_the_one_the_per_example_data_gives(results):
    """Recompute one cell's two-level bootstrap from per_example.json (as the study does: 1000 replicates, seed 0)."""
    per_example = json.loads(PER_EXAMPLE.read_text())["models"]
    line = next(t for t in readings_table(results, "weak") if t["interval"] == "bootstrap")
    bits = [per_example[m]["protocols"]["weak"]["eps"][f"{line['eps']:g}"][: line["n"]] for m in line["models"]]
    mat = np.array([[c == "1" for c in b] for b in bits], dtype=float)
    ci = stats.bootstrap_mean(mat, 1000)
    assert math.isclose(ci.estimate, line["robust"]) and math.isclose(ci.low, line["low"])
    assert math.isclose(ci.high, line["high"])


def test_without_a_summary_every_interval_is_wilson(results):
    bare = {**results, "summary": {}}
    table = readings_table(bare, "strong")
    assert table and all(t["interval"] == "Wilson" for t in table)
    assert [t["robust"] for t in table] == [t["robust"] for t in readings_table(results, "strong")]


def test_wilson_endpoints_solve_the_score_equation():
    z = NormalDist().inv_cdf(0.975)
    for k, n in ((0, 250), (7, 250), (125, 250), (250, 250), (3, 10)):
        ci = wilson_interval(k, n)
        p_hat = k / n
        for p in (ci.low, ci.high):
            if 0 < p < 1:
                assert math.isclose(abs(p_hat - p), z * math.sqrt(p * (1 - p) / n), rel_tol=1e-9)
        assert ci.low <= p_hat <= ci.high and ci.high > ci.low
    with pytest.raises(ValueError, match="successes=11"):
        wilson_interval(11, 10)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_missing_lists_planned_configurations_and_seeds_not_there(results, protocol):
    gone = missing(results, protocol)
    shown = {t["arm"] for t in readings_table(results, protocol)}
    assert set(gone["planned_arms"]) == shown | set(gone["arms"]) and not shown & set(gone["arms"])
    assert gone["planned_seeds"] == results["settings"]["seeds"]
    for arm, seeds in gone["seeds"].items():
        found = {r["seed"] for r in results["rows"] if r["arm"] == arm and r["protocol"] == protocol}
        assert set(seeds) == set(gone["planned_seeds"]) - found
    assert gone["norm_planned"] and not missing(results, protocol, "l2")["norm_planned"]  # the study is L-inf only
    assert missing(results, protocol, "l2")["arms"] == []
    assert readings_table(results, protocol, "l2") == []


def test_per_attack_table_of_a_model(results):
    model = study_models(results, "strong")[0]
    table = attack_breaks(results, model, "strong")
    rows = [r for r in results["rows"] if r["model"] == model and r["protocol"] == "strong"]
    assert [t["eps"] for t in table] == sorted(r["eps"] for r in rows)
    for line, row in zip(table, sorted(rows, key=lambda r: r["eps"])):
        broken = sum(v for k, v in line.items() if k.startswith("broken first by"))
        # examples broken = clean-correct minus robust, and every one was broken first by exactly one attack
        assert broken == round(row["clean"] * row["n"]) - round(row["robust"] * row["n"])
    assert attack_breaks(results, "no-such-model", "strong") == []


@pytest.mark.skipif(not LIVE.exists(), reason="the study has not written its results yet")
def test_the_live_results_file_reads_whatever_its_progress(tmp_path):
    snapshot = tmp_path / "results.json"
    snapshot.write_bytes(LIVE.read_bytes())  # the runner rewrites it atomically; read one version
    results = load_results(snapshot)
    for protocol in PROTOCOLS:
        table = readings_table(results, protocol)
        assert all(0.0 <= t["low"] <= t["robust"] <= t["high"] <= 1.0 for t in table)
        gone = missing(results, protocol)
        assert not {t["arm"] for t in table} & set(gone["arms"])


def test_bad_input_is_named(results, tmp_path):
    with pytest.raises(ValueError, match="protocol='medium' is unknown; allowed: weak, strong"):
        readings_table(results, "medium")
    with pytest.raises(ValueError, match="norm='l3'"):
        missing(results, "weak", "l3")
    (tmp_path / "r.json").write_text(json.dumps({"rows": [{"reading": "gccs"}]}))
    with pytest.raises(ValueError, match="row 0 lacks loss"):
        load_results(tmp_path / "r.json")
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds"):
        load_results(tmp_path / "x.json")


def test_the_app_facing_modules_import_without_torch():
    """The Compare and Attack pages import these at the top: they must not pull torch into the first paint."""
    code = ("import sys, gccs_core.study_table, gccs_core.transfer, app.charts\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
