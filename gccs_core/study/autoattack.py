"""Adapters to the reference AutoAttack implementation (``pyautoattack``, by the AutoAttack authors).

* ``autoattack``: standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square 5000 queries, ``version='standard'``)
  at each eps, per-example correctness;
* ``min_norm``: FAB (untargeted, from the same package) for the minimal L-inf and L2 perturbation that
  changes the prediction, the median over the clean-correct examples (``inf`` where FAB failed).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from typing import Any

import torch
from torch import nn

INSTALL = "pip install pyautoattack"


def require_pyautoattack() -> None:
    """One-line error with the install command when the optional dependency is missing."""
    try:
        import pyautoattack  # noqa: F401
    except ImportError as err:
        raise ImportError("standard AutoAttack and FAB need the optional package pyautoattack; "
                          f"install it with: {INSTALL}") from err


class _Scores(nn.Module):
    """The model's scores as AutoAttack's logits (it only needs ``forward``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_list: list[float], seed: int = 0,
               batch_size: int = 250) -> dict[str, Any]:
    """Standard AutoAttack (L-inf) at every eps: ``{"clean": [...], "eps": {eps: {"robust": [...]}}}``."""
    require_pyautoattack()
    from pyautoattack import AutoAttack

    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    wrapped = _Scores(model).eval()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y)
    out: dict[str, Any] = {"clean": clean.tolist(), "attacks": ["autoattack-standard"], "eps": {}}
    for eps in eps_list:
        aa = AutoAttack(wrapped, norm="Linf", eps=float(eps), version="standard", seed=seed, device="cpu")
        with contextlib.redirect_stdout(io.StringIO()):
            x_adv, y_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
        delta = (x_adv - x).flatten(1).abs().amax(1)
        if bool((delta > eps + 1e-5).any()):  # the reference code should never leave the ball; refuse if it did
            raise RuntimeError(f"AutoAttack returned a perturbation of L-inf size {float(delta.max()):.4f} > eps {eps}.")
        with torch.no_grad():
            robust = (model(x_adv).argmax(1) == y) & clean
        out["eps"][f"{eps:g}"] = {"robust": robust.tolist(), "first_break": {}}
    return out


def min_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 100, seed: int = 0) -> dict[str, Any]:
    """FAB minimal L-inf and L2 perturbations on the clean-correct examples; medians (failures count as inf)."""
    require_pyautoattack()
    from pyautoattack.fab_pt import FABAttack_PT

    with torch.no_grad():
        clean = model(x).argmax(1) == y
    xc, yc = x[clean], y[clean]
    out: dict[str, Any] = {"n": int(clean.sum()), "steps": steps}
    for norm in ("Linf", "L2"):
        if len(xc) == 0:
            out[norm.lower()] = {"median": None, "success": None}
            continue
        fab = FABAttack_PT(_Scores(model).eval(), norm=norm, n_restarts=1, n_iter=steps, eps=1.0 if norm == "Linf" else 10.0,
                           seed=seed, verbose=False, device="cpu")
        with contextlib.redirect_stdout(io.StringIO()):
            x_adv = fab.attack_single_run(xc, yc, use_rand_start=False, is_targeted=False)
        with torch.no_grad():
            ok = model(x_adv).argmax(1) != yc
        d = (x_adv - xc).flatten(1)
        size = d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)
        size = torch.where(ok, size, torch.full_like(size, math.inf))
        med = float(size.median())
        out[norm.lower()] = {"median": med if math.isfinite(med) else None, "success": float(ok.float().mean()),
                             "sizes": [float(v) if math.isfinite(float(v)) else None for v in size]}
    return out
