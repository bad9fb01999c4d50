"""Robustness evaluation: a suite of attacks per eps, the per-example worst case, and sanity flags.

Loading and evaluating are kept apart (as in RobustBench): ``evaluate_robustness`` takes a built
model in eval mode and tensors; ``evaluate_checkpoint`` loads a file and the data, then calls it;
files are touched only by ``save_report`` / ``load_report``.

The suite, run with the true labels on every clean-correct example:

* ``fgsm``; ``pgd-ce``, ``pgd-margin`` (ours, random start); ``pgd-latent`` for models with class
  centres (push z away from ``mu_y``); ``apgd-ce`` and ``apgd-dlr`` through ART. ``pgd-dlr`` and
  ``mim-margin`` can be added with ``attacks=``;
* ``pgd-margin-x2``, the convergence check: PGD-margin again with a fresh random start (so twice
  the restarts) on the examples PGD-margin did not break; its accuracy counts an example as robust
  only if both runs failed;
* ``square`` (ART, gradient-free), AutoAttack-style on the examples that survived every white-box
  attack (``square_on_all=True`` runs it on all and reports its own accuracy too);
* ``deepfool`` (ART, unbounded) on the first ``min_l2_n`` clean-correct examples: the median
  minimal L2 perturbation that changes the prediction (an upper bound on the true minimum).

An example is robust at eps only if it is classified correctly and *every* attack failed on it
(the per-example worst case, ``worst_case``). Accuracies are fractions of all n examples.

Sanity flags (Carlini et al. 2019; AutoAttack's checks), stored in the report and printed:

* ``not_near_zero_at_max_eps``: worst-case accuracy at the largest eps above ``NEAR_ZERO``
  (expected for adversarially trained models at moderate eps; suspicious otherwise);
* ``non_monotonic``: worst-case accuracy rises with eps;
* ``not_converged``: doubling PGD-margin's restarts lowers its accuracy by more than ``CONVERGENCE_TOL``;
* ``gradient_free_beats_white_box``: Square succeeds where every white-box attack failed (gradient masking);
* ``zero_gradients``: more than ``ZERO_GRAD_TOL`` of the inputs have an exactly zero CE input gradient.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._version import __version__
from .attacks import ATTACKS, NORMS, AttackSpec, check_finite_scores
from .files import file_sha256
from .models import model_device
from .validation import check_choice, check_int, check_number

REPORT_FORMAT = "gccs-robustness-report"
REPORT_VERSION = 1
NEAR_ZERO = 0.05
"""Worst-case accuracy at the largest eps above this raises ``not_near_zero_at_max_eps``."""
CONVERGENCE_TOL = 0.02
"""Doubling steps and restarts may move PGD's accuracy by at most 2 points."""
ZERO_GRAD_TOL = 0.05
"""At most 5% of inputs may have an exactly zero cross-entropy input gradient."""
DEEPFOOL_STEPS = 20
CW_STEPS = 20
DEFAULT_SQUARE_QUERIES = 300
DEFAULT_MIN_L2_N = 100


@dataclass(frozen=True)
class SuiteAttack:
    """One attack of the suite: a label, the attack, its objective, steps and restarts."""

    label: str
    attack: str
    objective: str = "ce"
    steps: int = 20
    restarts: int = 1

    def params(self) -> dict[str, Any]:
        return asdict(self)


def default_suite(steps: int = 20, restarts: int = 1, latent: bool = False) -> list[SuiteAttack]:
    """The white-box bounded attacks of one evaluation; ``latent`` adds latent-space PGD (models with centres)."""
    suite = [
        SuiteAttack("fgsm", "fgsm", "ce", 1, 1),
        SuiteAttack("pgd-ce", "pgd", "ce", steps, restarts),
        SuiteAttack("pgd-margin", "pgd", "margin", steps, restarts),
    ]
    if latent:
        suite.append(SuiteAttack("pgd-latent", "pgd", "latent", steps, restarts))
    suite.append(SuiteAttack("apgd-ce", "apgd-ce", "ce", steps, restarts))
    suite.append(SuiteAttack("apgd-dlr", "apgd-dlr", "dlr", steps, restarts))
    return suite


OPTIONAL_ATTACKS = {"pgd-dlr": ("pgd", "dlr"), "mim-margin": ("mim", "margin")}
SUITE_LABELS = ("fgsm", "pgd-ce", "pgd-margin", "pgd-latent", "apgd-ce", "apgd-dlr", "pgd-dlr", "mim-margin",
                "pgd-margin-x2", "square")
"""Every attack label ``attacks=`` accepts (the default runs all but the optional pgd-dlr and mim-margin)."""


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
    """Write the report as JSON (one file per model and threat model)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
    return p


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


def parse_eps_list(text: str | Sequence[float]) -> list[float]:
    """``"0.05,0.1"`` or a sequence -> sorted unique floats, each finite and >= 0."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        try:
            v = float(item)
        except (TypeError, ValueError, OverflowError) as err:  # OverflowError: an int too big for a float
            raise ValueError(f"eps value {item!r} is not a number; give comma-separated numbers >= 0.") from err
        out.append(check_number("eps", v, 0.0))
    if not out:
        raise ValueError("eps list is empty; give at least one value >= 0.")
    return sorted(set(out))


# -- helpers ---------------------------------------------------------------------------------


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = model_device(model)
    return torch.cat([model(x[i : i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(x), batch_size)])


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of inputs whose cross-entropy input gradient is exactly zero (CE saturation, gradient masking)."""
    dev = model_device(model)
    zero = 0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(dev).requires_grad_(True)
        loss = F.cross_entropy(model(xb), y[i : i + batch_size].to(dev), reduction="sum")
        (g,) = torch.autograd.grad(loss, xb)
        zero += int((g.flatten(1).abs().amax(1) == 0).sum())
    return zero / max(1, len(x))


def _run_suite_attack(model: nn.Module, spec: SuiteAttack, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str,
                      seed: int, batch_size: int) -> torch.Tensor:
    """Success mask (N,) of one bounded attack on (x, y), batched."""
    out = []
    for i in range(0, len(x), batch_size):
        attack = AttackSpec(spec.attack, eps, spec.steps, norm, spec.objective, restarts=spec.restarts, seed=seed + i)
        out.append(ATTACKS[attack.attack](model, x[i : i + batch_size], y[i : i + batch_size], attack,
                                          early_stop=True).success)
    return torch.cat(out)


def _min_perturbation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, seed: int,
                      batch_size: int) -> torch.Tensor:
    """Per-example L2 size of a minimal-perturbation attack (DeepFool or CW); ``inf`` where it failed."""
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        spec = AttackSpec(attack, 0.0, DEEPFOOL_STEPS if attack == "deepfool" else CW_STEPS, "l2", seed=seed + i)
        res = ATTACKS[attack](model, xb, yb, spec)
        d = (res.x_adv - xb.cpu()).flatten(1).norm(dim=1)
        out.append(torch.where(res.success, d, torch.full_like(d, float("inf"))))
    return torch.cat(out)


# -- the evaluation --------------------------------------------------------------------------


def evaluate_robustness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_list: Sequence[float],
    norm: str = "linf",
    steps: int = 20,
    restarts: int = 1,
    square_queries: int = DEFAULT_SQUARE_QUERIES,
    square_on_all: bool = False,
    apgd_on_all: bool = True,
    attacks: Sequence[str] | None = None,
    min_l2: str | None = "deepfool",
    min_l2_n: int = DEFAULT_MIN_L2_N,
    seed: int = 0,
    batch_size: int = 500,
    progress: bool | Callable[[int, int, str], None] = False,
    model_info: dict[str, Any] | None = None,
) -> RobustnessReport:
    """Evaluate ``model`` on (x, y) at every eps; returns a ``RobustnessReport``.

    Args:
        model: a ``LatentClassifier`` in eval mode (a model in training mode is refused: batch norm
            would change the numbers). It is left in eval mode.
        x, y: inputs (N, C, H, W) in [0, 1] and true labels (N,).
        eps_list: threat radii (each >= 0); ``norm`` is ``linf`` or ``l2``.
        steps, restarts: of the iterative attacks (the ``pgd-margin-x2`` check doubles the restarts).
        square_queries: iterations of the gradient-free Square attack; ``square_on_all`` runs it on
            every clean-correct example instead of only the white-box survivors.
        apgd_on_all: run APGD-CE/DLR on every clean-correct example (their own accuracy is reported);
            False runs them, AutoAttack-style, only on the examples our attacks did not break (the
            worst case is the same, the cost much lower; the row then holds ``apgd-ce_extra``, the
            number of examples APGD broke that nothing before it had).
        attacks: subset of ``SUITE_LABELS`` to run (default: all but the optional ones that apply).
        min_l2: ``deepfool``, ``cw`` or ``both`` for the median minimal L2 perturbation (on the first
            ``min_l2_n`` clean-correct examples), or None. CW (ART) is slow on a CPU.
        progress: True for a tqdm bar on stderr, or a callback ``(done, total, label)``.
        model_info: recorded in the report (checkpoint path, sha256, loss ...).
    """
    if getattr(model, "training", False):
        raise ValueError("model is in training mode; call model.eval() before evaluating (batch norm would change the results).")
    check_choice("norm", norm, NORMS)
    check_int("steps", steps, 1)
    check_int("restarts", restarts, 1)
    check_int("square_queries", square_queries, 1)
    check_int("min_l2_n", min_l2_n, 1)
    check_int("seed", seed, 0)
    check_int("batch_size", batch_size, 1)
    eps_values = parse_eps_list(list(eps_list))
    if min_l2 not in (None, "deepfool", "cw", "both"):
        raise ValueError(f"min_l2={min_l2!r} is unknown; allowed: deepfool, cw, both or None.")
    if not torch.is_tensor(x) or x.dim() != 4 or not torch.is_tensor(y) or y.shape != (x.shape[0],):
        raise ValueError(f"expected x (N, C, H, W) and y (N,); got {tuple(getattr(x, 'shape', ()))} and "
                         f"{tuple(getattr(y, 'shape', ()))}.")
    if x.shape[0] < 1:
        raise ValueError("no examples to evaluate (n=0).")
    k = int(model.num_classes)  # type: ignore[attr-defined]
    y = y.to(torch.long).cpu()
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(f"labels must lie in 0..{k - 1}; got values in [{int(y.min())}, {int(y.max())}].")
    has_centres = model.centers is not None  # type: ignore[attr-defined]
    suite = default_suite(steps, restarts, latent=has_centres)
    run_x2 = run_square = True
    if attacks is not None:
        attacks = list(attacks)
        bad = [a for a in attacks if a not in SUITE_LABELS]
        if bad:
            raise ValueError(f"unknown attack(s) {', '.join(map(repr, bad))}; allowed: {', '.join(SUITE_LABELS)}.")
        if "pgd-latent" in attacks and not has_centres:
            raise ValueError("attack 'pgd-latent' needs a model with class centres (gccs, mmc, center).")
        extra = [SuiteAttack(lb, *OPTIONAL_ATTACKS[lb], steps, restarts) for lb in attacks if lb in OPTIONAL_ATTACKS]
        suite = [s for s in suite if s.label in attacks] + extra
        run_x2 = "pgd-margin-x2" in attacks
        run_square = "square" in attacks
        if run_x2 and "pgd-margin" not in attacks:
            raise ValueError("attack 'pgd-margin-x2' checks 'pgd-margin'; select both.")
    x2_spec = SuiteAttack("pgd-margin-x2", "pgd", "margin", steps, restarts)
    square_spec = SuiteAttack("square", "square", "margin", square_queries, 1)

    x = x.detach().cpu().float()
    t0 = time.perf_counter()
    n = len(y)
    min_l2_attacks = [] if min_l2 is None else (["deepfool", "cw"] if min_l2 == "both" else [min_l2])
    total = 1 + len(min_l2_attacks) + len(eps_values) * (len(suite) + run_x2 + run_square)
    bar = None
    if progress is True:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=total, unit="attack", dynamic_ncols=True, file=sys.stderr)
    done = 0

    def tick(label: str) -> None:
        nonlocal done
        done += 1
        if bar is not None:
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)
        elif callable(progress):
            progress(done, total, label)

    results: list[dict[str, Any]] = []
    flags: list[dict[str, Any]] = []
    try:
        check_finite_scores(model, x, batch_size)  # NaN/inf scores: report it instead of meaningless accuracies
        pred = _predict(model, x, batch_size)
        correct = pred == y
        clean_acc = int(correct.sum()) / n
        idx = torch.nonzero(correct).squeeze(1)
        xc, yc = x[idx], y[idx]
        zero_frac = zero_gradient_fraction(model, x, y, batch_size)
        tick("clean")

        n_l2 = min(min_l2_n, len(idx))
        l2_best = torch.full((n_l2,), float("inf"))
        for name in min_l2_attacks:
            if n_l2:
                l2_best = torch.minimum(l2_best, _min_perturbation(model, xc[:n_l2], yc[:n_l2], name, seed, batch_size))
                model.eval()
            tick(name)

        none = torch.zeros(len(idx), dtype=torch.bool)
        for eps in eps_values:
            attackable = len(idx) > 0 and eps > 0
            row: dict[str, Any] = {"eps": eps}
            broken = none.clone()
            for spec in suite:
                if spec.attack.startswith("apgd") and not apgd_on_all:  # AutoAttack-style: only the survivors so far
                    todo = torch.nonzero(~broken).squeeze(1)
                    succ = none.clone()
                    if attackable and len(todo):
                        succ[todo] = _run_suite_attack(model, spec, xc[todo], yc[todo], eps, norm, seed, batch_size)
                    row[f"{spec.label}_extra"] = int((succ & ~broken).sum())
                else:
                    succ = _run_suite_attack(model, spec, xc, yc, eps, norm, seed, batch_size) if attackable else none
                    row[spec.label] = int((~succ).sum()) / n
                model.eval()
                broken |= succ
                if spec.label == "pgd-margin" and run_x2:
                    todo = torch.nonzero(~succ).squeeze(1)
                    more = none.clone()
                    if attackable and len(todo):
                        more[todo] = _run_suite_attack(model, x2_spec, xc[todo], yc[todo], eps, norm, seed + 7919,
                                                       batch_size)
                    model.eval()
                    row["pgd-margin-x2"] = int((~(succ | more)).sum()) / n
                    row["doubling_change"] = row["pgd-margin"] - row["pgd-margin-x2"]
                    broken |= more
                    if row["doubling_change"] > CONVERGENCE_TOL:
                        flags.append({"code": "not_converged", "eps": eps,
                                      "message": f"eps={eps:g}: doubling the PGD-margin restarts lowered its "
                                                 f"accuracy by {100 * row['doubling_change']:.1f} points "
                                                 f"(> {100 * CONVERGENCE_TOL:g}); use more steps/restarts."})
                    tick(f"eps={eps:g} pgd-margin-x2")
                tick(f"eps={eps:g} {spec.label}")
            row["white_box_worst_case"] = int((~broken).sum()) / n
            if run_square:
                todo = torch.arange(len(idx)) if square_on_all else torch.nonzero(~broken).squeeze(1)
                sq = none.clone()
                if attackable and len(todo):
                    sq[todo] = _run_suite_attack(model, square_spec, xc[todo], yc[todo], eps, norm, seed, batch_size)
                model.eval()
                if square_on_all:
                    row["square"] = int((~sq).sum()) / n
                free_only = int((sq & ~broken).sum())
                row["square_only"] = free_only
                broken |= sq
                if free_only > 0:
                    flags.append({"code": "gradient_free_beats_white_box", "eps": eps,
                                  "message": f"eps={eps:g}: Square succeeded on {free_only} example(s) where every "
                                             f"white-box attack failed (possible gradient masking)."})
                tick(f"eps={eps:g} square")
            row["worst_case"] = int((~broken).sum()) / n
            results.append(row)
    finally:
        model.eval()
        if bar is not None:
            bar.close()

    flags += report_level_flags(results, zero_frac)

    median_l2 = success_rate = None
    if min_l2_attacks and n_l2:
        success_rate = int(torch.isfinite(l2_best).sum()) / n_l2
        med = float(l2_best.median())  # failures count as inf, so this is the true median when success >= 50%
        median_l2 = med if math.isfinite(med) else None
    attack_params: dict[str, dict[str, Any]] = {}
    for spec in suite + ([x2_spec] if run_x2 else []) + ([square_spec] if run_square else []):
        prm = spec.params()
        if spec.attack == "fgsm":
            prm.update(step_size="eps", random_start=False)
        elif spec.attack in ("pgd", "mim"):
            prm.update(step_size="2.5*eps/steps", random_start=spec.attack == "pgd", best_iterate=True)
        elif spec.attack.startswith("apgd"):
            prm.update(step_size="2*eps (adaptive)", library="ART", on="all clean-correct" if apgd_on_all else "survivors")
        elif spec.attack == "square":
            prm.update(library="ART", p_init=0.8, on="all clean-correct" if square_on_all else "white-box survivors")
        if spec.label == "pgd-margin-x2":
            prm.update(on="pgd-margin survivors", seed_offset=7919)
        attack_params[spec.label] = prm
    return RobustnessReport(
        norm=norm, eps=eps_values, n=n, seed=seed, clean_accuracy=clean_acc, results=results, attacks=attack_params,
        median_min_l2=median_l2, min_l2_attack="+".join(min_l2_attacks) if min_l2_attacks else None,
        min_l2_success_rate=success_rate, min_l2_n=n_l2 if min_l2_attacks else 0, zero_grad_fraction=zero_frac,
        flags=flags, elapsed_s=time.perf_counter() - t0, model=dict(model_info or {}), versions=_versions(),
    )


PER_EPS_FLAGS = ("gradient_free_beats_white_box", "not_converged")


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


def _versions() -> dict[str, str]:
    out = {"gccs_core": __version__, "torch": torch.__version__}
    try:  # read the installed version without importing ART (its import costs ~150 MB and pulls in numba)
        from importlib.metadata import PackageNotFoundError, version

        out["adversarial-robustness-toolbox"] = version("adversarial-robustness-toolbox")
    except PackageNotFoundError:  # pragma: no cover
        pass
    return out


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    eps_list: Sequence[float],
    norm: str = "linf",
    n: int = 500,
    split: str = "test",
    dataset: str | None = None,
    data_root: str | None = None,
    device: str = "auto",
    **kwargs: Any,
) -> RobustnessReport:
    """Load a checkpoint and the first ``n`` examples of its dataset's split, then ``evaluate_robustness``.

    ``device``: auto (cuda, then mps, then cpu), cpu, cuda or mps; the attacks run where the model is.
    """
    from .checkpoint import load_model_with_metadata, resolve_checkpoint
    from .data import load_dataset
    from .train import resolve_device

    check_int("n", n, 1)
    path = resolve_checkpoint(checkpoint)
    model, meta = load_model_with_metadata(path)
    ds_name = dataset or meta.get("dataset")
    if not ds_name:
        raise ValueError(f"{path}: the checkpoint does not record its dataset; pass dataset=... (--dataset).")
    ds = load_dataset(ds_name, split, data_root, limit=n)
    info = {"checkpoint": str(checkpoint), "sha256": file_sha256(path), "dataset": ds_name, "split": split,
            "loss": model.spec.loss, "encoder": model.spec.encoder, "latent_dim": model.spec.latent_dim,
            "adv_train": bool((meta.get("config") or {}).get("adv_train", False)),
            "checkpoint_library_version": meta.get("library_version")}
    dev = resolve_device(device)
    info["device"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    model.to(dev).eval()
    return evaluate_robustness(model, ds.x, ds.y, eps_list, norm=norm, model_info=info, **kwargs)
