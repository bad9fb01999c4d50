"""Robustness evaluation: a suite of attacks per eps, the per-example worst case, and sanity flags.

Loading and evaluating are kept apart (as in RobustBench): ``evaluate_robustness`` takes a built
model in eval mode and tensors; ``evaluate_checkpoint`` loads a file and the data, then calls it;
the report and its file format live in ``gccs_core.report`` (re-exported here). Every attack runs
through the registry ``gccs_core.attacks.ATTACKS``.

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

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ._version import __version__
from .attacks import (
    APGD_STEP_FACTOR,
    ART_ATTACKS,
    ATTACKS,
    NORMS,
    SQUARE_P_INIT,
    STEP_FACTOR,
    AttackSpec,
    check_finite_scores,
)
from .files import file_sha256 as file_sha256  # re-exported: callers hashed checkpoints through evaluate
from .models import LatentClassifier, model_device
from .report import (
    CONVERGENCE_TOL,
    NEAR_ZERO,
    PER_EPS_FLAGS,
    REPORT_FORMAT,
    REPORT_VERSION,
    ZERO_GRAD_TOL,
    RobustnessReport,
    gradient_masking_flag,
    load_report,
    merge_reports,
    not_converged_flag,
    report_level_flags,
    save_report,
)
from .validation import check_choice, check_int, check_labels, check_number

__all__ = [  # the report names are re-exported from gccs_core.report for callers of this module
    "CONVERGENCE_TOL", "NEAR_ZERO", "PER_EPS_FLAGS", "REPORT_FORMAT", "REPORT_VERSION", "ZERO_GRAD_TOL",
    "RobustnessReport", "SuiteAttack", "default_suite", "evaluate_checkpoint", "evaluate_robustness", "file_sha256",
    "load_report", "merge_reports", "parse_eps_list", "report_level_flags", "save_report", "zero_gradient_fraction",
]

DEEPFOOL_STEPS = 20
CW_STEPS = 20
MIN_L2_CHOICES = ("deepfool", "cw", "both")
DEFAULT_EPS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)
"""L-inf radii of ``python -m gccs_core evaluate`` unless ``--eps`` is given."""
DEFAULT_STEPS = 20
DEFAULT_N = 500
DEFAULT_BATCH_SIZE = 500
DEFAULT_SQUARE_QUERIES = 300
DEFAULT_MIN_L2_N = 100
X2_SEED_OFFSET = 7919
"""``pgd-margin-x2`` reruns PGD-margin with ``seed + X2_SEED_OFFSET``: a fresh random start, so twice the restarts."""


@dataclass(frozen=True)
class SuiteAttack:
    """One attack of the suite: a label and the ``AttackSpec`` it runs (eps, norm and seed are set per run)."""

    label: str
    spec: AttackSpec

    @property
    def attack(self) -> str:
        return self.spec.attack

    @property
    def objective(self) -> str:
        return self.spec.objective

    @property
    def steps(self) -> int:
        return self.spec.steps

    @property
    def restarts(self) -> int:
        return self.spec.restarts

    def params(self) -> dict[str, Any]:
        """What the report records of this attack before ``_describe_attacks`` adds its fixed settings."""
        return {"label": self.label, "attack": self.attack, "objective": self.objective, "steps": self.steps,
                "restarts": self.restarts}


def _suite_attack(label: str, attack: str, objective: str, steps: int, restarts: int) -> SuiteAttack:
    return SuiteAttack(label, AttackSpec(attack, 0.0, steps, "linf", objective, restarts=restarts))


def default_suite(steps: int = DEFAULT_STEPS, restarts: int = 1, latent: bool = False) -> list[SuiteAttack]:
    """The white-box bounded attacks of one evaluation; ``latent`` adds latent-space PGD (models with centres)."""
    suite = [
        _suite_attack("fgsm", "fgsm", "ce", 1, 1),
        _suite_attack("pgd-ce", "pgd", "ce", steps, restarts),
        _suite_attack("pgd-margin", "pgd", "margin", steps, restarts),
    ]
    if latent:
        suite.append(_suite_attack("pgd-latent", "pgd", "latent", steps, restarts))
    suite.append(_suite_attack("apgd-ce", "apgd-ce", "ce", steps, restarts))
    suite.append(_suite_attack("apgd-dlr", "apgd-dlr", "dlr", steps, restarts))
    return suite


OPTIONAL_ATTACKS = {"pgd-dlr": ("pgd", "dlr"), "mim-margin": ("mim", "margin")}
SUITE_LABELS = ("fgsm", "pgd-ce", "pgd-margin", "pgd-latent", "apgd-ce", "apgd-dlr", "pgd-dlr", "mim-margin",
                "pgd-margin-x2", "square")
"""Every attack label ``attacks=`` accepts (the default runs all but the optional pgd-dlr and mim-margin)."""


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
def _predict(model: LatentClassifier, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = model_device(model)
    return torch.cat([model(x[i : i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(x), batch_size)])


def zero_gradient_fraction(model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of inputs whose cross-entropy input gradient is exactly zero (CE saturation, gradient masking)."""
    dev = model_device(model)
    zero = 0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(dev).requires_grad_(True)
        loss = F.cross_entropy(model(xb), y[i : i + batch_size].to(dev), reduction="sum")
        (g,) = torch.autograd.grad(loss, xb)
        zero += int((g.flatten(1).abs().amax(1) == 0).sum())
    return zero / max(1, len(x))


def _run_suite_attack(model: LatentClassifier, suite_attack: SuiteAttack, x: torch.Tensor, y: torch.Tensor, eps: float,
                      norm: str, seed: int, batch_size: int) -> torch.Tensor:
    """Success mask (N,) of one bounded attack on (x, y), batched; batch ``i`` is seeded with ``seed + i``."""
    out = []
    for i in range(0, len(x), batch_size):
        spec = suite_attack.spec.with_(eps=eps, norm=norm, seed=seed + i)
        out.append(ATTACKS[spec.attack](model, x[i : i + batch_size], y[i : i + batch_size], spec, early_stop=True).success)
    return torch.cat(out)


def _on_subset(model: LatentClassifier, suite_attack: SuiteAttack, x: torch.Tensor, y: torch.Tensor, todo: torch.Tensor,
               eps: float, norm: str, seed: int, batch_size: int) -> torch.Tensor:
    """Success mask over all of x, attacking only the rows ``todo`` (the others count as not broken)."""
    succ = torch.zeros(len(x), dtype=torch.bool)
    if eps > 0 and len(todo):
        succ[todo] = _run_suite_attack(model, suite_attack, x[todo], y[todo], eps, norm, seed, batch_size)
    model.eval()  # ART may toggle modes internally
    return succ


def _min_perturbation(model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, attack: str, seed: int,
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


class _Progress:
    """A tqdm bar on stderr (``progress=True``), a callback ``(done, total, label)``, or nothing."""

    def __init__(self, progress: bool | Callable[[int, int, str], None], total: int) -> None:
        self.total, self.done, self.bar = total, 0, None
        self.callback = progress if callable(progress) else None
        if progress is True:
            import sys

            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="attack", dynamic_ncols=True, file=sys.stderr)

    def tick(self, label: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update(1)
        elif self.callback is not None:
            self.callback(self.done, self.total, label)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- the evaluation, in named pieces ----------------------------------------------------------


def _check_inputs(model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, eps_list: Sequence[float], norm: str,
                  steps: int, restarts: int, square_queries: int, min_l2: str | None, min_l2_n: int, seed: int,
                  batch_size: int) -> tuple[list[float], torch.Tensor]:
    """Refuse bad arguments with one clear line each; returns the sorted eps values and the labels as CPU int64."""
    if getattr(model, "training", False):
        raise ValueError("model is in training mode; call model.eval() before evaluating (batch norm would change the results).")
    check_choice("norm", norm, NORMS)
    for name, value, minimum in (("steps", steps, 1), ("restarts", restarts, 1), ("square_queries", square_queries, 1),
                                 ("min_l2_n", min_l2_n, 1), ("seed", seed, 0), ("batch_size", batch_size, 1)):
        check_int(name, value, minimum)
    eps_values = parse_eps_list(list(eps_list))
    check_choice("min_l2", min_l2, (*MIN_L2_CHOICES, None))
    if not torch.is_tensor(x) or x.dim() != 4 or not torch.is_tensor(y) or y.shape != (x.shape[0],):
        raise ValueError(f"expected x (N, C, H, W) and y (N,); got {tuple(getattr(x, 'shape', ()))} and "
                         f"{tuple(getattr(y, 'shape', ()))}.")
    if x.shape[0] < 1:
        raise ValueError("no examples to evaluate (n=0).")
    return eps_values, check_labels(y, x.shape[0], int(model.num_classes))


@dataclass(frozen=True)
class _Suite:
    """What one evaluation runs: the bounded attacks in order, then the convergence check and Square (or None)."""

    attacks: list[SuiteAttack]
    x2: SuiteAttack | None
    square: SuiteAttack | None

    def all(self) -> list[SuiteAttack]:
        return self.attacks + [s for s in (self.x2, self.square) if s is not None]


def _select_suite(attacks: Sequence[str] | None, steps: int, restarts: int, square_queries: int,
                  has_centres: bool) -> _Suite:
    """The default suite, or the subset ``attacks`` names (the optional attacks only when named)."""
    suite = default_suite(steps, restarts, latent=has_centres)
    run_x2 = run_square = True
    if attacks is not None:
        attacks = list(attacks)
        bad = [a for a in attacks if a not in SUITE_LABELS]
        if bad:
            raise ValueError(f"unknown attack(s) {', '.join(map(repr, bad))}; allowed: {', '.join(SUITE_LABELS)}.")
        if "pgd-latent" in attacks and not has_centres:
            raise ValueError("attack 'pgd-latent' needs a model with class centres (gccs, mmc, center).")
        extra = [_suite_attack(lb, *OPTIONAL_ATTACKS[lb], steps, restarts) for lb in attacks if lb in OPTIONAL_ATTACKS]
        suite = [s for s in suite if s.label in attacks] + extra
        run_x2 = "pgd-margin-x2" in attacks
        run_square = "square" in attacks
        if run_x2 and "pgd-margin" not in attacks:
            raise ValueError("attack 'pgd-margin-x2' checks 'pgd-margin'; select both.")
    x2 = _suite_attack("pgd-margin-x2", "pgd", "margin", steps, restarts) if run_x2 else None
    square = _suite_attack("square", "square", "margin", square_queries, 1) if run_square else None
    return _Suite(suite, x2, square)


def _min_l2(model: LatentClassifier, xc: torch.Tensor, yc: torch.Tensor, names: list[str], n_l2: int, seed: int,
            batch_size: int, progress: _Progress) -> torch.Tensor:
    """Per-example smallest L2 perturbation any of the minimal-perturbation attacks ``names`` found (inf: none)."""
    best = torch.full((n_l2,), float("inf"))
    for name in names:
        if n_l2:
            best = torch.minimum(best, _min_perturbation(model, xc[:n_l2], yc[:n_l2], name, seed, batch_size))
            model.eval()
        progress.tick(name)
    return best


def _attack_at_eps(model: LatentClassifier, xc: torch.Tensor, yc: torch.Tensor, n: int, eps: float, norm: str,
                   suite: _Suite, seed: int, batch_size: int, apgd_on_all: bool, square_on_all: bool,
                   progress: _Progress) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One row of the report (accuracies at ``eps`` over all n examples) and the per-eps flags it raised.

    ``xc, yc`` are the clean-correct examples; an example is broken once any attack succeeds on it.
    """
    row: dict[str, Any] = {"eps": eps}
    flags: list[dict[str, Any]] = []
    everyone = torch.arange(len(yc))
    broken = torch.zeros(len(yc), dtype=torch.bool)
    for sa in suite.attacks:
        survivors_only = sa.attack.startswith("apgd") and not apgd_on_all  # AutoAttack-style
        succ = _on_subset(model, sa, xc, yc, torch.nonzero(~broken).squeeze(1) if survivors_only else everyone,
                          eps, norm, seed, batch_size)
        if survivors_only:
            row[f"{sa.label}_extra"] = int((succ & ~broken).sum())
        else:
            row[sa.label] = int((~succ).sum()) / n
        broken |= succ
        progress.tick(f"eps={eps:g} {sa.label}")
        if sa.label == "pgd-margin" and suite.x2 is not None:
            more = _on_subset(model, suite.x2, xc, yc, torch.nonzero(~succ).squeeze(1), eps, norm,
                              seed + X2_SEED_OFFSET, batch_size)
            row["pgd-margin-x2"] = int((~(succ | more)).sum()) / n
            row["doubling_change"] = row["pgd-margin"] - row["pgd-margin-x2"]
            broken |= more
            flags += [f for f in (not_converged_flag(eps, row["doubling_change"]),) if f]
            progress.tick(f"eps={eps:g} pgd-margin-x2")
    row["white_box_worst_case"] = int((~broken).sum()) / n
    if suite.square is not None:
        sq = _on_subset(model, suite.square, xc, yc, everyone if square_on_all else torch.nonzero(~broken).squeeze(1),
                        eps, norm, seed, batch_size)
        if square_on_all:
            row["square"] = int((~sq).sum()) / n
        row["square_only"] = int((sq & ~broken).sum())
        broken |= sq
        flags += [f for f in (gradient_masking_flag(eps, row["square_only"]),) if f]
        progress.tick(f"eps={eps:g} square")
    row["worst_case"] = int((~broken).sum()) / n
    return row, flags


def _library(sa: SuiteAttack) -> str:
    return "ART" if sa.attack in ART_ATTACKS else "gccs_core"


def _describe_attacks(suite: _Suite, apgd_on_all: bool, square_on_all: bool) -> dict[str, dict[str, Any]]:
    """Each attack's parameters as the report records them, written from the constants the attacks use."""
    out: dict[str, dict[str, Any]] = {}
    for sa in suite.all():
        prm = sa.params()
        if sa.attack == "fgsm":
            prm.update(step_size="eps", random_start=False)
        elif sa.attack in ("pgd", "mim"):
            prm.update(step_size=f"{STEP_FACTOR:g}*eps/steps", random_start=sa.attack == "pgd", best_iterate=True)
        elif sa.attack.startswith("apgd"):
            prm.update(step_size=f"{APGD_STEP_FACTOR:g}*eps (adaptive)", library=_library(sa),
                       on="all clean-correct" if apgd_on_all else "survivors")
        elif sa.attack == "square":
            prm.update(library=_library(sa), p_init=SQUARE_P_INIT,
                       on="all clean-correct" if square_on_all else "white-box survivors")
        if sa is suite.x2:
            prm.update(on="pgd-margin survivors", seed_offset=X2_SEED_OFFSET)
        out[sa.label] = prm
    return out


def evaluate_robustness(
    model: LatentClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_list: Sequence[float],
    norm: str = "linf",
    steps: int = DEFAULT_STEPS,
    restarts: int = 1,
    square_queries: int = DEFAULT_SQUARE_QUERIES,
    square_on_all: bool = False,
    apgd_on_all: bool = True,
    attacks: Sequence[str] | None = None,
    min_l2: str | None = "deepfool",
    min_l2_n: int = DEFAULT_MIN_L2_N,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
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
    eps_values, y = _check_inputs(model, x, y, eps_list, norm, steps, restarts, square_queries, min_l2, min_l2_n, seed,
                                  batch_size)
    suite = _select_suite(attacks, steps, restarts, square_queries, has_centres=model.centers is not None)
    min_l2_attacks = [] if min_l2 is None else (["deepfool", "cw"] if min_l2 == "both" else [min_l2])
    x = x.detach().cpu().float()
    n = len(y)
    t0 = time.perf_counter()
    progress_ = _Progress(progress, 1 + len(min_l2_attacks) + len(eps_values) * len(suite.all()))
    results: list[dict[str, Any]] = []
    flags: list[dict[str, Any]] = []
    try:
        check_finite_scores(model, x, batch_size)  # NaN/inf scores: report it instead of meaningless accuracies
        correct = _predict(model, x, batch_size) == y
        idx = torch.nonzero(correct).squeeze(1)
        xc, yc = x[idx], y[idx]
        zero_frac = zero_gradient_fraction(model, x, y, batch_size)
        progress_.tick("clean")
        n_l2 = min(min_l2_n, len(idx))
        l2_best = _min_l2(model, xc, yc, min_l2_attacks, n_l2, seed, batch_size, progress_)
        for eps in eps_values:
            row, row_flags = _attack_at_eps(model, xc, yc, n, eps, norm, suite, seed, batch_size, apgd_on_all,
                                            square_on_all, progress_)
            results.append(row)
            flags += row_flags
    finally:
        model.eval()
        progress_.close()
    flags += report_level_flags(results, zero_frac)
    median_l2 = success_rate = None
    if min_l2_attacks and n_l2:
        success_rate = int(torch.isfinite(l2_best).sum()) / n_l2
        med = float(l2_best.median())  # failures count as inf, so this is the true median when success >= 50%
        median_l2 = med if math.isfinite(med) else None
    return RobustnessReport(
        norm=norm, eps=eps_values, n=n, seed=seed, clean_accuracy=int(correct.sum()) / n, results=results,
        attacks=_describe_attacks(suite, apgd_on_all, square_on_all), median_min_l2=median_l2,
        min_l2_attack="+".join(min_l2_attacks) if min_l2_attacks else None, min_l2_success_rate=success_rate,
        min_l2_n=n_l2 if min_l2_attacks else 0, zero_grad_fraction=zero_frac, flags=flags,
        elapsed_s=time.perf_counter() - t0, model=dict(model_info or {}), versions=_versions(),
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
    n: int = DEFAULT_N,
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
