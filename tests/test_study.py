"""The study runner (gccs_core/study): the --quick run end to end, resumption after kill -9, Ray, bad inputs.

Real data (sklearn digits), real training and attacks, tiny budgets.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gccs_core.study import StudyConfig, run_study
from gccs_core.study.config import STUDY_FORMAT, check_readings
from gccs_core.study.main import main
from gccs_core.study.store import Store, StudyError

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(at_arm=False, epochs=2, wd_grid=(5e-4,), n_eval=20, chunk=10, first_n=10, eps=(0.1,), steps=3, restarts=1,
            square_queries=5, weak_square_queries=5, cw_steps=2, n_autoattack=4, autoattack_chunk=4, n_minnorm=4,
            fab_steps=2, noise_draws=1, iteration_budgets=(2,), iteration_n=10, n_diagnostics=10)
"""digits, GCCS and CE, one seed, no AT arm: every kind of job in about 20 s."""


def tiny() -> StudyConfig:
    return StudyConfig.quick_config().with_overrides(**TINY)


def _rows(out: Path) -> list[dict]:
    data = json.loads((out / "results.json").read_text())
    keep = ("model", "protocol", "eps", "robust", "clean", "n", "attacks", "first_break")  # not sha256: files hold timings
    return sorted(({k: r[k] for k in keep} for r in data["rows"]), key=lambda r: (r["model"], r["protocol"], r["eps"]))


def test_quick_run_end_to_end(tmp_path):
    """The CI test: `--quick` trains, evaluates and writes every output; a second call recomputes nothing."""
    out = tmp_path / "study"
    proc = subprocess.run([sys.executable, "-m", "gccs_core.study", "run", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((out / "results.json").read_text())
    assert data["format"] == STUDY_FORMAT and data["summary"]["progress"]["done"] == data["summary"]["progress"]["jobs"]
    rows = data["rows"]
    need = {"reading", "loss", "sigma", "radius", "seed", "adv_train", "checkpoint", "sha256", "clean", "protocol", "norm",
            "eps", "robust", "n", "attacks"}
    assert rows and all(need <= set(r) for r in rows)
    assert {r["protocol"] for r in rows} == {"weak", "strong", "autoattack"}
    assert {r["reading"] for r in rows} == {"gccs", "ce"}
    assert {r["adv_train"] for r in rows} == {False, "margin", "ce"}
    assert all(0.0 <= r["robust"] <= r["clean"] <= 1.0 for r in rows)
    # the strong protocol is at least as strong as the weak one on the same model and digits
    by = {(r["model"], r["protocol"], r["eps"]): r for r in rows}
    for (model, proto, eps), r in by.items():
        if proto == "weak":
            assert by[(model, "strong", eps)]["robust"] <= r["robust"] + 0.15
    # per-example side file reproduces every row
    pe = json.loads((out / "per_example.json").read_text())["models"]
    for r in rows:
        bits = pe[r["model"]]["protocols"][r["protocol"]]["eps"][f"{r['eps']:g}"]
        assert len(bits) == r["n"] and bits.count("1") / r["n"] == pytest.approx(r["robust"])
    # seed-0 checkpoints load with the library and match their recorded hash
    from gccs_core.checkpoint import load_model
    from gccs_core.study.store import sha256_file

    manifest = json.loads((out / "pretrained" / "manifest.json").read_text())["models"]
    assert len(manifest) == 5 and all(m["command"].startswith("python -m gccs_core train") for m in manifest)
    for m in manifest:
        path = out / "pretrained" / m["file"]
        assert sha256_file(path) == m["sha256"]
        load_model(path)
    md = (tmp_path / "study.md").read_text()  # next to its results folder, as docs/study.md is
    assert "## Conclusion" in md and "Weight-decay and lam selection" in md and "AT arm" in md
    rerun = subprocess.run([sys.executable, "-m", "gccs_core.study", "run", "--quick", "--out", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "[start]" not in rerun.stdout and "0 to run" in rerun.stdout


SCRIPT = """
from gccs_core.study import StudyConfig, run_study
from test_study import tiny  # tests/ is on PYTHONPATH
if __name__ == "__main__":
    run_study(tiny(), {out!r}, {work!r}, {pre!r})
"""


def _start(out: Path) -> subprocess.Popen:
    code = SCRIPT.format(out=str(out), work=str(out / "work"), pre=str(out / "pre"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def test_resume_after_kill_9_recomputes_nothing_finished_and_gives_identical_results(tmp_path):
    killed = tmp_path / "killed"
    proc = _start(killed)
    lines = []
    for line in proc.stdout:  # kill -9 the driver right after the first job has finished
        lines.append(line)
        if line.startswith("[1/"):
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(lines)
    time.sleep(1.0)  # the worker dies with the driver (PR_SET_PDEATHSIG)
    before = {k: v["finished_at"] for k, v in Store(killed / "work").finished().items()}
    assert len(before) >= 1
    json.loads((killed / "results.json").read_text())  # what was written is whole

    counts = run_study(tiny(), killed, killed / "work", killed / "pre", log=lambda s: None)
    after = Store(killed / "work").finished()
    assert counts["failed"] == {} and counts["ran"] == counts["total"] - len(before)
    assert all(after[k]["finished_at"] == t for k, t in before.items())  # never recomputed
    assert not list((killed / "work" / "models").glob(".*.tmp-*"))

    clean = tmp_path / "clean"
    run_study(tiny(), clean, clean / "work", clean / "pre", log=lambda s: None)
    assert _rows(killed) == _rows(clean)


def test_ray_path_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is an optional extra (pip install 'ray[default]')")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        cfg = tiny().with_overrides(n_eval=10, n_autoattack=2, autoattack_chunk=2)
        counts = run_study(cfg, tmp_path, tmp_path / "work", tmp_path / "pre", ray_address="auto", log=lambda s: None)
    finally:
        ray.shutdown()
    assert counts["failed"] == {} and counts["finished"] == counts["total"]
    local = tmp_path / "local"
    run_study(cfg, local, local / "work", local / "pre", log=lambda s: None)
    assert _rows(tmp_path) == _rows(local)


def _cli(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err.strip().splitlines()


def test_unknown_reading_is_a_one_line_error_naming_the_allowed_values(tmp_path, capsys):
    code, err = _cli(["run", "--quick", "--out", str(tmp_path), "--readings", "gccs,gccs-nope"], capsys)
    assert code == 2 and len(err) == 1 and "'gccs-nope'" in err[0] and "allowed: gccs" in err[0]
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(ValueError, match="unknown reading"):
        check_readings(("kl",), ("gccs", "ce"))
    from gccs_core.cli import main as cli_main  # `python -m gccs_core study ...` delegates to the same command

    assert cli_main(["study", "run", "--quick", "--out", str(tmp_path), "--readings", "kl"]) == 2
    assert "'kl'" in capsys.readouterr().err


@pytest.mark.parametrize("args,match", [(["--workers", "0"], "--workers"), (["--n-eval", "0"], "--n-eval"),
                                        (["--eps", "0.1,2"], "--eps"), (["--seeds", "-1"], "--seeds")])
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, match):
    code, err = _cli(["run", "--quick", "--out", str(tmp_path), *args], capsys)
    assert code == 2 and len(err) == 1 and match in err[0]
    assert not (tmp_path / "results.json").exists()


def test_results_of_another_version_are_refused_and_nothing_is_written(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "study.json").write_text(json.dumps({"format": STUDY_FORMAT, "version": 0}))
    code, err = _cli(["run", "--quick", "--out", str(tmp_path)], capsys)
    assert code == 2 and len(err) == 1 and "version 0" in err[0] and "this is version" in err[0]
    assert not (tmp_path / "results.json").exists()
    (work / "study.json").unlink()
    (work / "jobs").mkdir()
    (work / "jobs" / "0123456789abcdef.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(StudyError, match="not a study file"):
        Store(work).finished()


def test_missing_optional_dependencies_name_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    code, err = _cli(["run", "--quick", "--out", str(tmp_path), "--ray", "auto"], capsys)
    assert code == 2 and len(err) == 1 and "pip install 'ray[default]'" in err[0]
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    code, err = _cli(["run", "--quick", "--out", str(tmp_path)], capsys)
    assert code == 2 and len(err) == 1 and "pip install pyautoattack" in err[0]
    assert not (tmp_path / "results.json").exists()


def test_a_run_of_some_seeds_leaves_the_whole_study_reported(tmp_path):
    """`run --seeds 0` on a two-seed study runs only seed 0's jobs but reports progress over both seeds' jobs,
    so running the decisive jobs first never shrinks the published report."""
    from gccs_core.study.main import _report_config, build_parser
    from gccs_core.study.runner import plan_jobs

    whole = tiny().with_overrides(seeds=(0, 1))
    some = whole.with_overrides(seeds=(0,))
    assert len(plan_jobs(some)) < len(plan_jobs(whole))
    counts = run_study(some, tmp_path / "out", tmp_path / "work", tmp_path / "pre", max_jobs=1, report_cfg=whole,
                       log=lambda *_: None)
    progress = json.loads((tmp_path / "out" / "results.json").read_text())["summary"]["progress"]
    assert counts["ran"] == 1 and progress == {**progress, "jobs": len(plan_jobs(whole)), "done": 1}
    # the CLI's rule: a subset of the study's readings/seeds reports the whole study, anything else itself
    full = StudyConfig.full()
    args = build_parser().parse_args(["run", "--readings", "gccs", "--seeds", "1"])
    assert _report_config(args, full.with_overrides(readings=("gccs",), seeds=(1,))) == full
    outside = full.with_overrides(seeds=(7,))
    assert _report_config(build_parser().parse_args(["run", "--seeds", "7"]), outside) == outside


def test_a_killed_strong_job_resumes_from_the_radii_it_had_saved(tmp_path):
    """A strong job saves each finished radius to work/partial/<key>.json: a rerun takes the saved radii as they
    are and computes the rest; a progress file of another model is ignored; the file goes once the job is done."""
    from gccs_core.study.jobs import _partial_path, execute
    from gccs_core.study.runner import plan_jobs

    cfg = tiny().with_overrides(eps=(0.05, 0.1))
    work = tmp_path / "work"
    run_study(cfg, tmp_path, work, tmp_path / "pre", kinds=["train"], log=lambda s: None)
    done = Store(work).finished()
    job = next(j for j in plan_jobs(cfg) if j.kind == "strong" and all(d in done for d in j.deps))
    deps = {d: done[d]["result"] for d in job.deps}
    whole = execute(job.to_dict(), deps, str(work))
    assert not _partial_path(work, job.key).exists()  # removed once the job returned its result

    sha = deps[job.params["model"]]["sha256"]
    marked = {**whole["eps"]["0.05"], "marker": True}  # a saved radius is taken as it is, not recomputed
    path = _partial_path(work, job.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": 1, "key": job.key, "model_sha256": sha, "eps": {"0.05": marked}}))
    resumed = execute(job.to_dict(), deps, str(work))
    assert resumed["eps"]["0.05"] == marked and resumed["eps"]["0.1"] == whole["eps"]["0.1"]
    assert not path.exists()

    path.write_text(json.dumps({"format": 1, "key": job.key, "model_sha256": "another model", "eps": {"0.05": marked}}))
    again = execute(job.to_dict(), deps, str(work))
    assert again["eps"] == whole["eps"]
