"""Argument checks shared by every public entry point: one copy, one message voice.

Each check raises ``ValueError`` with one line that names the parameter and its value and says what is
allowed (``steps=0 is invalid: it must be an integer >= 1.``, ``norm='l3' is unknown; allowed: linf, l2.``),
and returns the value (converted where that is the point, e.g. ``check_number`` returns a float).
Torch-free: ``check_labels`` imports torch only when called.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")

_HUGE = 1e300
"""Numbers beyond this are refused as well as inf: ``10**400`` is a finite int that no float can hold."""


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return abs(value) < _HUGE and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def check_choice(name: str, value: Any, allowed: Iterable[T]) -> T:
    """``value`` must be one of ``allowed`` (compared with ``==``; an unhashable value is refused, not a TypeError)."""
    options = tuple(allowed)
    if not any(value is a or (isinstance(value, type(a)) and value == a) for a in options):
        raise ValueError(f"{name}={value!r} is unknown; allowed: {', '.join(map(str, options))}.")
    return value


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """An ``int`` (not a bool) with ``minimum <= value`` (and ``<= maximum`` when given)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name}={value!r} is invalid: it must be an integer {bound}.")
    return value


def check_number(name: str, value: Any, minimum: float, open_low: bool = False, maximum: float | None = None) -> float:
    """A finite real number ``>= minimum`` (``> minimum`` with ``open_low``; ``<= maximum`` when given); returns a float."""
    ok = _is_number(value) and (value > minimum if open_low else value >= minimum)
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bound = f"{'>' if open_low else '>='} {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ValueError(f"{name}={value!r} is invalid: it must be a finite number {bound}.")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """Exactly ``True`` or ``False`` (``1`` or ``"yes"`` are refused: they are usually a misplaced argument)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is invalid: it must be True or False.")
    return value


def check_labels(y: Any, n: int, num_classes: int) -> Any:
    """Class labels as a CPU int64 tensor of shape (n,), each in ``0..num_classes-1``."""
    import torch

    if not torch.is_tensor(y) or y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"labels y must be a 1-D tensor with one entry per input ({n}); got {getattr(y, 'shape', y)}.")
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"labels y have dtype {y.dtype}; expected integer class indices in 0..{num_classes - 1}.")
    y = y.detach().to("cpu", torch.long)
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}; got values in [{int(y.min())}, {int(y.max())}].")
    return y
