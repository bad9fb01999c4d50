"""Thin adapter to the Adversarial Robustness Toolbox (ART, ``adversarial-robustness-toolbox``).

We do not re-implement what ART already does well: Carlini-Wagner L2, DeepFool, APGD (CE and DLR)
and Square. The pitfalls noted in docs/attacks.md are handled here once:

* the estimator gets the model's *scores* (one (N, K) tensor) and ``clip_values=(0, 1)``; the model
  normalises its inputs itself, so ART's preprocessing stays the identity;
* labels are always passed, one-hot: the true labels for untargeted attacks (ART would otherwise
  use the model's predictions, "label leaking"), the target classes for targeted ones;
* batch sizes are raised from ART's defaults (CW and DeepFool default to 1, very slow);
* PGD gets ``num_random_init=1`` (ART's default has no random start);
* ART's global NumPy / torch randomness is seeded from ``seed`` and restored afterwards;
* whatever ART returns is clipped to the threat ball with the native attacks' ``project``.

ART itself is imported only when an attack runs (its import costs about 150 MB and pulls in numba).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import LatentClassifier, attack_copy, eval_mode, model_device
from .native import project
from .objectives import embed_at
from .types import ART_ATTACKS, MIN_PERTURBATION_ATTACKS, AttackResult, AttackSpec, Trajectory, succeeded

ART_BATCH_SIZE = 512
"""Batch size passed to every ART attack (ART's defaults of 1 for CW/DeepFool are far too slow)."""
CW_LEARNING_RATE = 0.1
CW_INITIAL_CONST = 1.0
CW_BINARY_SEARCH_STEPS = 5
DEEPFOOL_OVERSHOOT = 0.02
DEEPFOOL_BATCH_SIZE = 25
"""ART's DeepFool recomputes all K class gradients of its whole batch every iteration until the last
example of the batch flips, so small batches stop stragglers from holding up the rest."""
SQUARE_P_INIT = 0.8
APGD_STEP_FACTOR = 2.0
"""APGD's initial step size is ``2 * eps`` (Croce & Hein 2020); it adapts afterwards."""


def _require_art() -> None:
    try:
        import art  # noqa: F401
    except ImportError as err:  # pragma: no cover - ART is in requirements.txt
        raise ImportError(
            "ART-backed attacks need adversarial-robustness-toolbox: pip install 'adversarial-robustness-toolbox>=1.18'"
        ) from err


class _AmpScores(nn.Module):
    """A model's scores with its encoder under ``amp`` autocast and its head in float32: what ART's gradients and
    queries see under ``amp='bf16'``, the same split as the native attacks' (``objectives.embed_at``)."""

    def __init__(self, model: LatentClassifier, amp: str) -> None:
        super().__init__()
        self.model, self.amp = model, amp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.scores_from_latent(embed_at(self.model, x, self.amp))


def art_classifier(model: LatentClassifier, amp: str = "none") -> Any:
    """Wrap a ``LatentClassifier`` as an ART ``PyTorchClassifier`` on the model's own device (``amp``: the
    encoder's precision inside the attack, see ``types.AMP``)."""
    _require_art()
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model if amp == "none" else _AmpScores(model, amp),
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(model.spec.in_shape),
        nb_classes=int(model.num_classes),
        clip_values=(0.0, 1.0),
        device_type="gpu" if model_device(model).type == "cuda" else "cpu",
    )


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed NumPy's and torch's global generators (ART uses them) and restore them afterwards."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


def _one_hot(labels: torch.Tensor, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[labels.cpu().numpy()]


def _art_norm(norm: str) -> float | int:
    return np.inf if norm == "linf" else 2


def build_art_attack(clf: Any, spec: AttackSpec, targeted: bool) -> Any:
    """Construct the ART attack object for one of ``ART_ATTACKS`` with our defaults."""
    from art.attacks.evasion import AutoProjectedGradientDescent, CarliniL2Method, DeepFool, SquareAttack

    if spec.attack == "cw":
        return CarliniL2Method(clf, confidence=0.0, targeted=targeted, learning_rate=CW_LEARNING_RATE,
                               binary_search_steps=CW_BINARY_SEARCH_STEPS, max_iter=spec.steps,
                               initial_const=CW_INITIAL_CONST, batch_size=ART_BATCH_SIZE, verbose=False)
    if spec.attack == "deepfool":
        if targeted:
            raise ValueError("attack='deepfool' is untargeted only; use target=None or another attack.")
        return DeepFool(clf, max_iter=spec.steps, epsilon=DEEPFOOL_OVERSHOOT, nb_grads=clf.nb_classes,
                        batch_size=DEEPFOOL_BATCH_SIZE, verbose=False)
    if spec.attack in ("apgd-ce", "apgd-dlr"):
        step = spec.step_size if spec.step_size is not None else APGD_STEP_FACTOR * spec.eps
        return AutoProjectedGradientDescent(
            clf, norm=_art_norm(spec.norm), eps=spec.eps, eps_step=step, max_iter=spec.steps, targeted=targeted,
            nb_random_init=spec.restarts, batch_size=ART_BATCH_SIZE,
            loss_type="cross_entropy" if spec.attack == "apgd-ce" else "difference_logits_ratio", verbose=False)
    if spec.attack == "square":
        return SquareAttack(clf, norm=_art_norm(spec.norm), max_iter=spec.steps, eps=spec.eps, p_init=SQUARE_P_INIT,
                            nb_restarts=spec.restarts, batch_size=ART_BATCH_SIZE, verbose=False)
    raise ValueError(f"attack={spec.attack!r} is not ART-backed; allowed: {', '.join(ART_ATTACKS)}.")


@torch.no_grad()
def _latents_scores(model: LatentClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = model.embed(x.to(model_device(model)))
    return z.cpu(), model.scores_from_latent(z).cpu()


def art_attack(
    model: LatentClassifier, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, target: torch.Tensor | None = None,
    record: bool = False, early_stop: bool = False,
) -> AttackResult:
    """Run an ART attack; the model must already be in eval mode, labels and target checked.

    ``spec.steps`` is ART's ``max_iter`` (Square: queries; CW: iterations per binary-search step).
    ``cw`` and ``deepfool`` are minimal-perturbation L2 attacks: ``eps`` and ``norm`` do not bound them.
    The trajectory, if recorded, holds only the clean (step 0) and the final (step ``steps``) frames.
    ``early_stop`` is accepted for the registry's one signature; ART decides its own stopping. ``spec.amp='bf16'``:
    ART's gradients and queries come from the encoder under bfloat16 autocast; the returned prediction and success
    are the float32 model's.
    """
    _require_art()
    if spec.attack not in ART_ATTACKS:
        raise ValueError(f"attack={spec.attack!r} is not ART-backed; allowed: {', '.join(ART_ATTACKS)}.")
    x = x.detach().cpu().float()
    bounded = spec.attack not in MIN_PERTURBATION_ATTACKS
    if spec.eps == 0 and bounded:
        x_adv = x.clone()
    else:
        clf = art_classifier(attack_copy(model), spec.amp)
        atk = build_art_attack(clf, spec, target is not None)
        labels = target if target is not None else y
        with _seeded(spec.seed):
            x_adv = torch.from_numpy(atk.generate(x=x.numpy(), y=_one_hot(labels, int(model.num_classes))).astype(np.float32))
        model.eval()  # ART may toggle modes internally; the caller restores the original one
        if bounded:  # enforce the threat model on whatever ART returns
            x_adv = project(x_adv, x, spec.eps, spec.norm)
    z_adv, s_adv = _latents_scores(model, x_adv)
    pred = s_adv.argmax(1)
    success = succeeded(pred, y.cpu(), None if target is None else target.cpu())
    trajectory = None
    if record:
        z0, s0 = _latents_scores(model, x)
        scores = torch.stack([s0, s_adv])
        trajectory = Trajectory(x=torch.stack([x, x_adv]), z=torch.stack([z0, z_adv]), scores=scores,
                                pred=scores.argmax(-1), steps=[0, spec.steps])
    return AttackResult(x_adv, pred, success, trajectory)


def art_pgd(
    model: LatentClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    norm: str = "linf",
    step_size: float | None = None,
    seed: int = 0,
) -> AttackResult:
    """ART's ``ProjectedGradientDescentPyTorch`` (CE, one random start, true labels): a reference for our PGD."""
    _require_art()
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    spec = AttackSpec("pgd", eps, steps, norm, "ce", step_size, seed=seed)
    with eval_mode(model):
        clf = art_classifier(model)
        atk = ProjectedGradientDescentPyTorch(clf, norm=_art_norm(norm), eps=eps, eps_step=spec.alpha, max_iter=steps,
                                              targeted=False, num_random_init=1, batch_size=ART_BATCH_SIZE, verbose=False)
        xn = x.detach().cpu().float()
        with _seeded(seed):
            x_adv = torch.from_numpy(atk.generate(x=xn.numpy(), y=_one_hot(y, int(model.num_classes))).astype(np.float32))
        model.eval()
        _, s_adv = _latents_scores(model, x_adv)
        pred = s_adv.argmax(1)
        return AttackResult(x_adv, pred, pred != y.cpu(), None)
