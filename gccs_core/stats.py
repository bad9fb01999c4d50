"""Statistics for paired robustness comparisons: bootstrap intervals over test examples and seeds, McNemar.

Correctness arrays are 0/1 with shape ``(seeds, n)``: row ``s`` is one training seed, column ``i`` one
test example, the same examples for every seed. Two models compared are paired twice: by seed (the
same training seed) and by example (the same test digit). The bootstrap resamples both levels, seeds
with replacement and examples with replacement (the same example draw for every seed, so the pairing
by example is kept), which is the two-level bootstrap for a crossed design.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_BOOT = 2000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float
    seeds: int
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _as_matrix(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty (seeds, n) array of 0/1; got shape {arr.shape}.")
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must hold only 0 and 1 (per-example correctness).")
    return arr


def _check_level(level: float, n_boot: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} is invalid: it must lie strictly between 0 and 1.")
    if not isinstance(n_boot, int) or n_boot < 10:
        raise ValueError(f"n_boot={n_boot!r} is invalid: it must be an integer >= 10.")


def _boot_means(m: np.ndarray, n_boot: int, rng: np.random.Generator, chunk: int = 200) -> np.ndarray:
    """Bootstrap replicates of the grand mean of ``m`` (seeds x n), resampling seeds and examples."""
    s, n = m.shape
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        si = rng.integers(0, s, size=(b, s))
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=b)  # how often each example is drawn
        seed_means = counts @ m.T / n  # (b, s): each seed's mean over this example draw
        out[start : start + b] = np.take_along_axis(seed_means, si, axis=1).mean(1)
    return out


def bootstrap_mean(a: Any, n_boot: int = DEFAULT_BOOT, level: float = DEFAULT_LEVEL, seed: int = 0) -> Interval:
    """Mean accuracy of one configuration with a bootstrap interval over examples and seeds."""
    _check_level(level, n_boot)
    m = _as_matrix(a, "a")
    reps = _boot_means(m, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(m.mean()), float(lo), float(hi), level, m.shape[0], m.shape[1])


def paired_bootstrap_diff(a: Any, b: Any, n_boot: int = DEFAULT_BOOT, level: float = DEFAULT_LEVEL,
                          seed: int = 0) -> Interval:
    """``mean(a) - mean(b)`` with a paired bootstrap interval (same seeds, same examples for both)."""
    _check_level(level, n_boot)
    ma, mb = _as_matrix(a, "a"), _as_matrix(b, "b")
    if ma.shape != mb.shape:
        raise ValueError(f"paired arrays must have the same (seeds, n) shape; got {ma.shape} and {mb.shape}.")
    d = ma - mb  # in {-1, 0, 1}; the mean of the differences is the difference of the means
    reps = _boot_means(d, n_boot, np.random.default_rng(seed))  # linear in the matrix, so it applies to d
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(d.mean()), float(lo), float(hi), level, ma.shape[0], ma.shape[1])


def mcnemar_exact(a: Any, b: Any) -> dict[str, float]:
    """Exact two-sided McNemar test on paired correctness (all seeds pooled): binomial test of the discordant pairs.

    Returns ``{"a_only": n01, "b_only": n10, "p_value": p}`` where ``a_only`` counts pairs that ``a`` got
    right and ``b`` wrong. ``p = min(1, 2 * P(X <= min(n01, n10)))`` with ``X ~ Binomial(n01 + n10, 1/2)``.
    """
    ma, mb = _as_matrix(a, "a"), _as_matrix(b, "b")
    if ma.shape != mb.shape:
        raise ValueError(f"paired arrays must have the same (seeds, n) shape; got {ma.shape} and {mb.shape}.")
    a_only = int(((ma == 1) & (mb == 0)).sum())
    b_only = int(((ma == 0) & (mb == 1)).sum())
    return {"a_only": a_only, "b_only": b_only, "p_value": mcnemar_p(a_only, b_only)}


def mcnemar_p(n01: int, n10: int) -> float:
    """Exact two-sided McNemar p-value from the two discordant counts (1.0 when there are none)."""
    for name, v in (("n01", n01), ("n10", n10)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name}={v!r} is invalid: it must be a count >= 0.")
    n = int(n01) + int(n10)
    if n == 0:
        return 1.0
    k = min(int(n01), int(n10))
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n  # exact for any n (Python integers)
    return float(min(1.0, 2.0 * tail))
