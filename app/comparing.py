"""Glue for the Compare page: find robustness reports (``gccs_core.evaluate.load_report``), run a quick
``evaluate_robustness`` for models without one, and lay the numbers out for a table and curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app import loaders, registry, state
from app.registry import ModelEntry

QUICK_EPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
QUICK_ATTACKS = ("fgsm", "pgd-ce", "pgd-margin", "pgd-dlr")


def quick_n() -> int:
    return 40 if state.FAST else 300


def report_path(entry: ModelEntry) -> Path | None:
    """Where a model's report lives: ``pretrained/robustness/<name>*.json`` or ``<run folder>/robustness.json``."""
    if entry.source == "pretrained":
        folder = registry.pretrained_dir() / "robustness"
        hits = sorted(folder.glob(f"{entry.name}.json")) + sorted(folder.glob(f"{entry.name}-linf*.json"))
        return hits[0] if hits else None
    if entry.source == "user" and entry.path:
        p = Path(entry.path).parent / "robustness.json"
        return p if p.exists() else None
    return None


@st.cache_data(max_entries=32, show_spinner=False)
def _load(path: str, mtime: float) -> Any:
    from gccs_core.evaluate import load_report

    return load_report(path)


def reports_for(models: list[ModelEntry]) -> tuple[dict[str, dict[str, Any]], list[ModelEntry]]:
    """Reports by model key (files, then this session's evaluations) and the models that have none."""
    found, missing = {}, []
    session = st.session_state.setdefault("eval_reports", {})
    for m in models:
        path = report_path(m)
        rep = None
        if path is not None:
            try:
                rep = _load(str(path), path.stat().st_mtime)
            except (ValueError, OSError) as err:
                st.warning(f"Ignoring the unreadable report {path.name}: {err}")
        rep = rep or session.get(m.key)
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


def evaluate(entry: ModelEntry) -> Any:
    """Quick library evaluation of one model; saved next to a user model, kept in the session otherwise."""
    from gccs_core.evaluate import evaluate_robustness, save_report

    model = loaders.get_model(entry)
    data = loaders.get_dataset(entry.dataset)
    n = min(quick_n(), len(data))
    rep = evaluate_robustness(model, data.x[:n], data.y[:n], list(QUICK_EPS), steps=10, attacks=list(QUICK_ATTACKS),
                              min_l2=None, seed=0, model_info={"name": entry.name, "loss": entry.loss})
    st.session_state.setdefault("eval_reports", {})[entry.key] = rep
    if entry.source == "user" and entry.path:
        save_report(rep, Path(entry.path).parent / "robustness.json")
    return rep
