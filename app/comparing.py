"""Glue for the Compare page: find robustness reports (``gccs_core.evaluate.load_report``) per norm (L-inf in
``pretrained/robustness/``, L2 in ``pretrained/robustness/l2/``), run a quick ``evaluate_robustness`` for models
without one, lay the numbers out for a table and curves, and read the study's results
(``gccs_core.study_table``) for the weak / strong protocol readings with their intervals."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st

from app import loaders, registry, state
from app.registry import ModelEntry
from gccs_core import study_table

NORM_LABELS = {"linf": "L∞", "l2": "L2"}
PROTOCOL_HELP = {"weak": "2020-style: FGSM, PGD-40, MIM and targeted PGD on cross-entropy, CW-L2, Square on softmax",
                 "strong": "adaptive: PGD margin / DLR / latent, APGD, targeted margin PGD, transfer from the CE twin, "
                           "Square on the margin"}
"""What the study's protocols run (``gccs_core.study.protocols``)."""
QUICK_EPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
QUICK_EPS_L2 = (0.0, 0.5, 1.0, 1.5, 2.0)
STUDY_RESULTS = Path(__file__).resolve().parent.parent / "docs" / "study" / "results.json"
QUICK_ATTACKS = ("fgsm", "pgd-ce", "pgd-margin", "pgd-dlr")


def quick_n() -> int:
    return 40 if state.FAST else 300


def check_norm(norm: str) -> str:
    if norm not in NORM_LABELS:
        raise ValueError(f"norm={norm!r} is unknown; allowed: {', '.join(NORM_LABELS)}.")
    return norm


def report_path(entry: ModelEntry, norm: str = "linf") -> Path | None:
    """Where a model's report lives: ``pretrained/robustness/<name>*.json`` (L2: ``robustness/l2/``) or
    ``<run folder>/robustness.json`` (L2: ``robustness-l2.json``)."""
    check_norm(norm)
    if entry.source == "pretrained":
        folder = registry.pretrained_dir() / "robustness"
        if norm == "l2":
            folder = folder / "l2"
        hits = sorted(folder.glob(f"{entry.name}.json")) + sorted(folder.glob(f"{entry.name}-{norm}*.json"))
        return hits[0] if hits else None
    if entry.source == "user" and entry.path:
        p = Path(entry.path).parent / ("robustness.json" if norm == "linf" else f"robustness-{norm}.json")
        return p if p.exists() else None
    return None


@st.cache_data(max_entries=32, show_spinner=False)
def _load(path: str, mtime: float) -> Any:
    from gccs_core.evaluate import load_report

    return load_report(path)


def reports_for(models: list[ModelEntry], norm: str = "linf") -> tuple[dict[str, dict[str, Any]], list[ModelEntry]]:
    """Reports in ``norm`` by model key (files, then this session's evaluations) and the models that have none."""
    found, missing = {}, []
    session = st.session_state.setdefault("eval_reports", {})
    for m in models:
        path = report_path(m, norm)
        rep = None
        if path is not None:
            try:
                rep = _load(str(path), path.stat().st_mtime)
            except (ValueError, OSError) as err:
                st.warning(f"Ignoring the unreadable report {path.name}: {err}")
        if rep is not None and getattr(rep, "norm", norm) != norm:
            st.warning(f"Ignoring {path.name}: it is an {rep.norm} report, not {norm}.")
            rep = None
        rep = rep or session.get(_session_key(m.key, norm))
        if rep is None:
            missing.append(m)
        else:
            found[m.key] = {"label": f"{m.label} · {m.loss}", "report": rep}
    return found, missing


def table(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Rows (model, clean, worst case per eps) and worst-case curves; eps columns are the union over reports."""
    eps_all = sorted({float(r["eps"]) for item in reports.values() for r in item["report"].results})
    rows, curves = [], {}
    for item in reports.values():
        rep = item["report"]
        by_eps = {float(r["eps"]): r["worst_case"] for r in rep.results}
        row = {"model": item["label"], "clean": round(rep.clean_accuracy, 4), "n": rep.n}
        row.update({f"eps {e:g}": (round(by_eps[e], 4) if e in by_eps else None) for e in eps_all})
        row["flags"] = len(rep.flags)
        rows.append(row)
        curves[item["label"]] = [by_eps.get(e) for e in eps_all]
    return {"rows": rows, "eps": eps_all, "curves": curves}


def _session_key(key: str, norm: str) -> str:
    return key if norm == "linf" else f"{key}|{norm}"


def quick_eps(norm: str) -> tuple[float, ...]:
    return QUICK_EPS if check_norm(norm) == "linf" else QUICK_EPS_L2


def evaluate(entry: ModelEntry, norm: str = "linf") -> Any:
    """Quick library evaluation of one model in ``norm``; saved next to a user model, kept in the session otherwise."""
    from gccs_core.evaluate import evaluate_robustness, save_report

    model = loaders.get_model(entry)
    data = loaders.get_dataset(entry.dataset)
    n = min(quick_n(), len(data))
    rep = evaluate_robustness(model, data.x[:n], data.y[:n], list(quick_eps(norm)), norm=norm, steps=10,
                              attacks=list(QUICK_ATTACKS), min_l2=None, seed=0,
                              model_info={"name": entry.name, "loss": entry.loss})
    st.session_state.setdefault("eval_reports", {})[_session_key(entry.key, norm)] = rep
    if entry.source == "user" and entry.path:
        name = "robustness.json" if norm == "linf" else f"robustness-{norm}.json"
        save_report(rep, Path(entry.path).parent / name)
    return rep


# -- the study -------------------------------------------------------------------------------------


def study_path() -> Path:
    """The study's results file: ``GCCS_STUDY_RESULTS`` if set, else ``docs/study/results.json``."""
    return Path(os.environ.get("GCCS_STUDY_RESULTS") or STUDY_RESULTS)


@st.cache_data(max_entries=4, show_spinner=False)
def _study(path: str, mtime: float) -> dict[str, Any]:
    return study_table.load_results(path)


def study_results() -> dict[str, Any] | None:
    """The study's results (re-read when the file changes: the study writes it as it goes), None if absent."""
    path = study_path()
    if not path.exists():
        return None
    return _study(str(path), path.stat().st_mtime)


def missing_text(gone: dict[str, Any]) -> list[str]:
    """What the study has not delivered yet for this protocol and norm, as sentences."""
    lines = []
    if gone["arms"]:
        lines.append(f"No result yet for {len(gone['arms'])} of {len(gone['planned_arms'])} planned configurations: "
                     + ", ".join(gone["arms"]) + ".")
    if gone["seeds"]:
        by = {}
        for arm, seeds in gone["seeds"].items():
            by.setdefault(tuple(seeds), []).append(arm)
        for seeds, arms in by.items():
            lines.append(f"Seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} not evaluated yet for "
                         + ", ".join(arms) + f" (planned seeds: {', '.join(map(str, gone['planned_seeds']))}).")
    if gone["partial_n"]:
        ns = sorted(set(gone["partial_n"].values()))
        lines.append(f"Evaluated so far on the first {', '.join(map(str, ns))} of {gone['n_eval']} planned test digits.")
    return lines
