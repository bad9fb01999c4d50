"""The one reproducible robustness benchmark: evaluate every pretrained model, write the reports,
the table and the accuracy-versus-eps plot.

    .venv/bin/python scripts/benchmark_robustness.py            # evaluate what is missing, then write docs
    .venv/bin/python scripts/benchmark_robustness.py --train-at # also (re)train the two adversarially trained models
    .venv/bin/python scripts/benchmark_robustness.py --docs-only

Models: ``pretrained/{digits,mnist5k}-{gccs,ce,mmc,center}.safetensors`` (the plain models) and
``pretrained/mnist5k-{gccs,ce}-at.safetensors`` (PGD adversarial training, made by ``--train-at``
with the commands in ``AT_COMMANDS``). Each is evaluated with ``python -m gccs_core evaluate`` at
L-inf eps 0.05, 0.1, 0.2, 0.3 on the first 500 test examples (digits: its 360), seed 0, and the report
goes to ``pretrained/robustness/<model>.json`` (the app's Compare page loads these). A report whose
checkpoint sha256 and settings match is reused, so an interrupted run resumes (``--force`` redoes all).

Then ``docs/results.md`` (the part between the GENERATED markers) and
``docs/results_accuracy_vs_eps.png`` are rewritten from the reports, and so is the marked table in
README.md (at its ``<!-- robustness-table -->`` marker, or between the GENERATED markers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gccs_core.files import file_sha256
from gccs_core.report import load_report

ROOT = Path(__file__).resolve().parents[1]

PY = sys.executable
EPS = "0.05,0.1,0.2,0.3"
NORM = "linf"
EPS_L2 = "0.5,1.0,1.5,2.0"
"""L2 radii for the mnist5k models (28x28 inputs in [0, 1]; 2.0 is the usual MNIST L2 budget). The L2 run
(``--norm l2``) covers the mnist5k models only and writes ``pretrained/robustness/l2/<model>.json``."""
N = 500
"""Test examples per model: the first 500 (digits has only 360, so all of them)."""
SQUARE_QUERIES = 300


SEED = 0
STEPS = {"digits": 50, "mnist5k": 20}
RESTARTS = {"digits": 5, "mnist5k": 1}
"""PGD/APGD iterations and restarts per dataset: 20 steps, 1 restart already cost minutes per model on
2 CPU cores for the mnist5k CNN; the digits MLP is cheap enough for 50 steps x 5 restarts (with 1
restart, even 100 steps left PGD 3-5 points short at eps 0.1: the x2-restarts check flagged it)."""


def steps_for(name: str) -> int:
    return STEPS[name.split("-")[0]]


def restarts_for(name: str) -> int:
    return RESTARTS[name.split("-")[0]]
PLAIN = [f"{ds}-{loss}" for ds in ("mnist5k", "digits") for loss in ("gccs", "ce", "mmc", "center")]
AT = ["mnist5k-gccs-at", "mnist5k-ce-at"]
AT_COMMANDS = {
    name: [PY, "-m", "gccs_core", "train", "--dataset", "mnist5k", "--loss", name.split("-")[1], "--adv-train",
           "--adv-eps", "0.3", "--adv-steps", "7", "--epochs", "10", "--seed", "0", "--quiet", "--out", f"runs/{name}"]
    for name in AT
}
"""The commands that made the adversarially trained models (PGD-7, eps 0.3, step 2.5*eps/7, CE objective,
a 10-epoch cosine schedule, all 10 epochs). ``train_at`` runs exactly these commands."""
PRETRAINED = ROOT / "pretrained"
REPORTS = PRETRAINED / "robustness"
RESULTS_MD = ROOT / "docs" / "results.md"
PLOT = ROOT / "docs" / "results_accuracy_vs_eps.png"
README_MARK = "<!-- robustness-table -->"
"""Where README.md wants the table (replaced by the BEGIN/END block on the first run)."""
BEGIN, END = "<!-- BEGIN GENERATED: scripts/benchmark_robustness.py -->", "<!-- END GENERATED -->"


def train_at(name: str, threads: int = 1) -> None:
    """Train one adversarially trained model with its ``AT_COMMANDS`` command and copy it into pretrained/."""
    out = ROOT / "runs" / name
    if out.exists():
        shutil.rmtree(out)
    print("+", " ".join(AT_COMMANDS[name][1:]), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(AT_COMMANDS[name], cwd=ROOT, env=env, check=True)
    shutil.copyfile(out / "model.safetensors", PRETRAINED / f"{name}.safetensors")


def report_path(name: str, norm: str = NORM) -> Path:
    return REPORTS / f"{name}.json" if norm == "linf" else REPORTS / norm / f"{name}.json"


def _report_is_current(name: str, norm: str = NORM) -> bool:
    path, ckpt = report_path(name, norm), PRETRAINED / f"{name}.safetensors"
    if not path.exists():
        return False
    try:
        rep = load_report(path)
    except ValueError:
        return False
    same_n = rep.n == min(N, rep.n)
    eps = EPS if norm == "linf" else EPS_L2
    return (same_n and rep.model.get("sha256") == file_sha256(ckpt) and rep.eps == [float(e) for e in eps.split(",")]
            and rep.norm == norm and rep.seed == SEED and rep.attacks.get("pgd-ce", {}).get("steps") == steps_for(name)
            and "pgd-margin-x2" in rep.attacks and rep.attacks["pgd-ce"]["restarts"] == restarts_for(name)
            and rep.attacks.get("square", {}).get("steps") == SQUARE_QUERIES)


def evaluate(name: str, threads: int, norm: str = NORM, device: str = "cpu") -> None:
    """Run ``python -m gccs_core evaluate`` on one pretrained model (a subprocess, ``threads`` torch threads)."""
    out = report_path(name, norm)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [PY, "-m", "gccs_core", "evaluate", "--checkpoint", f"pretrained/{name}.safetensors",
           "--eps", EPS if norm == "linf" else EPS_L2, "--norm", norm, "--device", device,
           "--n", str(N), "--seed", str(SEED), "--steps", str(steps_for(name)),
           "--restarts", str(restarts_for(name)),
           "--square-queries", str(SQUARE_QUERIES),
           "--threads", str(threads), "--quiet",
           "--json", str(out.relative_to(ROOT))]
    print("+", " ".join(cmd[1:]), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"evaluation of {name} failed:\n{proc.stderr[-2000:]}")
    print(proc.stdout, flush=True)


# -- documents ---------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def table_markdown(reports: dict) -> str:
    """Clean and worst-case robust accuracy (%) per model and eps, plus the median minimal L2 and the flags."""
    eps = next(iter(reports.values())).eps
    head = "| model | train | n | clean | " + " | ".join(f"eps {e:g}" for e in eps) + " | median min L2 | flags | device |"
    sep = "|" + "---|" * (7 + len(eps))
    rows = [head, sep]
    for name, rep in reports.items():
        codes = sorted({f["code"] for f in rep.flags})
        train = "PGD-AT" if rep.model.get("adv_train") else "plain"
        l2 = "-" if rep.median_min_l2 is None else f"{rep.median_min_l2:.2f}"
        accs = " | ".join(_pct(v) for v in rep.worst_case())
        dev = str(rep.model.get("device", "cpu"))
        dev = "CPU" if dev == "cpu" else dev.replace("NVIDIA ", "").split()[0]
        rows.append(f"| {name} | {train} | {rep.n} | {_pct(rep.clean_accuracy)} | {accs} | {l2} | {', '.join(codes) or 'none'} "
                    f"| {dev} |")
    return "\n".join(rows)


def per_attack_markdown(rep) -> str:
    labels = [lb for lb in rep.attacks if any(lb in r or lb + "_extra" in r for r in rep.results)]
    rows = ["| eps | " + " | ".join(labels) + " | white-box worst | + Square | worst case |",
            "|" + "---|" * (len(labels) + 4)]
    for r in rep.results:
        cells = [_pct(r[lb]) if lb in r else f"+{r.get(lb + '_extra', 0)}" for lb in labels]
        rows.append(f"| {r['eps']:g} | " + " | ".join(cells)
                    + f" | {_pct(r['white_box_worst_case'])} | {r.get('square_only', 0)} | {_pct(r['worst_case'])} |")
    return "\n".join(rows)


def plot(reports: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, ds in zip(axes, ("mnist5k", "digits")):
        for name, rep in reports.items():
            if not name.startswith(ds):
                continue
            xs = [0.0] + rep.eps
            ys = [100 * rep.clean_accuracy] + [100 * v for v in rep.worst_case()]
            style = "--" if rep.model.get("adv_train") else "-"
            ax.plot(xs, ys, style, marker="o", label=name.removeprefix(ds + "-"))
        ax.set_title(f"{ds}: worst case over all attacks (L-inf)")
        ax.set_xlabel("eps")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    axes[0].set_ylabel("robust accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _replace_between(text: str, block: str) -> str:
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        return text[:a] + f"{BEGIN}\n{block}\n{END}" + text[b:]
    return text.rstrip() + f"\n\n{BEGIN}\n{block}\n{END}\n"


def _per_attack_section(name: str, rep, norm_label: str = "") -> list[str]:  # noqa: ANN001
    """One model's per-attack table under its bold name, followed by its sanity flags."""
    head = f"**{name}**{norm_label} (clean {_pct(rep.clean_accuracy)}, {rep.elapsed_s:.0f} s)"
    lines = ["", head, "", per_attack_markdown(rep)]
    if rep.flags:
        lines += [""] + [f"- `{f['code']}`: {f['message']}" for f in rep.flags]
    return lines


def write_docs() -> dict:
    reports = {}
    for name in PLAIN + AT:
        p = REPORTS / f"{name}.json"
        if p.exists():
            reports[name] = load_report(p)
    if not reports:
        raise SystemExit("no reports under pretrained/robustness/; run the evaluation first.")
    plot(reports, PLOT)
    any_rep = next(iter(reports.values()))
    sections = [
        "### Worst-case robust accuracy (%), L-inf, first n test examples (digits: all 360)",
        "",
        table_markdown(reports),
        "",
        f"Attacks per eps: {', '.join(any_rep.attacks)} (PGD/APGD steps x restarts: mnist5k {STEPS['mnist5k']} x "
        f"{RESTARTS['mnist5k']}, digits {STEPS['digits']} x {RESTARTS['digits']}; pgd-margin-x2 doubles the restarts; Square "
        f"{SQUARE_QUERIES} iterations on white-box survivors; APGD-CE and APGD-DLR on every clean-correct example). "
        f"Median min L2: DeepFool on the first {sorted({r.min_l2_n for r in reports.values()})} clean-correct examples. "
        f"Seed {SEED}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in any_rep.versions.items()) + ".",
        "",
        "![accuracy versus eps](results_accuracy_vs_eps.png)",
        "",
        "### Robust accuracy (%) per attack",
    ]
    for name, rep in reports.items():
        sections += _per_attack_section(name, rep)
    l2 = {name: load_report(report_path(name, "l2")) for name in PLAIN + AT if report_path(name, "l2").exists()}
    if l2:
        devices = sorted({str(r.model.get("device", "cpu")) for r in l2.values()})
        sections += ["", "### Worst-case robust accuracy (%), L2, mnist5k", "", table_markdown(l2), "",
                     f"Same suite and budgets as L-inf, with L2 balls of radius {EPS_L2} (pixels in [0, 1], 28x28). "
                     f"Run with `--norm l2` on device {', '.join(devices)}; reports in `pretrained/robustness/l2/`."]
        for name, rep in l2.items():
            sections += _per_attack_section(name, rep, ", L2")
    block = "\n".join(sections)
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Robustness results\n"
    RESULTS_MD.write_text(_replace_between(text, block) + ("" if text.endswith("\n") else "\n"))
    readme = ROOT / "README.md"
    if readme.exists():
        text = readme.read_text()
        table = table_markdown(reports)
        if BEGIN in text and END in text:
            readme.write_text(_replace_between(text, table))
        elif README_MARK in text:
            readme.write_text(text.replace(README_MARK, f"{BEGIN}\n{table}\n{END}", 1))
    return reports


def merge_parts(folder: Path) -> None:
    """Merge per-eps reports ``<model>-eps<e>.json`` (one process per eps, run in parallel when the
    machine is short of time) into ``pretrained/robustness/<model>.json``; see ``merge_reports``."""
    from gccs_core.report import merge_reports, save_report

    for name in PLAIN + AT:
        parts = sorted(folder.glob(f"{name}-eps*.json"))
        if parts:
            merged = merge_reports([load_report(p) for p in parts])
            print(f"merged {len(parts)} parts into {save_report(merged, REPORTS / f'{name}.json')}: eps {merged.eps}")


def main() -> int:
    ap = argparse.ArgumentParser(description="Evaluate every pretrained model and write docs/results.md.")
    ap.add_argument("--train-at", action="store_true", help="(re)train the two adversarially trained models first")
    ap.add_argument("--force", action="store_true", help="re-evaluate even when a current report exists")
    ap.add_argument("--docs-only", action="store_true", help="only rewrite docs/results.md and the plot")
    ap.add_argument("--merge-parts", default=None, help="folder of per-eps reports <model>-eps<e>.json to merge first")
    ap.add_argument("--jobs", type=int, default=1, help="models evaluated at once (each with 1 thread when > 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per evaluation (1 is fastest on a loaded machine)")
    ap.add_argument("--models", default=None, help="comma-separated subset, e.g. mnist5k-ce,mnist5k-gccs-at")
    ap.add_argument("--norm", default=NORM, choices=("linf", "l2"), help="l2: the mnist5k models at eps " + EPS_L2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the shipped L-inf reports were made on the CPU)")
    a = ap.parse_args()
    REPORTS.mkdir(parents=True, exist_ok=True)
    names = a.models.split(",") if a.models else PLAIN + AT
    if a.norm == "l2":
        names = [n for n in names if n.startswith("mnist5k")]
    if a.train_at:
        with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
            list(pool.map(lambda n: train_at(n, a.threads), AT))
    if a.merge_parts:
        merge_parts(Path(a.merge_parts))
    if not a.docs_only:
        missing = [n for n in names if not (PRETRAINED / f"{n}.safetensors").exists()]
        if missing:
            raise SystemExit(f"missing checkpoints: {', '.join(missing)} (AT models: run with --train-at).")
        todo = [n for n in names if a.force or not _report_is_current(n, a.norm)]
        with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
            list(pool.map(lambda n: evaluate(n, a.threads, a.norm, a.device), todo))
    reports = write_docs()
    print(table_markdown(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
