"""Latent-space losses, one small class each, behind one interface.

Every loss is an ``nn.Module`` that is also the classifier *head*: it owns whatever parameters or
fixed centres its decision rule needs.

* ``loss(z, y)`` -> scalar loss (mean over the batch); named sub-terms land in ``loss.last_terms``.
* ``loss.scores(z)`` -> (N, K) class scores: the decision rule the loss trains for. Attacks and
  evaluation always use these scores, never a guessed rule.
* ``loss.centers`` -> (K, d) class centres or ``None``; ``loss.sigma`` -> float or ``None``.

The equations are written out in docs/gccs.md.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .simplex import DEFAULT_RADIUS, DEFAULT_SIGMA, simplex_vertices


def _check_range(name: str, value: Any, low: float, high: float | None = None, low_open: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e300 and math.isfinite(value)
    if ok:
        ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name}={value!r} is invalid: it must be a finite number {bound}.")


def prototype_scores(z: torch.Tensor, centers: torch.Tensor, sigma: float) -> torch.Tensor:
    """Scores ``s_k(z) = -||z - mu_k||^2 / (2 sigma^2)`` for every class, shape (N, K)."""
    sq = (z.unsqueeze(1) - centers.unsqueeze(0)).pow(2).sum(-1)
    return -sq / (2.0 * sigma * sigma)


class LatentLoss(nn.Module):
    """Base class: checks inputs once, then calls ``compute_terms`` of the subclass."""

    name: ClassVar[str] = ""
    prototype: ClassVar[bool] = False
    """True when the prediction is the nearest fixed centre (GCCS, MMC)."""

    def __init__(self, num_classes: int, latent_dim: int) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"num_classes={num_classes!r} is invalid: it must be an integer >= 2.")
        if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim < 1:
            raise ValueError(f"latent_dim={latent_dim!r} is invalid: it must be an integer >= 1.")
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.last_terms: dict[str, float] = {}

    # -- interface -------------------------------------------------------------------------
    def hparams(self) -> dict[str, float]:
        """Hyperparameters that rebuild this loss (saved in checkpoints)."""
        return {}

    @property
    def centers(self) -> torch.Tensor | None:
        return None

    @property
    def sigma(self) -> float | None:
        return None

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute_terms(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z has shape {tuple(z.shape)}; expected (N, {self.latent_dim}).")
        if y.dim() != 1 or y.shape[0] != z.shape[0]:
            raise ValueError(f"labels have shape {tuple(y.shape)}; expected ({z.shape[0]},) to match z.")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes - 1}]; got values in [{int(y.min())}, {int(y.max())}]."
            )
        y = y.to(device=z.device, dtype=torch.long)
        if not torch.isfinite(z).all():  # report it as a non-finite loss instead of failing inside linalg
            self.last_terms = {"nonfinite_latent": float("nan")}
            return z.new_tensor(float("nan"))
        terms = self.compute_terms(z, y)
        total = torch.stack(list(terms.values())).sum()
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        return total

    def extra_repr(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.hparams().items())
        return f"num_classes={self.num_classes}, latent_dim={self.latent_dim}" + (f", {params}" if params else "")


class _SimplexHead(LatentLoss):
    """Shared part of the prototype losses: fixed simplex centres and nearest-vertex scores."""

    prototype = True

    def __init__(self, num_classes: int, latent_dim: int, sigma: float, radius: float) -> None:
        super().__init__(num_classes, latent_dim)
        _check_range("sigma", sigma, 0.0)
        _check_range("radius", radius, 0.0)
        self._sigma = float(sigma)
        self.radius = float(radius)
        self.register_buffer("vertices", simplex_vertices(num_classes, latent_dim, radius))

    @property
    def centers(self) -> torch.Tensor:
        return self.vertices

    @property
    def sigma(self) -> float:
        return self._sigma

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        return prototype_scores(z, self.vertices, self._sigma)


class GCCSLoss(_SimplexHead):
    """Gaussian class-conditional simplex loss (our reconstruction; see docs/gccs.md).

    For every class k present in the batch (n_k samples, latent mean m_k, covariance S_k shrunk
    towards ``(tr S_k / d) I`` by ``shrinkage`` plus ``eps I``)::

        KL_k = 1/2 [ tr(S_k)/sigma^2 + ||m_k - mu_k||^2/sigma^2 - d + d ln sigma^2 - ln det S_k ]
        loss = sum_k (n_k / N) KL_k  +  lam * mean_i ||z_i - mu_{y_i}||^2 / (2 sigma^2)

    A class with a single sample in the batch has no covariance estimate; it contributes only its
    mean term ``||m_k - mu_k||^2 / (2 sigma^2)``. ``ln det`` is computed through the n_k x n_k Gram
    matrix when n_k <= d (matrix determinant lemma), so the cost stays small for d up to 512.

    Args:
        sigma: per-dimension standard deviation of every target Gaussian (> 0).
        radius: vertex norm r of the simplex (> 0). Only ``Delta / sigma`` matters for separability.
        shrinkage: rho in [0, 1], weight of the ``(tr S / d) I`` target in the shrunk covariance.
        lam: weight (>= 0) of the optional per-sample pull term.
        eps: ridge added to every covariance (> 0), keeps ``ln det`` finite.
    """

    name = "gccs"

    def __init__(
        self,
        num_classes: int,
        latent_dim: int,
        sigma: float = DEFAULT_SIGMA,
        radius: float = DEFAULT_RADIUS,
        shrinkage: float = 0.1,
        lam: float = 1.0,
        eps: float = 1e-4,
    ) -> None:
        super().__init__(num_classes, latent_dim, sigma, radius)
        _check_range("shrinkage", shrinkage, 0.0, 1.0, low_open=False)
        _check_range("lam", lam, 0.0, low_open=False)
        _check_range("eps", eps, 0.0)
        self.shrinkage = float(shrinkage)
        self.lam = float(lam)
        self.eps = float(eps)

    def hparams(self) -> dict[str, float]:
        return {"sigma": self.sigma, "radius": self.radius, "shrinkage": self.shrinkage, "lam": self.lam, "eps": self.eps}

    def _logdet_shrunk(self, centred: torch.Tensor, trace: torch.Tensor) -> torch.Tensor:
        """``ln det((1-rho) S + (rho tr S / d + eps) I)`` with ``S = X^T X / (n-1)``, X = centred rows (one class)."""
        n, d = centred.shape
        a = self.shrinkage * trace / d + self.eps
        c = (1.0 - self.shrinkage) / (n - 1)
        gram = centred @ centred.T if n <= d else centred.T @ centred
        small = torch.eye(gram.shape[0], dtype=centred.dtype, device=centred.device) + (c / a) * gram
        return d * torch.log(a) + 2.0 * torch.log(torch.diagonal(torch.linalg.cholesky(small))).sum()

    def compute_terms(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        n_total, d = z.shape
        k = self.num_classes
        var = self._sigma**2
        # Statistics in float64: ln det of a 512-dim covariance loses precision in float32.
        z64, mu = z.double(), self.vertices.double()
        onehot = F.one_hot(y, k).double()  # (N, K)
        counts = onehot.sum(0)  # n_k
        means = onehot.T @ z64 / counts.clamp(min=1)[:, None]
        mean_term = (means - mu).pow(2).sum(1) / var
        centred = z64 - means[y]
        denom = (counts - 1).clamp(min=1)
        trace = onehot.T @ centred.pow(2).sum(1) / denom  # tr S_k
        has_cov = counts >= 2
        # All classes at once: each class's centred rows in a zero-padded (K, m, d) block. Padding rows are
        # zero, so they add exact ones to the diagonal of I + (c/a) G and leave ln det unchanged.
        order = torch.argsort(y, stable=True)
        y_sorted = y[order]
        starts = (torch.cumsum(counts, 0) - counts).long()
        pos = torch.arange(n_total, device=z.device) - starts[y_sorted]
        m = int(counts.max())
        block = z64.new_zeros(k, m, d).index_put((y_sorted, pos), centred[order])
        gram = block @ block.transpose(1, 2) if m <= d else block.transpose(1, 2) @ block
        a = self.shrinkage * trace / d + self.eps
        c = torch.where(has_cov, (1.0 - self.shrinkage) / denom, torch.zeros_like(denom))
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        chol = torch.linalg.cholesky(eye + (c / a)[:, None, None] * gram)
        logdet = d * torch.log(a) + 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        kl_full = 0.5 * ((trace + d * self.eps) / var + mean_term - d + d * math.log(var) - logdet)
        # A class with one sample has no covariance estimate: only its mean term counts.
        kl_k = torch.where(has_cov, kl_full, 0.5 * mean_term)
        terms = {"kl": ((counts / n_total) * kl_k).sum().to(z.dtype)}
        if self.lam > 0:
            pull = (z - self.vertices[y]).pow(2).sum(1).mean() / (2.0 * var)
            terms["pull"] = self.lam * pull
        return terms


class MMCLoss(_SimplexHead):
    """Max-Mahalanobis centre loss (Pang et al., ICLR 2020): ``1/2 ||z - mu_y||^2`` on the GCCS simplex.

    Same centres and the same nearest-vertex scores as GCCS, so a comparison isolates the loss.
    ``sigma`` only scales the scores (the prediction does not depend on it).
    """

    name = "mmc"

    def __init__(
        self, num_classes: int, latent_dim: int, sigma: float = DEFAULT_SIGMA, radius: float = DEFAULT_RADIUS
    ) -> None:
        super().__init__(num_classes, latent_dim, sigma, radius)

    def hparams(self) -> dict[str, float]:
        return {"sigma": self.sigma, "radius": self.radius}

    def compute_terms(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mmc": 0.5 * (z - self.vertices[y]).pow(2).sum(1).mean()}


class CrossEntropyLoss(LatentLoss):
    """Softmax cross-entropy with a learned linear head ``s = W z + b``."""

    name = "ce"

    def __init__(self, num_classes: int, latent_dim: int) -> None:
        super().__init__(num_classes, latent_dim)
        self.head = nn.Linear(latent_dim, num_classes)

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)

    def compute_terms(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(self.head(z), y)}


class CenterLoss(CrossEntropyLoss):
    """Center loss (Wen et al., ECCV 2016): cross-entropy + ``lam/2 * mean_i ||z_i - c_{y_i}||^2``.

    The centres ``c_k`` are learned with the rest of the network (same optimizer). The prediction
    is the linear head's; the centres are a regulariser and are exposed for plotting.
    """

    name = "center"

    def __init__(self, num_classes: int, latent_dim: int, lam: float = 0.01) -> None:
        super().__init__(num_classes, latent_dim)
        _check_range("lam", lam, 0.0, low_open=False)
        self.lam = float(lam)
        self.learned_centers = nn.Parameter(torch.randn(num_classes, latent_dim))

    def hparams(self) -> dict[str, float]:
        return {"lam": self.lam}

    @property
    def centers(self) -> torch.Tensor:
        return self.learned_centers

    def compute_terms(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = super().compute_terms(z, y)
        terms["center"] = 0.5 * self.lam * (z - self.learned_centers[y]).pow(2).sum(1).mean()
        return terms


LOSSES: dict[str, type[LatentLoss]] = {cls.name: cls for cls in (GCCSLoss, CrossEntropyLoss, MMCLoss, CenterLoss)}


def loss_parameters(name: str) -> list[str]:
    """Names of the hyperparameters that loss ``name`` accepts."""
    if name not in LOSSES:
        raise ValueError(f"loss={name!r} is unknown; allowed: {', '.join(LOSSES)}.")
    sig = inspect.signature(LOSSES[name].__init__)
    return [p for p in sig.parameters if p not in ("self", "num_classes", "latent_dim")]


def build_loss(name: str, num_classes: int, latent_dim: int, **hparams: float) -> LatentLoss:
    """Build a loss by name (``gccs``, ``ce``, ``mmc``, ``center``) with its hyperparameters."""
    allowed = loss_parameters(name)
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ValueError(
            f"loss {name!r} does not take parameter(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}."
        )
    return LOSSES[name](num_classes, latent_dim, **hparams)
