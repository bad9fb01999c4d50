"""The study's results (``docs/study/results.json``) as tables with confidence intervals, torch-free.

``readings_table`` gives one row per configuration (arm) and eps for one protocol and norm: the robust
accuracy averaged over the seeds found, with the study's own two-level bootstrap interval (seeds x test
examples, ``gccs_core.stats.bootstrap_mean``, stored in the results' summary) or, where the summary lacks
that cell or its bootstrap is degenerate (every example robust, or none: a zero-width interval), a Wilson
score interval on the pooled counts (``wilson_interval``). ``missing`` says what the
study planned and has not delivered yet (configurations, seeds); ``attack_breaks`` is one model's
per-attack table (which attack broke how many examples first). Nothing here is made up: a reading that
is not in the file is reported missing, never filled in.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import fields
from pathlib import Path
from statistics import NormalDist
from typing import Any

from .stats import DEFAULT_LEVEL, Interval

RESULTS_FORMAT = "gccs-study"
PROTOCOLS = ("weak", "strong")
"""The two protocols of the comparison: 2020-style (FGSM/PGD with cross-entropy) and adaptive (margin, DLR,
APGD, targeted, Square)."""
NORMS = ("linf", "l2")
ROW_KEYS = ("reading", "loss", "sigma", "seed", "protocol", "norm", "eps", "robust", "n", "clean", "attacks")


def wilson_interval(successes: int, n: int, level: float = DEFAULT_LEVEL) -> Interval:
    """Wilson score interval of a proportion ``successes / n`` (one seed: the examples are the only sampling)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is invalid: it must be an integer >= 1.")
    if isinstance(successes, bool) or not isinstance(successes, int) or not 0 <= successes <= n:
        raise ValueError(f"successes={successes!r} is invalid: it must be an integer in 0..{n}.")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} is invalid: it must lie strictly between 0 and 1.")
    zq = NormalDist().inv_cdf((1 + level) / 2)
    p = successes / n
    den = 1 + zq * zq / n
    mid = (p + zq * zq / (2 * n)) / den
    half = zq * math.sqrt(p * (1 - p) / n + zq * zq / (4 * n * n)) / den
    low = 0.0 if successes == 0 else max(0.0, mid - half)  # exact ends: no rounding residue at 0 or n
    high = 1.0 if successes == n else min(1.0, mid + half)
    return Interval(p, low, high, level, 1, n)


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a study results file; one that is not one (wrong format, no rows, a row missing a field) is refused."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable study results file ({err}).") from err
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: a study results file holds {{'rows': [...], 'summary': ...}}; this one does not.")
    if data.get("format", RESULTS_FORMAT) != RESULTS_FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}; expected {RESULTS_FORMAT!r}.")
    for i, row in enumerate(data["rows"]):
        lacking = [k for k in ROW_KEYS if not isinstance(row, dict) or k not in row]
        if lacking:
            raise ValueError(f"{path}: row {i} lacks {', '.join(lacking)}.")
    return data


def _check(protocol: str, norm: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is unknown; allowed: {', '.join(PROTOCOLS)}.")
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is unknown; allowed: {', '.join(NORMS)}.")


def arm_of(row: dict[str, Any]) -> str:
    """A row's configuration name (``arm``; rebuilt from loss, sigma and adversarial training if absent)."""
    if row.get("arm"):
        return str(row["arm"])
    base = row["loss"] if row.get("sigma") is None else f"{row['loss']}-s{float(row['sigma']):g}"
    return base if not row.get("adv_train") else f"{base}-at-{row['adv_train']}"


def _cells(results: dict[str, Any]) -> dict[tuple[str, str, float], dict[str, Any]]:
    summary = results.get("summary") or {}
    return {(c["arm"], c["protocol"], float(c["eps"])): c for c in summary.get("cells", [])
            if isinstance(c, dict) and {"arm", "protocol", "eps", "robust"} <= set(c)}


def readings_table(results: dict[str, Any], protocol: str, norm: str = "linf") -> list[dict[str, Any]]:
    """One row per configuration and eps of ``protocol`` / ``norm``: mean robust accuracy over the seeds found
    and its interval (``low``, ``high``, ``interval`` names the method); sorted by configuration, then eps."""
    _check(protocol, norm)
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in results["rows"]:
        if row["protocol"] == protocol and row.get("norm", "linf") == norm:
            groups.setdefault((arm_of(row), float(row["eps"])), []).append(row)
    cells = _cells(results)
    table = []
    for (arm, eps), rows in sorted(groups.items()):
        seeds = sorted({int(r["seed"]) for r in rows})
        cell = cells.get((arm, protocol, eps))
        ci = None if cell is None or sorted(cell.get("seeds", [])) != seeds else cell["robust"]
        if ci is not None and ci["high"] > ci["low"]:
            estimate, low, high, n, how = ci["estimate"], ci["low"], ci["high"], int(cell["n"]), "bootstrap"
            level = float(ci.get("level", DEFAULT_LEVEL))
        else:  # no bootstrap cell, or a degenerate one (every example 0 or every example 1): Wilson on the counts
            k = sum(round(float(r["robust"]) * int(r["n"])) for r in rows)
            w = wilson_interval(int(k), int(sum(int(r["n"]) for r in rows)))
            estimate, low, high, n, level = w.estimate, w.low, w.high, int(rows[0]["n"]), w.level
            how = "Wilson" if ci is None else "Wilson (bootstrap degenerate)"
        first = rows[0]
        table.append({"arm": arm, "reading": first["reading"], "loss": first["loss"], "sigma": first["sigma"],
                      "adv_train": first.get("adv_train", False), "protocol": protocol, "norm": norm, "eps": eps,
                      "robust": float(estimate), "low": float(low), "high": float(high), "level": level,
                      "interval": how, "seeds": seeds, "n": n,
                      "clean": float(sum(float(r["clean"]) for r in rows) / len(rows)),
                      "models": sorted({str(r.get("model", f"{arm}-seed{r['seed']}")) for r in rows})})
    return table


def planned(results: dict[str, Any]) -> dict[str, Any]:
    """The configurations and seeds the study's settings plan (``gccs_core.study.config``), or ``{}`` if unknown."""
    from .study.config import StudyConfig, at_arms, plain_arms

    settings = results.get("settings")
    if not isinstance(settings, dict):
        return {}
    names = {f.name for f in fields(StudyConfig)}
    cfg = StudyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in names})
    arms = plain_arms(cfg, tuple(cfg.readings)) + (at_arms(cfg, tuple(cfg.readings)) if cfg.at_arm else [])
    norms = settings.get("norms") or [settings.get("norm", "linf")]  # the study's results are L-inf unless it says
    return {"dataset": cfg.dataset, "arms": [a.name for a in arms], "seeds": [int(s) for s in cfg.seeds],
            "eps": [float(e) for e in cfg.eps], "n_eval": int(cfg.n_eval), "norms": [str(n) for n in norms]}


def missing(results: dict[str, Any], protocol: str, norm: str = "linf") -> dict[str, Any]:
    """What the plan holds and ``protocol`` / ``norm`` lacks so far: ``arms`` without any result, ``seeds``
    (arm -> planned seeds not evaluated yet), ``partial_n`` (arm -> examples evaluated, when fewer than planned).
    ``norm_planned`` is False for a norm the study does not evaluate (then nothing counts as missing)."""
    _check(protocol, norm)
    plan = planned(results)
    have: dict[str, set[int]] = {}
    n_by_arm: dict[str, int] = {}
    for row in results["rows"]:
        if row["protocol"] == protocol and row.get("norm", "linf") == norm:
            arm = arm_of(row)
            have.setdefault(arm, set()).add(int(row["seed"]))
            n_by_arm[arm] = min(n_by_arm.get(arm, int(row["n"])), int(row["n"]))
    norm_planned = norm in plan.get("norms", [norm]) or bool(have)
    arms = plan.get("arms", sorted(have)) if norm_planned else []
    seeds = plan.get("seeds", [])
    n_eval = plan.get("n_eval")
    return {"arms": [a for a in arms if a not in have],
            "seeds": {a: [s for s in seeds if s not in have[a]] for a in arms if a in have and set(seeds) - have[a]},
            "partial_n": {a: n for a, n in n_by_arm.items() if n_eval and n < n_eval},
            "planned_arms": arms, "planned_seeds": seeds, "n_eval": n_eval, "norm_planned": norm_planned}


def attack_breaks(results: dict[str, Any], model: str, protocol: str) -> list[dict[str, Any]]:
    """One model's per-attack table under ``protocol``: per eps, the robust accuracy and how many examples each
    attack of the suite broke first (``first_break``, in suite order). Empty if the model has no such row."""
    _check(protocol, "linf")
    out = []
    for row in sorted((r for r in results["rows"] if r.get("model") == model and r["protocol"] == protocol),
                      key=lambda r: (r.get("norm", "linf"), float(r["eps"]))):
        first = row.get("first_break", {})
        line = {"norm": row.get("norm", "linf"), "eps": float(row["eps"]), "n": int(row["n"]),
                "clean": float(row["clean"]), "robust": float(row["robust"])}
        line.update({f"broken first by {a}": int(first.get(a, 0)) for a in row["attacks"]})
        out.append(line)
    return out


def study_models(results: dict[str, Any], protocol: str) -> list[str]:
    """Names of the models with at least one row under ``protocol``, sorted."""
    _check(protocol, "linf")
    return sorted({str(r["model"]) for r in results["rows"] if r["protocol"] == protocol and r.get("model")})
