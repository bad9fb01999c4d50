"""The robustness report: one JSON file per model and threat model, and the flags that look across eps.

A format like a checkpoint: written by ``evaluate`` (atomically, since the app writes reports next to
user models while other sessions read them), read by the app and ``scripts/benchmark_robustness.py``
without running anything. Torch-free.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .files import atomic_write_text

REPORT_FORMAT = "gccs-robustness-report"
REPORT_VERSION = 1
NEAR_ZERO = 0.05
"""Worst-case accuracy at the largest eps above this raises ``not_near_zero_at_max_eps``."""
CONVERGENCE_TOL = 0.02
"""Doubling steps and restarts may move PGD's accuracy by at most 2 points."""
ZERO_GRAD_TOL = 0.05
"""At most 5% of inputs may have an exactly zero cross-entropy input gradient."""
PER_EPS_FLAGS = ("gradient_free_beats_white_box", "not_converged")
"""Flags raised while attacking at one eps; the others (``report_level_flags``) look at the whole report."""


@dataclass
class RobustnessReport:
    """Everything one evaluation found; ``to_dict`` is the JSON layout (accuracies are fractions)."""

    norm: str
    eps: list[float]
    n: int
    seed: int
    clean_accuracy: float
    results: list[dict[str, Any]]  # per eps: {"eps", <attack>: acc, ..., "worst_case", ...}
    attacks: dict[str, dict[str, Any]]  # label -> parameters
    median_min_l2: float | None
    min_l2_attack: str | None
    min_l2_success_rate: float | None
    min_l2_n: int
    zero_grad_fraction: float
    flags: list[dict[str, Any]]
    elapsed_s: float
    model: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def worst_case(self) -> list[float]:
        """Worst-case robust accuracy per eps, in the order of ``eps``."""
        return [r["worst_case"] for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {"format": REPORT_FORMAT, "format_version": REPORT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobustnessReport:
        if d.get("format") != REPORT_FORMAT:
            raise ValueError(f"not a robustness report: format={d.get('format')!r}, expected {REPORT_FORMAT!r}.")
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})

    def summary(self) -> str:
        """Human-readable table plus flags (what the CLI prints)."""
        labels = [lb for lb in self.attacks if any(lb in r for r in self.results)]
        head = f"{'eps':>6} " + " ".join(f"{lb:>13}" for lb in labels) + f" {'worst_case':>11}"
        lines = [f"clean accuracy {self.clean_accuracy:.4f} on n={self.n} ({self.norm})", head]
        for r in self.results:
            vals = " ".join(f"{r[lb]:>13.4f}" if lb in r else f"{'-':>13}" for lb in labels)
            lines.append(f"{r['eps']:>6g} {vals} {r['worst_case']:>11.4f}")
        if self.median_min_l2 is not None:
            lines.append(f"median minimal L2 perturbation ({self.min_l2_attack}): {self.median_min_l2:.4f} "
                         f"(success {self.min_l2_success_rate:.3f})")
        lines.append(f"zero CE input gradients: {self.zero_grad_fraction:.4f} of inputs")
        if self.flags:
            lines.append("sanity flags:")
            lines += [f"  [{f['code']}] {f['message']}" for f in self.flags]
        else:
            lines.append("sanity flags: none")
        return "\n".join(lines)


def save_report(report: RobustnessReport, path: str | os.PathLike) -> Path:
    """Write the report as JSON (one file per model and threat model), atomically."""
    return atomic_write_text(path, json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")


def load_report(path: str | os.PathLike) -> RobustnessReport:
    """Read a report written by ``save_report``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"robustness report {str(path)!r} does not exist.")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p}: not valid JSON ({err}).") from err
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a robustness report must be a JSON object.")
    return RobustnessReport.from_dict(data)


def not_converged_flag(eps: float, change: float) -> dict[str, Any] | None:
    """The ``not_converged`` flag when doubling PGD-margin's restarts lowered its accuracy by more than the tolerance."""
    if change <= CONVERGENCE_TOL:
        return None
    return {"code": "not_converged", "eps": eps,
            "message": f"eps={eps:g}: doubling the PGD-margin restarts lowered its accuracy by {100 * change:.1f} points "
                       f"(> {100 * CONVERGENCE_TOL:g}); use more steps/restarts."}


def gradient_masking_flag(eps: float, free_only: int) -> dict[str, Any] | None:
    """The ``gradient_free_beats_white_box`` flag when Square broke examples every white-box attack missed."""
    if free_only <= 0:
        return None
    return {"code": "gradient_free_beats_white_box", "eps": eps,
            "message": f"eps={eps:g}: Square succeeded on {free_only} example(s) where every "
                       f"white-box attack failed (possible gradient masking)."}


def report_level_flags(results: list[dict[str, Any]], zero_frac: float) -> list[dict[str, Any]]:
    """The flags that look across eps (monotonicity, the largest eps) or at the whole model (zero gradients)."""
    flags: list[dict[str, Any]] = []
    worst = [r["worst_case"] for r in results]
    for a, b, r in zip(worst, worst[1:], results[1:]):
        if b > a + 1e-9:
            flags.append({"code": "non_monotonic", "eps": r["eps"],
                          "message": f"worst-case accuracy rises from {a:.4f} to {b:.4f} at eps={r['eps']:g}."})
    if results and results[-1]["eps"] > 0 and worst[-1] > NEAR_ZERO:
        flags.append({"code": "not_near_zero_at_max_eps", "eps": results[-1]["eps"],
                      "message": f"worst-case accuracy {worst[-1]:.4f} at the largest eps={results[-1]['eps']:g} is above "
                                 f"{NEAR_ZERO:g}: expected for an adversarially trained model at moderate eps, otherwise "
                                 f"a sign of a too-weak attack."})
    if zero_frac > ZERO_GRAD_TOL:
        flags.append({"code": "zero_gradients", "eps": None,
                      "message": f"{100 * zero_frac:.1f}% of inputs have an exactly zero cross-entropy input gradient "
                                 f"(> {100 * ZERO_GRAD_TOL:g}%): CE saturates; trust the margin/DLR/latent attacks."})
    return flags


def merge_reports(parts: Sequence[RobustnessReport]) -> RobustnessReport:
    """One report from runs of the same model and settings at disjoint eps (run in parallel to save wall time).

    Every eps is evaluated independently (same examples, same seeds), so the merged report equals a
    single run over all eps. The median minimal L2 comes from the part that computed it.
    """
    if not parts:
        raise ValueError("merge_reports needs at least one report.")
    first = parts[0]
    for p in parts[1:]:
        same = (p.n, p.seed, p.norm, p.clean_accuracy, p.model.get("sha256")) == (
            first.n, first.seed, first.norm, first.clean_accuracy, first.model.get("sha256"))
        if not same:
            raise ValueError("reports to merge differ in n, seed, norm, clean accuracy or checkpoint.")
    rows = sorted((r for p in parts for r in p.results), key=lambda r: r["eps"])
    eps = [r["eps"] for r in rows]
    if len(set(eps)) != len(eps):
        raise ValueError(f"reports to merge overlap in eps: {eps}.")
    l2 = next((p for p in parts if p.min_l2_attack), first)
    attacks = {k: v for p in parts for k, v in p.attacks.items()}
    flags = [f for p in parts for f in p.flags if f["code"] in PER_EPS_FLAGS]
    flags += report_level_flags(rows, first.zero_grad_fraction)
    return RobustnessReport(
        norm=first.norm, eps=eps, n=first.n, seed=first.seed, clean_accuracy=first.clean_accuracy, results=rows,
        attacks=attacks, median_min_l2=l2.median_min_l2, min_l2_attack=l2.min_l2_attack,
        min_l2_success_rate=l2.min_l2_success_rate, min_l2_n=l2.min_l2_n, zero_grad_fraction=first.zero_grad_fraction,
        flags=flags, elapsed_s=sum(p.elapsed_s for p in parts), model=dict(first.model), versions=dict(first.versions),
    )
