"""The vocabulary of attacks: names, the frozen ``AttackSpec``, results, trajectories and the argument checks.

Every implementation (``native.py``, ``art.py``) and every caller (``run_attack``, ``evaluate``) speaks
this module; it imports no implementation, so nothing here can form a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from ..models import LatentClassifier, model_device
from ..validation import check_choice, check_int, check_number

NATIVE_ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "bim", "mim")
ART_ATTACKS: tuple[str, ...] = ("cw", "deepfool", "apgd-ce", "apgd-dlr", "square")
ATTACK_NAMES: tuple[str, ...] = NATIVE_ATTACKS + ART_ATTACKS
MIN_PERTURBATION_ATTACKS: tuple[str, ...] = ("cw", "deepfool")
"""Minimal-perturbation (L2) attacks: ``eps`` and ``norm`` do not bound them and their result is not clipped."""
OBJECTIVES: tuple[str, ...] = ("ce", "margin", "dlr", "latent")
NORMS: tuple[str, ...] = ("linf", "l2")
AMP: tuple[str, ...] = ("none", "bf16")
"""Precision of an attack's forward/backward through the encoder (native and ART-backed attacks alike): ``none``
(float32) or ``bf16`` (autocast; about 2.5x faster on CPUs with AMX and on GPUs). The head, the objective and the
predictions that decide success stay float32."""
STEP_FACTOR = 2.5
"""Default step size is ``STEP_FACTOR * eps / steps`` (Madry et al.'s choice: the whole ball is reachable)."""
MIM_DECAY = 1.0
"""Momentum decay of MIM (Dong et al. 2018 use 1.0)."""
_TINY = 1e-12


def check_attack_args(
    attack: str, eps: float, steps: int, norm: str, objective: str, restarts: int, step_size: float | None,
    amp: str = "none",
) -> None:
    """Validate attack arguments; raise ``ValueError`` naming the bad value and what is allowed."""
    check_choice("attack", attack, ATTACK_NAMES)
    check_choice("amp", amp, AMP)
    check_number("eps", eps, 0.0)
    check_int("steps", steps, 1)
    check_choice("norm", norm, NORMS)
    check_choice("objective", objective, OBJECTIVES)
    check_int("restarts", restarts, 1)
    if step_size is not None:
        check_number("step_size", step_size, 0.0, open_low=True)


@dataclass(frozen=True)
class AttackSpec:
    """One attack's settings, checked once when built; every runner takes one instead of loose arguments.

    ``step_size=None`` means ``STEP_FACTOR * eps / steps`` for the native iterative attacks (FGSM steps
    by eps; ART's APGD uses its own default). ``random_start`` and ``restarts`` apply to PGD (and
    ``restarts`` to APGD and Square); ``seed`` seeds every random choice; ``amp`` is the precision of the
    encoder's forward/backward inside the attack (native and ART-backed), never of the verdict.
    """

    attack: str = "pgd"
    eps: float = 0.1
    steps: int = 20
    norm: str = "linf"
    objective: str = "ce"
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    seed: int = 0
    amp: str = "none"

    def __post_init__(self) -> None:
        check_attack_args(self.attack, self.eps, self.steps, self.norm, self.objective, self.restarts, self.step_size,
                          self.amp)
        check_int("seed", self.seed, 0)
        if not isinstance(self.random_start, bool):
            raise ValueError(f"random_start={self.random_start!r} is invalid: it must be True or False.")
        object.__setattr__(self, "eps", float(self.eps))

    @property
    def alpha(self) -> float:
        """The step size an iterative native attack takes."""
        return self.step_size if self.step_size is not None else STEP_FACTOR * self.eps / self.steps

    def with_(self, **changes: Any) -> AttackSpec:
        """A copy with some fields changed (checked again)."""
        return replace(self, **changes)


@dataclass
class Trajectory:
    """Recorded attack frames; index 0 is the clean input, frame ``i`` is the iterate after ``steps[i]`` steps."""

    x: torch.Tensor  # (T+1, N, C, H, W)
    z: torch.Tensor  # (T+1, N, d)
    scores: torch.Tensor  # (T+1, N, K)
    pred: torch.Tensor  # (T+1, N)
    steps: list[int]

    def fooled(self, y: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        """(T+1, N) bool: per frame, whether the attack has succeeded (``pred != y``, or ``== target``)."""
        return succeeded(self.pred, torch.as_tensor(y).to(self.pred.device),
                         None if target is None else torch.as_tensor(target).to(self.pred.device))


@dataclass
class AttackResult:
    """Outcome of one attack on a batch (all tensors on CPU)."""

    x_adv: torch.Tensor  # (N, C, H, W)
    pred: torch.Tensor  # (N,)
    success: torch.Tensor  # (N,) bool: untargeted -> pred != y; targeted -> pred == target
    trajectory: Trajectory | None

    def perturbation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example L2 and L-inf size of ``x_adv - x`` (N,) each."""
        delta = (self.x_adv - x.detach().cpu()).flatten(1)
        return delta.norm(dim=1), delta.abs().amax(1)

    def tensors(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The saved layout: ``x, y, x_adv, pred, success`` (uint8) and, when recorded, ``traj_x, traj_z,
        traj_scores, traj_pred, traj_steps``."""
        out = {"x": x.detach().cpu(), "y": y.detach().cpu(), "x_adv": self.x_adv, "pred": self.pred,
               "success": self.success.to(torch.uint8)}
        if self.trajectory is not None:
            tr = self.trajectory
            out.update({"traj_x": tr.x, "traj_z": tr.z, "traj_scores": tr.scores, "traj_pred": tr.pred,
                        "traj_steps": torch.tensor(tr.steps)})
        return {k: v.contiguous() for k, v in out.items()}


def succeeded(pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Untargeted: the prediction left the true class; targeted: it reached the target."""
    return pred == target if target is not None else pred != y


def resolve_target(target: int | torch.Tensor | None, n: int, num_classes: int) -> torch.Tensor | None:
    """Target labels as an (n,) int64 tensor, or None; a class outside ``[0, K-1]`` is a ValueError."""
    if target is None:
        return None
    if isinstance(target, bool):
        raise ValueError(f"target={target!r} is invalid: give a class index in [0, {num_classes - 1}].")
    if isinstance(target, int):
        if not 0 <= target < num_classes:  # before torch.full, which overflows on a huge int
            raise ValueError(f"target class {target} is outside the label set: allowed classes are 0..{num_classes - 1}.")
        t = torch.full((n,), target, dtype=torch.long)
    elif torch.is_tensor(target):
        if target.is_floating_point():
            raise ValueError(f"target has dtype {target.dtype}; expected integer class indices.")
        t = target.detach().to("cpu", torch.long).reshape(-1)
        if t.numel() == 1:
            t = t.expand(n).clone()
        if t.numel() != n:
            raise ValueError(f"target has {t.numel()} entries; expected 1 or one per example ({n}).")
    else:
        raise ValueError(f"target={target!r} is invalid: give an int, a tensor of class indices or None.")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
        raise ValueError(f"target class {bad} is outside the label set: allowed classes are 0..{num_classes - 1}.")
    return t


def check_finite_scores(model: LatentClassifier, x: torch.Tensor, batch_size: int = 512) -> None:
    """Raise ``ValueError`` when the model's clean scores hold NaN or inf: attack results would be meaningless."""
    dev = model_device(model)
    with torch.no_grad():
        bad = torch.cat([(~torch.isfinite(model(x[i : i + batch_size].to(dev)))).flatten(1).any(1).cpu()
                         for i in range(0, len(x), batch_size)])
    if bad.any():
        raise ValueError(f"the model outputs NaN or inf scores for {int(bad.sum())} of {len(x)} inputs (first: example "
                         f"{int(bad.nonzero()[0])}); its weights are broken (diverged training?), so attack results and "
                         "accuracies would be meaningless.")
