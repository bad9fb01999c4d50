"""Adversarial attacks on a model's class scores, for inputs in [0, 1], with recorded trajectories.

One entry point, ``run_attack``, and one registry, ``ATTACKS`` (attack name -> runner), which the
robustness evaluation uses too. The package is layered so that nothing imports upwards:

* ``types.py``: names, the frozen ``AttackSpec``, ``AttackResult``, ``Trajectory``, the checks;
* ``objectives.py``: ``ce``, ``margin``, ``dlr`` (Croce & Hein 2020; shift and scale invariant, so it
  does not saturate on the large distance scores of prototype models) and ``latent`` (models with
  class centres: push z away from ``mu_y``; targeted: pull z to ``mu_t``);
* ``native.py``: FGSM, PGD, BIM, MIM on one batched loop (and ``pgd_linf`` for adversarial training);
* ``art.py``: ``cw``, ``deepfool``, ``apgd-ce``, ``apgd-dlr``, ``square`` through ART; their
  trajectories hold only the clean and the final frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..files import atomic_write_bytes
from ..models import LatentClassifier, eval_mode, model_device
from ..validation import check_labels
from .art import APGD_STEP_FACTOR, SQUARE_P_INIT, art_attack
from .native import native_attack, pgd_linf
from .objectives import attack_objective, dlr_loss, margin_loss, objective_loss
from .types import (
    AMP,
    ART_ATTACKS,
    ATTACK_NAMES,
    MIM_DECAY,
    MIN_PERTURBATION_ATTACKS,
    NATIVE_ATTACKS,
    NORMS,
    OBJECTIVES,
    STEP_FACTOR,
    AttackResult,
    AttackSpec,
    Trajectory,
    check_attack_args,
    check_finite_scores,
    resolve_target,
)

Runner = Callable[..., AttackResult]
"""``runner(model, x, y, spec, target=None, record=False, early_stop=False) -> AttackResult`` on a model in
eval mode with checked labels and target."""

ATTACKS: dict[str, Runner] = {**{name: native_attack for name in NATIVE_ATTACKS},
                              **{name: art_attack for name in ART_ATTACKS}}
"""Every attack by name; ``run_attack`` and ``evaluate`` dispatch through this table only."""

__all__ = [
    "AMP", "APGD_STEP_FACTOR", "ART_ATTACKS", "ATTACKS", "ATTACK_NAMES", "MIM_DECAY", "MIN_PERTURBATION_ATTACKS",
    "NATIVE_ATTACKS", "NORMS", "OBJECTIVES", "SQUARE_P_INIT", "STEP_FACTOR", "AttackResult", "AttackSpec", "Runner",
    "Trajectory", "attack_objective", "check_attack_args", "check_finite_scores", "dlr_loss", "margin_loss",
    "objective_loss", "pgd_linf", "resolve_target", "run_attack", "run_spec", "save_attack",
]


def run_spec(
    model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec,
    target: int | torch.Tensor | None = None, record: bool = False, early_exit: bool = False,
) -> AttackResult:
    """``run_attack`` for a ready ``AttackSpec``: checks the inputs, runs in eval mode, restores the mode."""
    if not torch.is_tensor(x) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (N, C, H, W); got {getattr(x, 'shape', type(x).__name__)}.")
    num_classes = int(getattr(model, "num_classes", 0)) or int(model(x[:1].to(model_device(model))).shape[1])
    y = check_labels(y, x.shape[0], num_classes)
    tgt = resolve_target(target, x.shape[0], num_classes)
    with eval_mode(model):
        check_finite_scores(model, x)
        return ATTACKS[spec.attack](model, x, y, spec, target=tgt, record=record, early_stop=early_exit)


def run_attack(
    model: LatentClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str = "pgd",
    eps: float = 0.1,
    steps: int = 20,
    norm: str = "linf",
    objective: str = "ce",
    target: int | torch.Tensor | None = None,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    record: bool = False,
    seed: int = 0,
    amp: str = "none",
    early_exit: bool = False,
) -> AttackResult:
    """Attack a batch and return adversarial inputs, predictions, success and (``record=True``) the trajectory.

    Args:
        model: a ``LatentClassifier`` (``model(x)`` scores, ``embed``, ``scores_from_latent``); its
            train/eval mode is restored afterwards, the attack itself runs in eval mode.
        x, y: inputs (N, C, H, W) in [0, 1] and true labels (N,). Always the true labels, never predictions.
        attack: one of ``ATTACKS``. ART-backed attacks (cw, deepfool, apgd-ce, apgd-dlr, square) record
            only the clean and final frames; cw and deepfool are minimal-perturbation (L2) attacks
            whose result is not clipped to eps; ``objective`` only applies to native attacks.
        eps: radius of the threat ball (>= 0), in [0, 1] pixel units for L-inf, Euclidean for L2.
        steps: iterations (>= 1); default step size ``STEP_FACTOR * eps / steps`` (2.5 eps / steps).
        norm: ``linf`` or ``l2``.
        objective: ``ce``, ``margin``, ``dlr`` or ``latent`` (see the package docstring).
        target: class index (int or (N,) tensor) for a targeted attack, None for untargeted.
        random_start, restarts: PGD only; the per-example best restart is kept.
        record: return a ``Trajectory`` (frame 0 = clean input, frame t = iterate after step t).
        seed: seeds the random start (and ART's randomness), so results are reproducible.
        amp: ``none`` (float32) or ``bf16``: the attack's forward/backward through the encoder runs under
            bfloat16 autocast, native and ART-backed attacks alike (about 2.5x faster on CPUs with AMX and
            on GPUs; a native attack's recorded frames come from that forward). The returned predictions and
            success always come from a float32 forward.
        early_exit: native attacks stop updating an example once the model itself (float32) confirms a
            successful iterate; that iterate is its result (not the highest-loss success of the whole
            budget). The set of broken examples is the same as without it (unbroken examples run the same
            steps), at a fraction of the work when most examples break; a recorded trajectory then holds
            a broken example still from the step it broke. ART attacks ignore it (they stop on their own).

    Returns:
        ``AttackResult`` with all tensors on CPU.
    """
    spec = AttackSpec(attack, eps, steps, norm, objective, step_size, random_start, restarts, seed, amp)
    return run_spec(model, x, y, spec, target=target, record=record, early_exit=early_exit)


def save_attack(path: str | os.PathLike, x: torch.Tensor, y: torch.Tensor, result: AttackResult) -> Path:
    """Write inputs, labels and an attack's result (``AttackResult.tensors``) to one ``.safetensors`` file, atomically."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save(result.tensors(x, y)))
