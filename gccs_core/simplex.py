"""Regular-simplex geometry: the class means of GCCS and MMC.

A regular simplex with K vertices, centred at the origin, every vertex at norm ``radius``:

* ``||mu_k|| = r``, ``<mu_i, mu_j> = -r^2 / (K - 1)`` for ``i != j``, ``sum_k mu_k = 0``;
* edge length ``Delta = r * sqrt(2K / (K - 1))``;
* with class Gaussians ``N(mu_k, sigma^2 I)`` the Bayes error between two classes is
  ``Q(Delta / (2 sigma))`` where ``Q`` is the standard normal tail.
"""

from __future__ import annotations

import math

import torch

from .validation import check_number

DEFAULT_RADIUS = 10.0
"""Vertex norm r used by GCCS and MMC unless configured (MMC's C_MM = 10)."""

DEFAULT_SIGMA = 1.0
"""Per-dimension standard deviation of each class Gaussian unless configured."""


def _check_geometry(num_classes: int, dim: int | None = None) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} is invalid: a simplex needs at least 2 classes (K >= 2).")
    if dim is not None and (not isinstance(dim, int) or dim < num_classes - 1):
        raise ValueError(
            f"dim={dim!r} is too small for num_classes={num_classes}: "
            f"a regular simplex of K vertices needs dim >= K-1 = {num_classes - 1}."
        )


def simplex_vertices(
    num_classes: int,
    dim: int,
    radius: float = DEFAULT_RADIUS,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return the (K, dim) vertices of a regular simplex centred at 0 with vertex norm ``radius``.

    Construction: the centred one-hot rows ``e_k - 1/K`` are expressed in an orthonormal basis of
    their (K-1)-dimensional span (QR of their first K-1 columns, signs fixed), scaled to norm
    ``radius`` and padded with zeros up to ``dim``. Deterministic: same inputs, same tensor.
    """
    _check_geometry(num_classes, dim)
    check_number("radius", radius, 0.0, open_low=True)
    k = num_classes
    # Computed on the CPU even under a ``torch.device(...)`` context (checkpoint loading builds models on "meta"
    # first): meta tensors have no LAPACK, and a meta ``eye`` imports torch._dynamo (1-2 s) for nothing.
    target = torch.get_default_device() if device is None else device
    centred = torch.eye(k, dtype=torch.float64, device="cpu") - 1.0 / k  # rows sum to zero, rank K-1
    # The first K-1 columns span the same space as all K (columns sum to zero); fixing the signs of
    # R's diagonal keeps the basis identical across LAPACK builds.
    q, _ = torch.linalg.qr(centred[:, : k - 1])
    signs = torch.sign(torch.diagonal(q[: k - 1, : k - 1]))
    signs[signs == 0] = 1.0
    q = q * signs
    coords = centred @ q  # (K, K-1), rows are the simplex in K-1 dims
    coords = coords / coords.norm(dim=1, keepdim=True) * radius
    out = torch.zeros(k, dim, dtype=torch.float64, device="cpu")
    out[:, : k - 1] = coords
    return out.to(dtype=dtype, device=target)


def edge_length(num_classes: int, radius: float = DEFAULT_RADIUS) -> float:
    """Distance between any two vertices: ``r * sqrt(2K / (K - 1))``."""
    _check_geometry(num_classes)
    check_number("radius", radius, 0.0, open_low=True)
    return radius * math.sqrt(2.0 * num_classes / (num_classes - 1))


def normal_tail(x: float) -> float:
    """Standard normal upper tail ``Q(x) = P(N(0,1) > x)``."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def pairwise_bayes_error(num_classes: int, radius: float = DEFAULT_RADIUS, sigma: float = DEFAULT_SIGMA) -> float:
    """Bayes error between two classes ``N(mu_i, sigma^2 I)`` and ``N(mu_j, sigma^2 I)``: ``Q(Delta / 2 sigma)``."""
    check_number("sigma", sigma, 0.0, open_low=True)
    return normal_tail(edge_length(num_classes, radius) / (2.0 * sigma))


def separation_ratio(num_classes: int, radius: float = DEFAULT_RADIUS, sigma: float = DEFAULT_SIGMA) -> float:
    """``Delta / sigma``: the one number that sets how separable the class Gaussians are."""
    check_number("sigma", sigma, 0.0, open_low=True)
    return edge_length(num_classes, radius) / sigma
