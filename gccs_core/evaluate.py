"""Robustness evaluation: a suite of attacks per eps, the per-example worst case, and sanity flags.

Loading and evaluating are kept apart (as in RobustBench): ``evaluate_robustness`` takes a built
model in eval mode and tensors; ``evaluate_checkpoint`` loads a file and the data, then calls it;
files are touched only by ``save_report`` / ``load_report``.

The suite (every bounded attack runs on every clean-correct example, with the true labels):

* ``fgsm``; ``pgd-ce``, ``pgd-margin``, ``pgd-dlr`` (ours, random start); ``pgd-latent`` for models
  with class centres (push z away from ``mu_y``); ``pgd-margin-x2`` (twice the steps, two
  restarts: the convergence check);
* ``apgd-ce``, ``apgd-dlr`` and ``square`` (gradient-free) through ART;
* ``deepfool`` (unbounded, minimal L2): gives the median minimal L2 perturbation, and counts as a
  bounded attack at each eps where its perturbation fits in the eps ball.

An example is robust at eps only if it is classified correctly and *every* attack failed on it
(the per-example worst case, ``worst_case``). Accuracies are fractions in [0, 1].

Sanity flags (Carlini et al. 2019; AutoAttack's checks), stored in the report and printed:

* ``not_near_zero_at_max_eps``: worst-case accuracy at the largest eps above ``NEAR_ZERO``
  (expected for adversarially trained models at moderate eps; suspicious otherwise);
* ``non_monotonic``: worst-case accuracy rises with eps;
* ``not_converged``: doubling steps and restarts moves PGD's accuracy by more than ``CONVERGENCE_TOL``;
* ``gradient_free_beats_white_box``: Square succeeds where every white-box attack failed (gradient masking);
* ``zero_gradients``: more than ``ZERO_GRAD_TOL`` of the inputs have an exactly zero CE input gradient.
"""

from __future__ import annotations

import hashlib
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

from .attacks import NORMS, _check_choice, _check_int, _check_number, native_attack

REPORT_FORMAT = "gccs-robustness-report"
REPORT_VERSION = 1
NEAR_ZERO = 0.05
"""Worst-case accuracy at the largest eps above this raises ``not_near_zero_at_max_eps``."""
CONVERGENCE_TOL = 0.02
"""Doubling steps and restarts may move PGD's accuracy by at most 2 points."""
ZERO_GRAD_TOL = 0.05
"""At most 5% of inputs may have an exactly zero cross-entropy input gradient."""
DEEPFOOL_STEPS = 50
CW_STEPS = 20
DEFAULT_SQUARE_QUERIES = 300


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


def default_suite(steps: int = 20, restarts: int = 1, square_queries: int = DEFAULT_SQUARE_QUERIES,
                  latent: bool = False) -> list[SuiteAttack]:
    """The bounded attacks of one evaluation; ``latent`` adds the latent-space PGD (models with centres)."""
    suite = [
        SuiteAttack("fgsm", "fgsm", "ce", 1, 1),
        SuiteAttack("pgd-ce", "pgd", "ce", steps, restarts),
        SuiteAttack("pgd-margin", "pgd", "margin", steps, restarts),
        SuiteAttack("pgd-dlr", "pgd", "dlr", steps, restarts),
    ]
    if latent:
        suite.append(SuiteAttack("pgd-latent", "pgd", "latent", steps, restarts))
    suite += [
        SuiteAttack("pgd-margin-x2", "pgd", "margin", 2 * steps, 2 * restarts),
        SuiteAttack("apgd-ce", "apgd-ce", "ce", steps, restarts),
        SuiteAttack("apgd-dlr", "apgd-dlr", "dlr", steps, restarts),
        SuiteAttack("square", "square", "margin", square_queries, 1),
    ]
    return suite


GRADIENT_FREE = ("square",)
SUITE_LABELS = ("fgsm", "pgd-ce", "pgd-margin", "pgd-dlr", "pgd-latent", "pgd-margin-x2", "apgd-ce", "apgd-dlr", "square",
                "deepfool")
"""Every attack label an evaluation can report (``attacks=`` selects a subset)."""


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
        labels = list(self.attacks)
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


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_eps_list(text: str | Sequence[float]) -> list[float]:
    """``"0.05,0.1"`` or a sequence -> sorted unique floats, each finite and >= 0."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        try:
            v = float(item)
        except (TypeError, ValueError) as err:
            raise ValueError(f"eps value {item!r} is not a number; give comma-separated numbers >= 0.") from err
        out.append(_check_number("eps", v, 0.0))
    if not out:
        raise ValueError("eps list is empty; give at least one value >= 0.")
    return sorted(set(out))


# -- helpers ---------------------------------------------------------------------------------


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = _device(model)
    return torch.cat([model(x[i : i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(x), batch_size)])


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of inputs whose cross-entropy input gradient is exactly zero (CE saturation, gradient masking)."""
    dev = _device(model)
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
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        if spec.attack in ("fgsm", "pgd", "bim", "mim"):
            res = native_attack(model, xb, yb, spec.attack, eps, spec.steps, norm, spec.objective, None, None,
                                True, spec.restarts, False, seed + i, early_stop=True)
        else:
            from .art_adapter import art_attack

            res = art_attack(model, xb, yb, spec.attack, eps, spec.steps, norm, None, None, spec.restarts, False, seed + i)
        out.append(res.success)
    return torch.cat(out)


def _min_perturbation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, seed: int,
                      batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example (L2, L-inf) size of a minimal-perturbation attack; ``inf`` where it failed."""
    from .art_adapter import art_attack

    l2, linf = [], []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        steps = DEEPFOOL_STEPS if attack == "deepfool" else CW_STEPS
        res = art_attack(model, xb, yb, attack, 0.0, steps, "l2", None, None, 1, False, seed + i)
        d = (res.x_adv - xb.cpu()).flatten(1)
        inf = torch.full((len(xb),), float("inf"))
        l2.append(torch.where(res.success, d.norm(dim=1), inf))
        linf.append(torch.where(res.success, d.abs().amax(1), inf))
    return torch.cat(l2), torch.cat(linf)


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
    attacks: Sequence[str] | None = None,
    min_l2: str | None = "deepfool",
    seed: int = 0,
    batch_size: int = 500,
    progress: bool | Callable[[int, int, str], None] = False,
    model_info: dict[str, Any] | None = None,
) -> RobustnessReport:
    """Evaluate ``model`` on (x, y) at every eps; returns a ``RobustnessReport``.

    Args:
        model: a ``LatentClassifier`` in eval mode (a model in training mode is refused: batch norm
            would change the numbers).
        x, y: inputs (N, C, H, W) in [0, 1] and true labels (N,).
        eps_list: threat radii (each >= 0); ``norm`` is ``linf`` or ``l2``.
        steps, restarts: of the iterative attacks (``pgd-margin-x2`` doubles both).
        square_queries: iterations of the gradient-free Square attack.
        attacks: subset of ``SUITE_LABELS`` to run (default: all that apply).
        min_l2: ``deepfool``, ``cw`` or ``both`` for the median minimal L2 perturbation, or None.
        progress: True for a tqdm bar on stderr, or a callback ``(done, total, label)``.
        model_info: recorded in the report (checkpoint path, sha256, loss ...).
    """
    if getattr(model, "training", False):
        raise ValueError("model is in training mode; call model.eval() before evaluating (batch norm would change the results).")
    _check_choice("norm", norm, NORMS)
    _check_int("steps", steps, 1)
    _check_int("restarts", restarts, 1)
    _check_int("square_queries", square_queries, 1)
    _check_int("seed", seed, 0)
    _check_int("batch_size", batch_size, 1)
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
    suite = default_suite(steps, restarts, square_queries, latent=has_centres)
    known = set(SUITE_LABELS)
    if attacks is not None:
        bad = [a for a in attacks if a not in known]
        if bad:
            raise ValueError(f"unknown attack(s) {', '.join(map(repr, bad))}; allowed: {', '.join(SUITE_LABELS)}.")
        if "pgd-latent" in attacks and not has_centres:
            raise ValueError("attack 'pgd-latent' needs a model with class centres (gccs, mmc, center).")
        suite = [s for s in suite if s.label in attacks]
        use_deepfool_bounded = "deepfool" in attacks
    else:
        use_deepfool_bounded = min_l2 in ("deepfool", "both")

    x = x.detach().cpu().float()
    t0 = time.perf_counter()
    n = len(y)
    min_l2_attacks = [] if min_l2 is None else (["deepfool", "cw"] if min_l2 == "both" else [min_l2])
    if use_deepfool_bounded and "deepfool" not in min_l2_attacks:
        min_l2_attacks.append("deepfool")
    total = 1 + len(min_l2_attacks) + len(eps_values) * len(suite)
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

    try:
        pred = _predict(model, x, batch_size)
        correct = pred == y
        clean_acc = float(correct.float().mean())
        idx = torch.nonzero(correct).squeeze(1)
        xc, yc = x[idx], y[idx]
        zero_frac = zero_gradient_fraction(model, x, y, batch_size)
        model.eval()
        tick("clean")

        l2_best = torch.full((len(idx),), float("inf"))
        linf_df = torch.full((len(idx),), float("inf"))
        l2_df = torch.full((len(idx),), float("inf"))
        for name in min_l2_attacks:
            if len(idx):
                l2_a, linf_a = _min_perturbation(model, xc, yc, name, seed, batch_size)
                model.eval()
                l2_best = torch.minimum(l2_best, l2_a)
                if name == "deepfool":
                    l2_df, linf_df = l2_a, linf_a
            tick(name)

        results: list[dict[str, Any]] = []
        flags: list[dict[str, Any]] = []
        for eps in eps_values:
            row: dict[str, Any] = {"eps": eps}
            broken_any = torch.zeros(len(idx), dtype=torch.bool)
            broken_white = torch.zeros(len(idx), dtype=torch.bool)
            broken_free = torch.zeros(len(idx), dtype=torch.bool)
            for spec in suite:
                succ = (_run_suite_attack(model, spec, xc, yc, eps, norm, seed, batch_size) if len(idx) and eps > 0
                        else torch.zeros(len(idx), dtype=torch.bool))
                model.eval()
                row[spec.label] = float((~succ).sum()) / n
                broken_any |= succ
                if spec.label in GRADIENT_FREE:
                    broken_free |= succ
                else:
                    broken_white |= succ
                tick(f"eps={eps:g} {spec.label}")
            if use_deepfool_bounded:
                size = linf_df if norm == "linf" else l2_df
                succ = size <= eps + 1e-6
                row["deepfool"] = float((~succ).sum()) / n
                broken_any |= succ
                broken_white |= succ
            row["worst_case"] = float((~broken_any).sum()) / n
            free_only = int((broken_free & ~broken_white).sum())
            row["gradient_free_only"] = free_only
            if free_only > 0:
                flags.append({"code": "gradient_free_beats_white_box", "eps": eps,
                              "message": f"eps={eps:g}: Square succeeded on {free_only} example(s) where every white-box "
                                         f"attack failed (possible gradient masking)."})
            if "pgd-margin" in row and "pgd-margin-x2" in row:
                change = row["pgd-margin"] - row["pgd-margin-x2"]
                row["doubling_change"] = change
                if abs(change) > CONVERGENCE_TOL:
                    flags.append({"code": "not_converged", "eps": eps,
                                  "message": f"eps={eps:g}: doubling PGD steps and restarts moved accuracy by "
                                             f"{100 * change:.1f} points (> {100 * CONVERGENCE_TOL:g}); use more steps."})
            results.append(row)
    finally:
        model.eval()
        if bar is not None:
            bar.close()

    worst = [r["worst_case"] for r in results]
    for a, b, r in zip(worst, worst[1:], results[1:]):
        if b > a + 1e-9:
            flags.append({"code": "non_monotonic", "eps": r["eps"],
                          "message": f"worst-case accuracy rises from {a:.4f} to {b:.4f} at eps={r['eps']:g}."})
    if eps_values[-1] > 0 and worst[-1] > NEAR_ZERO:
        flags.append({"code": "not_near_zero_at_max_eps", "eps": eps_values[-1],
                      "message": f"worst-case accuracy {worst[-1]:.4f} at the largest eps={eps_values[-1]:g} is above "
                                 f"{NEAR_ZERO:g}: expected for an adversarially trained model at moderate eps, otherwise "
                                 f"a sign of a too-weak attack."})
    if zero_frac > ZERO_GRAD_TOL:
        flags.append({"code": "zero_gradients", "eps": None,
                      "message": f"{100 * zero_frac:.1f}% of inputs have an exactly zero cross-entropy input gradient "
                                 f"(> {100 * ZERO_GRAD_TOL:g}%): CE saturates; trust the margin/DLR/latent attacks."})

    median_l2 = success_rate = None
    if min_l2_attacks and len(idx):
        finite = l2_best[torch.isfinite(l2_best)]
        success_rate = float(len(finite)) / len(idx)
        median_l2 = float(l2_best.median()) if success_rate > 0.5 else None  # median is inf when most failed
        if median_l2 is not None and not math.isfinite(median_l2):
            median_l2 = None
    attack_params = {s.label: s.params() for s in suite}
    for s in attack_params.values():
        if s["attack"] in ("pgd", "fgsm"):
            s["step_size"] = "eps" if s["attack"] == "fgsm" else "2.5*eps/steps"
            s["random_start"] = s["attack"] == "pgd"
        elif s["attack"].startswith("apgd"):
            s["step_size"] = "2*eps (adaptive)"
    if use_deepfool_bounded:
        attack_params["deepfool"] = {"label": "deepfool", "attack": "deepfool", "objective": "minimal L2",
                                     "steps": DEEPFOOL_STEPS, "restarts": 1,
                                     "note": f"success counted at eps when its {norm} size is <= eps"}
    return RobustnessReport(
        norm=norm, eps=eps_values, n=n, seed=seed, clean_accuracy=clean_acc, results=results, attacks=attack_params,
        median_min_l2=median_l2, min_l2_attack="+".join(min_l2_attacks) if min_l2_attacks else None,
        min_l2_success_rate=success_rate, zero_grad_fraction=zero_frac, flags=flags,
        elapsed_s=time.perf_counter() - t0, model=dict(model_info or {}), versions=_versions(),
    )


def _versions() -> dict[str, str]:
    from . import __version__

    out = {"gccs_core": __version__, "torch": torch.__version__}
    try:
        import art

        out["adversarial-robustness-toolbox"] = art.__version__
    except ImportError:  # pragma: no cover
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
    **kwargs: Any,
) -> RobustnessReport:
    """Load a checkpoint and the first ``n`` examples of its dataset's split, then ``evaluate_robustness``."""
    from .checkpoint import _resolve, load_model
    from .data import load_dataset

    _check_int("n", n, 1)
    path = _resolve(checkpoint)
    model, meta = load_model(path, with_metadata=True)  # type: ignore[misc]
    ds_name = dataset or meta.get("dataset")
    if not ds_name:
        raise ValueError(f"{path}: the checkpoint does not record its dataset; pass dataset=... (--dataset).")
    ds = load_dataset(ds_name, split, data_root, limit=n)
    info = {"checkpoint": str(checkpoint), "sha256": file_sha256(path), "dataset": ds_name, "split": split,
            "loss": model.spec.loss, "encoder": model.spec.encoder, "latent_dim": model.spec.latent_dim,
            "adv_train": bool((meta.get("config") or {}).get("adv_train", False)),
            "checkpoint_library_version": meta.get("library_version")}
    model.eval()
    return evaluate_robustness(model, ds.x, ds.y, eps_list, norm=norm, model_info=info, **kwargs)
