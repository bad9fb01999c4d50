"""The study's entry points: ``run_study`` (Python) and ``main`` (``python -m gccs_core.study``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from .config import StudyConfig
from .store import Store, StudyError

DEFAULT_OUT = Path("docs/study")
DEFAULT_WORK = Path("study")
"""Tracked in git: finished jobs and trained models travel with the repository, so a later session or
machine resumes the study where it stopped."""
DEFAULT_PRETRAINED = Path("pretrained/study")
DEFAULT_README = Path("README.md")


def run_study(cfg: StudyConfig, out: str | Path = DEFAULT_OUT, work: str | Path | None = None,
              pretrained: str | Path | None = None, workers: int = 1, ray_address: str | None = None,
              command: str = "python -m gccs_core.study run", max_jobs: int | None = None,
              log: Any = None, readme: str | Path | None = None,
              report_cfg: StudyConfig | None = None, kinds: tuple[str, ...] | None = None,
              arms: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Run (or resume) the study; outputs are rewritten after every finished job (and the study block of
    ``readme``, when given) from every finished job of ``report_cfg`` (default ``cfg``): a run of a few
    readings or seeds first leaves the report of the whole study in place; ``kinds``/``arms`` run only those jobs
    (and what they depend on) now. Returns the runner's counts."""
    from .plan import select_jobs
    from .results import write_outputs
    from .runner import _log, plan_jobs, run_jobs

    out_p = Path(out)
    work_p = Path(work) if work is not None else out_p / "work"
    pre_p = Path(pretrained) if pretrained is not None else out_p / "pretrained"
    if ray_address is not None:
        try:
            import ray  # noqa: F401
        except ImportError as err:
            raise StudyError("--ray needs the optional package ray; install it with: pip install 'ray[default]'") from err
    from .autoattack import require_pyautoattack

    require_pyautoattack()  # every plan has AutoAttack and FAB jobs: fail now, not hours later
    jobs = plan_jobs(cfg)
    report_cfg = report_cfg or cfg
    report_jobs = jobs if report_cfg == cfg else plan_jobs(report_cfg)
    if kinds is not None or arms is not None:
        jobs = select_jobs(jobs, kinds, arms)
    store = Store(work_p)
    store.open(cfg.to_dict())

    def refresh() -> None:
        write_outputs(report_cfg, report_jobs, store.finished(), work_p, out_p, pre_p, command,
                      Path(readme) if readme else None)

    refresh()  # the version check of every stored result happens here, before any work
    counts = run_jobs(jobs, store, workers, cfg.threads, ray_address, refresh, log or _log, max_jobs)
    refresh()
    return counts


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from err


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from err


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m gccs_core.study", description="The GCCS study (see docs/study.md).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_text in (("run", "run or resume the study"), ("plan", "list the jobs in run order, run nothing"),
                            ("report", "rewrite results.json and study.md from finished jobs, run nothing")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--quick", action="store_true", help="digits-sized version (the CI test, under 2 minutes)")
        p.add_argument("--out", default=None, help=f"results folder (default {DEFAULT_OUT})")
        p.add_argument("--work", default=None, help=f"models and job results (default {DEFAULT_WORK} with the default"
                       " --out, else OUT/work)")
        p.add_argument("--pretrained", default=None, help=f"seed-0 checkpoints (default {DEFAULT_PRETRAINED} with the"
                       " default --out, else OUT/pretrained)")
        p.add_argument("--ray", default=None, metavar="ADDRESS", help="run the jobs on this Ray cluster ('auto', host:port)")
        p.add_argument("--workers", type=int, default=1, help="jobs at once (local processes or Ray tasks)")
        p.add_argument("--threads", type=int, default=None, help="torch threads per job (default 1)")
        p.add_argument("--readings", default=None, help="comma-separated GCCS readings (default: all known)")
        p.add_argument("--seeds", type=_ints, default=None, help="comma-separated training seeds")
        p.add_argument("--n-eval", type=int, default=None, help="first N test digits for the protocols")
        p.add_argument("--n-autoattack", type=int, default=None, help="first N test digits for standard AutoAttack")
        p.add_argument("--epochs", type=int, default=None)
        p.add_argument("--eps", type=_floats, default=None, help="comma-separated L-inf radii")
        p.add_argument("--kinds", type=_names, default=None,
                       help="run only jobs of these kinds now, with what they need (e.g. strong,autoattack)")
        p.add_argument("--arms", type=_names, default=None,
                       help="run only jobs of these configurations now (e.g. ce-at-ce,gccs-s1-at-margin)")
        p.add_argument("--max-jobs", type=int, default=None, help="stop after this many jobs (the rest stay to resume)")
    return parser


def _config(args: argparse.Namespace) -> StudyConfig:
    cfg = StudyConfig.quick_config() if args.quick else StudyConfig.full()
    readings = tuple(r.strip() for r in args.readings.split(",")) if args.readings else None
    for name in ("n_eval", "n_autoattack", "epochs", "threads", "workers", "max_jobs"):
        v = getattr(args, name, None)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise StudyError(f"--{name.replace('_', '-')}={v!r} is invalid: it must be an integer >= 1.")
    if args.seeds is not None and any(s < 0 for s in args.seeds):
        raise StudyError(f"--seeds={args.seeds!r} is invalid: seeds must be integers >= 0.")
    if args.eps is not None and any(not 0 < e <= 1 for e in args.eps):
        raise StudyError(f"--eps={args.eps!r} is invalid: each radius must lie in (0, 1].")
    return cfg.with_overrides(readings=readings, seeds=args.seeds, n_eval=args.n_eval, n_autoattack=args.n_autoattack,
                              epochs=args.epochs, eps=args.eps, threads=args.threads)


def _report_config(args: argparse.Namespace, cfg: StudyConfig) -> StudyConfig:
    """What ``run`` reports on: with ``--readings``/``--seeds`` naming a subset of the study's, the whole study
    (those flags then only choose which jobs run now); otherwise the run's own configuration."""
    base = StudyConfig.quick_config() if args.quick else StudyConfig.full()
    whole = replace(cfg, readings=base.readings, seeds=base.seeds)
    subset = set(cfg.readings) <= set(whole.readings) and set(cfg.seeds) <= set(whole.seeds)
    return whole if subset else cfg


def _readme(args: argparse.Namespace) -> Path | None:
    """The README whose study block the default (full) study rewrites; other runs leave it alone."""
    return DEFAULT_README if args.out is None and not args.quick and DEFAULT_README.exists() else None


def _folders(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    out = Path(args.out) if args.out else DEFAULT_OUT
    default = args.out is None
    work = Path(args.work) if args.work else (DEFAULT_WORK if default else out / "work")
    pre = Path(args.pretrained) if args.pretrained else (DEFAULT_PRETRAINED if default else out / "pretrained")
    return out, work, pre


SCHEDULING_OPTIONS = ("--kinds", "--arms", "--workers", "--max-jobs", "--ray", "--threads")
"""Options that decide which jobs run now and where, not what the study is: left out of the recorded command."""


def reproduce_command(argv: Sequence[str]) -> str:
    """The command that reproduces (and resumes) the results these arguments write: ``run`` with the options that
    define the study, without the scheduling ones (a run of a few kinds on 1 worker writes the whole study's
    report, and the page should say how to get all of it, not how that runner was started)."""
    args = list(argv)
    if args and args[0] in ("run", "report", "plan"):
        args = args[1:]
    kept: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        name = a.split("=", 1)[0]
        if name in SCHEDULING_OPTIONS:
            i += 1 if "=" in a else 2
            continue
        kept.append(a)
        i += 1
    return "python -m gccs_core.study run" + "".join(" " + shlex.quote(a) for a in kept)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = reproduce_command(argv)
    try:
        cfg = _config(args)
        out, work, pre = _folders(args)
        if args.command == "plan":
            from .plan import select_jobs
            from .runner import plan_jobs

            done = Store(work).finished() if (work / "jobs").exists() else {}
            for j in select_jobs(plan_jobs(cfg), args.kinds, args.arms):
                print(f"{'done' if j.key in done else 'todo'}  {j.key}  tier {j.priority[0]}  {j.label}")
            return 0
        if args.command == "report":
            from .results import write_outputs
            from .runner import plan_jobs

            store = Store(work)
            write_outputs(cfg, plan_jobs(cfg), store.finished(), work, out, pre, command, _readme(args))
            return 0
        counts = run_study(cfg, out, work, pre, args.workers, args.ray, command, args.max_jobs, readme=_readme(args),
                           report_cfg=_report_config(args, cfg), kinds=args.kinds,
                           arms=args.arms)
    except (StudyError, ImportError, ValueError) as err:
        print(f"study: error: {err}", file=sys.stderr)
        return 2
    failed = counts["failed"]
    print(f"study: {counts['finished']}/{counts['total']} jobs finished ({counts['ran']} now), {len(failed)} failed")
    for key, why in failed.items():
        print(f"  failed {key}: {why}", file=sys.stderr)
    return 1 if failed else 0
