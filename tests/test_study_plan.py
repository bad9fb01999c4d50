"""The study's job graph: the hyperparameter grid (weight decay for every loss, lam for the GCCS readings)."""

from gccs_core.study.config import StudyConfig
from gccs_core.study.jobs import choose_hyperparameters
from gccs_core.study.plan import build_jobs


def _selects(cfg: StudyConfig) -> dict[str, list[dict]]:
    jobs = build_jobs(cfg, ("gccs", "ce", "gccs-subspace"), n_train=1000, n_test=200)
    out: dict[str, list[dict]] = {}
    for j in jobs:
        if j.kind == "select":
            out.setdefault(j.params["arm"], []).append(j.params["config"])
    return out


def test_gccs_readings_select_lam_and_weight_decay_ce_only_weight_decay():
    cfg = StudyConfig(readings=("gccs", "gccs-subspace"), sigmas=(1.0, 3.73), wd_grid=(5e-4, 5e-2), lam_grid=(1.0, 4.0))
    sel = _selects(cfg)
    assert sorted(sel) == ["ce", "gccs-s1", "gccs-s3.73", "gccs-subspace-s1", "gccs-subspace-s3.73"]
    assert [(c["weight_decay"], c["loss_params"].get("lam")) for c in sel["ce"]] == [(5e-4, None), (5e-2, None)]
    points = [(c["weight_decay"], c["loss_params"].get("lam", "default")) for c in sel["gccs-s3.73"]]
    assert points == [(5e-4, "default"), (5e-4, 4.0), (5e-2, "default"), (5e-2, 4.0)]  # lam 1 stays implicit
    assert all(c["loss_params"]["sigma"] == 3.73 for c in sel["gccs-s3.73"])


def test_the_lam_grid_changes_training_keys_but_not_the_default_points():
    before = StudyConfig(readings=("gccs",), sigmas=(1.0,), lam_grid=(1.0,))
    after = StudyConfig(readings=("gccs",), sigmas=(1.0,), lam_grid=(1.0, 4.0))
    keys = {cfg.lam_grid: {j.label: j.key for j in build_jobs(cfg, ("gccs", "ce"), 1000, 200)} for cfg in (before, after)}
    old, new = keys[(1.0,)], keys[(1.0, 4.0)]
    assert old["select gccs-s1 wd=0.0005 lam=1"] == new["select gccs-s1 wd=0.0005 lam=1"]  # finished work is kept
    assert old["train gccs-s1 seed 0"] != new["train gccs-s1 seed 0"]  # the model now depends on the larger grid
    assert old["train ce seed 0"] == new["train ce seed 0"]  # CE has no lam: untouched


def test_choice_is_the_best_validation_accuracy_ties_to_the_first_grid_point():
    grid = [{"weight_decay": 5e-4, "lam": 1.0, "val_accuracy": 0.55, "grid_index": 0},
            {"weight_decay": 5e-4, "lam": 4.0, "val_accuracy": 0.91, "grid_index": 1},
            {"weight_decay": 5e-2, "lam": 1.0, "val_accuracy": 0.91, "grid_index": 2}]
    got = choose_hyperparameters(grid)
    assert (got["weight_decay"], got["lam"]) == (5e-4, 4.0)
    assert got["grid"] == [[5e-4, 1.0, 0.55], [5e-4, 4.0, 0.91], [5e-2, 1.0, 0.91]]
    ce = choose_hyperparameters([{"weight_decay": 5e-2, "lam": None, "val_accuracy": 0.97, "grid_index": 0}])
    assert ce["lam"] is None and ce["weight_decay"] == 5e-2


def test_the_readme_block_is_replaced_between_its_markers_only():
    import pytest

    from gccs_core.study.report import README_BEGIN, README_END, replace_readme_block

    text = f"# Title\n\nintro\n\n{README_BEGIN}\nold numbers\n{README_END}\n\n## Next\n"
    block = f"{README_BEGIN}\nnew numbers\n{README_END}"
    got = replace_readme_block(text, block)
    assert got == f"# Title\n\nintro\n\n{block}\n\n## Next\n"
    assert replace_readme_block(got, block) == got  # idempotent
    with pytest.raises(ValueError, match="no <!-- BEGIN GENERATED"):
        replace_readme_block("# no markers\n", block)


def test_only_the_default_full_study_rewrites_the_readme():
    from gccs_core.study.main import DEFAULT_README, _readme, build_parser

    assert _readme(build_parser().parse_args(["run", "--quick"])) is None
    assert _readme(build_parser().parse_args(["run", "--out", "elsewhere"])) is None
    assert _readme(build_parser().parse_args(["report"])) == (DEFAULT_README if DEFAULT_README.exists() else None)


def test_select_jobs_keeps_what_the_chosen_jobs_need_in_plan_order():
    import pytest

    from gccs_core.study.plan import select_jobs

    cfg = StudyConfig(readings=("gccs",), sigmas=(1.0,), seeds=(0, 1))
    jobs = build_jobs(cfg, ("gccs", "ce"), n_train=1000, n_test=200)
    got = select_jobs(jobs, kinds=("autoattack",), arms=("gccs-s1-at-margin",))
    kinds = {j.kind for j in got}
    assert {"autoattack", "train", "select"} <= kinds and not kinds & {"weak", "strong", "diagnostics"}
    keys = {j.key for j in got}
    assert all(d in keys for j in got for d in j.deps)  # nothing left waiting on a job that will not run
    assert [j.key for j in jobs if j.key in keys] == [j.key for j in got]  # the plan's order, keys unchanged
    assert {j.params["arm"] for j in got if j.kind == "autoattack"} == {"gccs-s1-at-margin"}
    assert len(select_jobs(jobs)) == len(jobs)
    with pytest.raises(ValueError, match="--kinds autoatack unknown: the plan has autoattack"):
        select_jobs(jobs, kinds=("autoatack",))
    with pytest.raises(ValueError, match="--arms nope unknown: the plan has ce, ce-at-ce"):
        select_jobs(jobs, arms=("nope",))


def _iv(v, lo, hi):
    return {"estimate": v, "low": lo, "high": hi}


def test_the_conclusion_states_how_big_a_strong_advantage_is_and_whether_autoattack_agrees():
    from gccs_core.study.report import _conclusion

    def cell(arm, proto, eps, robust, diff=None, seeds=(0, 1, 2), aa_gap=None):
        c = {"arm": arm, "protocol": proto, "eps": eps, "seeds": list(seeds), "n": 250, "robust": _iv(robust, 0, 1)}
        if diff is not None:
            c["vs_ce"] = {"twin": "ce", "seeds": list(seeds), "n": 250, "diff": _iv(*diff), "mcnemar": {"p_value": 0.01}}
        if aa_gap is not None:
            c["strong_minus_autoattack"] = {"n": 100, "diff": _iv(aa_gap, 0, 0.05), "first": 0.05, "second": 0.02}
        return c

    cells = [cell("ce", "strong", 0.1, 0.01), cell("g", "strong", 0.1, 0.05, (0.04, 0.015, 0.07)),
             cell("g", "strong", 0.05, 0.36, (0.015, -0.04, 0.07)), cell("g", "autoattack", 0.1, 0.02, aa_gap=0.03),
             cell("g", "weak", 0.1, 0.11, (0.076, 0.016, 0.14)),
             cell("h", "strong", 0.1, 0.30, (-0.01, -0.05, 0.03), seeds=(0,)), cell("h", "weak", 0.1, 0.3, (0, -1, 1))]
    plain = [{"arm": "ce", "reading": "ce"}, {"arm": "g", "reading": "gccs"}, {"arm": "h", "reading": "gccs-hybrid"}]
    text = "\n".join(_conclusion(cells, plain, []))
    assert "g keeps an advantage" in text and "a GCCS advantage over CE with an interval excluding zero for g;" in text
    assert "+4.0 [+1.5, +7.0] points over 3 seed(s) x 250 digits, at 5.0% robust accuracy against 1.0% for CE" in text
    assert "both models lose at least 95% of the digits" in text and "eps 0.05 +1.5 [-4.0, +7.0]" in text
    assert "AutoAttack does NOT agree with the strong worst case within 2 points (largest gap 3.0, 100 digits)" in text
    assert "h" not in text.split("keeps an advantage")[0].split("Strong protocol")[1]  # h is level, not ahead


def test_the_recorded_command_reproduces_the_study_without_the_scheduling_options():
    from gccs_core.study.main import reproduce_command

    assert reproduce_command(["run", "--workers", "2", "--kinds", "train,strong", "--arms", "ce-at-ce"]) == \
        "python -m gccs_core.study run"
    assert reproduce_command(["report"]) == "python -m gccs_core.study run"
    assert reproduce_command(["run", "--quick", "--workers=2", "--threads", "2", "--max-jobs", "5", "--seeds", "0,1",
                              "--out", "my dir"]) == "python -m gccs_core.study run --quick --seeds 0,1 --out 'my dir'"
    assert reproduce_command(["run", "--ray", "auto", "--readings", "gccs"]) == \
        "python -m gccs_core.study run --readings gccs"
