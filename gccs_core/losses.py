"""Latent-space losses, one small class each, behind one interface.

Every loss is an ``nn.Module`` that is also the classifier *head*: it owns whatever parameters or
fixed centres its decision rule needs.

* ``loss(z, y)`` -> scalar loss (mean over the batch); named sub-terms land in ``loss.last_terms``.
* ``loss.scores(z)`` -> (N, K) class scores: the decision rule the loss trains for. Attacks and
  evaluation always use these scores, never a guessed rule.
* ``loss.centers`` -> (K, d) class centres or ``None``; ``loss.sigma`` -> float or ``None``.

The GCCS papers' equations were not available, so ``gccs`` is our reconstruction and the other
``gccs-*`` classes are the other plausible readings of the same stated design (same simplex, same
target N(mu_k, sigma^2 I), same nearest-vertex scores; only the divergence differs). The equations
and the reasons for each are written out in docs/gccs.md.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .simplex import DEFAULT_RADIUS, DEFAULT_SIGMA, edge_length, simplex_vertices
from .validation import check_int, check_number

# -- parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Range:
    minimum: float
    maximum: float | None = None
    open_low: bool = True


RANGES: dict[str, _Range] = {
    "sigma": _Range(0.0),
    "radius": _Range(0.0),
    "shrinkage": _Range(0.0, 1.0, open_low=False),
    "lam": _Range(0.0, open_low=False),
    "cov_eps": _Range(0.0),
    "kappa": _Range(0.0, open_low=False),
}
"""Allowed values of every loss hyperparameter (checked in the constructors, reported by ``loss_parameters``)."""

HELP: dict[str, str] = {
    "sigma": "per-dimension standard deviation of every target Gaussian N(mu_k, sigma^2 I)",
    "radius": "vertex norm r of the simplex (only Delta/sigma matters for separability)",
    "shrinkage": "weight rho of the (tr S / d) I target in the shrunk batch covariance",
    "lam": "weight of the per-sample pull lam * mean ||z - mu_y||^2 / (2 sigma^2)",
    "cov_eps": "ridge added to every batch covariance (keeps ln det and the matrix square root smooth)",
    "kappa": "latent distance, in units of sigma, below which a point is penalised for its closeness to a "
             "bisecting hyperplane",
}

DEPRECATED: dict[str, str] = {"eps": "cov_eps"}
"""Old parameter names still accepted by ``build_loss`` (the shipped checkpoints store ``eps``)."""


class LossParameter(str):
    """A loss hyperparameter: the string is its name; ``default``, ``minimum``, ``maximum`` (None: unbounded),
    ``open_low`` (True: ``> minimum``, False: ``>= minimum``) and ``help`` describe it."""

    default: float
    minimum: float
    maximum: float | None
    open_low: bool
    help: str

    def __new__(cls, name: str, default: float, text: str) -> LossParameter:
        self = super().__new__(cls, name)
        rng = RANGES[name]
        self.default, self.minimum, self.maximum, self.open_low, self.help = (
            default, rng.minimum, rng.maximum, rng.open_low, text)
        return self

    def __reduce__(self) -> tuple[Any, ...]:  # copy, deepcopy and pickle rebuild it from its three fields
        return (LossParameter, (str(self), self.default, self.help))

    def check(self, value: Any) -> float:
        """``value`` as a float, or a one-line ``ValueError`` naming the parameter and its allowed range."""
        return check_number(str(self), value, self.minimum, open_low=self.open_low, maximum=self.maximum)


def prototype_scores(z: torch.Tensor, centers: torch.Tensor, sigma: float) -> torch.Tensor:
    """Scores ``s_k(z) = -||z - mu_k||^2 / (2 sigma^2)`` for every class, shape (N, K)."""
    sq = (z.unsqueeze(1) - centers.unsqueeze(0)).pow(2).sum(-1)
    return -sq / (2.0 * sigma * sigma)


# -- base classes -------------------------------------------------------------------------------


class LatentLoss(nn.Module):
    """Base class: checks inputs once, then calls ``compute_terms`` of the subclass."""

    name: ClassVar[str] = ""
    prototype: ClassVar[bool] = False
    """True when the prediction is the nearest fixed centre (GCCS and its readings, MMC)."""
    help_overrides: ClassVar[dict[str, str]] = {}
    """Per-loss wording of a parameter's help where it differs from ``HELP``."""

    def __init__(self, num_classes: int, latent_dim: int) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.latent_dim = check_int("latent_dim", latent_dim, 1)
        self._last: tuple[tuple[str, ...], torch.Tensor] | None = None

    # -- interface -------------------------------------------------------------------------
    def hparams(self) -> dict[str, float]:
        """Hyperparameters that rebuild this loss (saved in checkpoints)."""
        return {p: getattr(self, p) for p in loss_parameters(self.name)}

    @property
    def centers(self) -> torch.Tensor | None:
        return None

    @property
    def sigma(self) -> float | None:
        return None

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute_terms(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named scalar terms whose sum is the loss."""
        raise NotImplementedError

    def loss_and_terms(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, tuple[str, ...], torch.Tensor]:
        """The loss, the term names and a vector of their detached values (override to fuse the sum)."""
        terms = self.compute_terms(z, y)
        values = torch.stack(list(terms.values()))
        return values.sum(), tuple(terms), values.detach()

    @property
    def last_terms(self) -> dict[str, float]:
        """The named terms of the last ``forward`` (read on demand: no host-device sync in the step)."""
        if self._last is None:
            return {}
        names, values = self._last
        return dict(zip(names, values.tolist()))

    # -- shared ----------------------------------------------------------------------------
    def _set_parameters(self, values: dict[str, Any]) -> None:
        for p in loss_parameters(self.name):
            setattr(self, p, p.check(values[p]))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z has shape {tuple(z.shape)}; expected (N, {self.latent_dim}).")
        if y.dim() != 1 or y.shape[0] != z.shape[0]:
            raise ValueError(f"labels have shape {tuple(y.shape)}; expected ({z.shape[0]},) to match z.")
        if y.numel() and y.device.type == "cpu":
            low, high = (int(v) for v in torch.aminmax(y))
            if low < 0 or high >= self.num_classes:
                raise ValueError(f"labels must lie in [0, {self.num_classes - 1}]; got values in [{low}, {high}].")
        elif y.numel():  # on an accelerator: checked without waiting for the device
            torch._assert_async(((y >= 0) & (y < self.num_classes)).all(),
                                f"labels must lie in [0, {self.num_classes - 1}]")
        y = y.to(device=z.device, dtype=torch.long)
        total, names, values = self.loss_and_terms(z, y)
        self._last = (names, values)
        return total

    def extra_repr(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.hparams().items())
        return f"num_classes={self.num_classes}, latent_dim={self.latent_dim}" + (f", {params}" if params else "")


class _SimplexHead(LatentLoss):
    """Shared part of the prototype losses: fixed simplex centres and nearest-vertex scores."""

    prototype = True

    def __init__(self, num_classes: int, latent_dim: int, **params: Any) -> None:
        super().__init__(num_classes, latent_dim)
        self._set_parameters(params)
        self.register_buffer("vertices", simplex_vertices(num_classes, latent_dim, self.radius))

    @property
    def centers(self) -> torch.Tensor:
        return self.vertices

    @property
    def sigma(self) -> float:
        return self._sigma

    @sigma.setter
    def sigma(self, value: float) -> None:
        self._sigma = value

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        return prototype_scores(z, self.vertices, self._sigma)

    def _pull(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``mean_i ||z_i - mu_{y_i}||^2 / (2 sigma^2)``: the per-sample Gaussian likelihood term (up to a constant)."""
        return (z - self.vertices[y]).pow(2).sum(1).mean() / (2.0 * self._sigma**2)


# -- batch statistics ---------------------------------------------------------------------------


def _onehot(y: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, K) indicator matrix, built without ``F.one_hot``'s range check (a host sync on accelerators)."""
    return torch.zeros(y.shape[0], k, dtype=dtype, device=y.device).scatter_(1, y[:, None], 1.0)


def _class_stats(z: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """Per-class counts n_k, means m_k, centred rows z_i - m_{y_i} and the (N, K) indicator (autograd-friendly)."""
    onehot = _onehot(y, k, z.dtype)
    counts = onehot.sum(0)
    means = onehot.T @ z / counts.clamp(min=1)[:, None]
    return counts, means, z - means[y], onehot


SMALL_DIM = 64
"""Up to this latent dimension, per-class statistics use the d x d covariances; above it, per-class Gram matrices."""


def _spectral_blocks(centred: torch.Tensor, y: torch.Tensor, counts: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """(K, s, s) symmetric matrices whose nonzero eigenvalues are those of each class's covariance S_k.

    For d <= ``SMALL_DIM``: S_k itself (s = d). Above: the Gram matrix of the class's centred rows divided by
    n_k - 1, zero-padded to the largest class (s = max n_k; this reads max n_k, one host sync per step).
    """
    n, d = centred.shape
    k = counts.shape[0]
    denom = (counts - 1).clamp(min=1)[:, None, None]
    if d <= SMALL_DIM:
        return (onehot.T.unsqueeze(-1) * centred).transpose(1, 2) @ centred / denom
    order = torch.argsort(y, stable=True)
    starts = (torch.cumsum(counts, 0) - counts).long()
    pos = torch.arange(n, device=y.device) - starts[y[order]]
    m = int(counts.max())
    block = centred.new_zeros(k, m, d).index_put((y[order], pos), centred[order])
    return block @ block.transpose(1, 2) / denom


# -- the fast GCCS KL ---------------------------------------------------------------------------


def _kl_and_gradient(z: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, var: float, rho: float, eps: float,
                     lam: float, need_grad: bool, fused: bool = False) -> tuple[torch.Tensor, ...]:
    """``kl``, ``pull`` and (with ``need_grad``) their gradients in z, all without autograd.

    With ``fused`` the third item is the gradient of ``kl + pull`` and the fourth is ``None``.
    """
    n_total, d = z.shape
    k = mu.shape[0]
    if k * d**3 + n_total * d * d <= n_total**3 + n_total * n_total * d:
        return _kl_small(z, y, mu, var, rho, eps, lam, need_grad, fused)
    kl, pull, kl_grad, pull_grad = _kl_gram(z, y, mu, var, rho, eps, lam, need_grad)
    return (kl, pull, kl_grad.add_(pull_grad), None) if fused and need_grad else (kl, pull, kl_grad, pull_grad)


class _TorchArrays:
    """What ``_kl_small`` needs beyond the operators torch tensors and numpy arrays share."""

    log = staticmethod(torch.log)

    @staticmethod
    def at_least_one(x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=1)

    @staticmethod
    def zeros(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    @staticmethod
    def arange(n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.arange(n, device=like.device)

    @staticmethod
    def factor(shrunk: torch.Tensor, need_inverse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        chol = torch.linalg.cholesky_ex(shrunk)[0]  # unchecked: no sync; a failed factor gives NaN
        return chol, (torch.cholesky_inverse(chol) if need_inverse else None)


class _NumpyArrays:
    """The same for numpy arrays; the batched factorisation stays torch's (faster here than numpy's)."""

    log = staticmethod(np.log)

    @staticmethod
    def at_least_one(x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 1.0)  # ndarray.clip costs several times more on arrays this small

    @staticmethod
    def zeros(shape: tuple[int, ...], like: np.ndarray) -> np.ndarray:
        return np.zeros(shape, dtype=like.dtype)

    @staticmethod
    def arange(n: int, like: np.ndarray) -> np.ndarray:
        return np.arange(n)

    @staticmethod
    def factor(shrunk: np.ndarray, need_inverse: bool) -> tuple[np.ndarray, np.ndarray | None]:
        chol = torch.linalg.cholesky_ex(torch.from_numpy(shrunk))[0]
        return chol.numpy(), (torch.cholesky_inverse(chol).numpy() if need_inverse else None)


def _kl_small(z: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, var: float, rho: float, eps: float,
              lam: float, need_grad: bool, fused: bool = False, backend: str | None = None) -> tuple[torch.Tensor, ...]:
    """The d x d route: every class's scatter matrix from one matmul, one batched Cholesky (and inverse).

    One set of formulas on either torch tensors or numpy arrays (``backend``; default numpy on the CPU, torch
    elsewhere). On a small encoder the loss's cost is the number of array operations, not their size, and a numpy
    call on arrays this small costs a fraction of a torch call: on the digits MLP the numpy backend takes about
    17% off the loss's forward + backward (bench/bench_loss_step.py). The CPU tensors are viewed, not copied.
    """
    if backend is None:
        backend = "numpy" if z.device.type == "cpu" else "torch"
    if backend == "numpy":
        with np.errstate(all="ignore"):  # a non-finite latent gives NaN silently, as on the torch backend
            out = _kl_small_arrays(_NumpyArrays, z.numpy(), y.numpy(), mu.numpy(), var, rho, eps, lam, need_grad, fused)
        return tuple(None if v is None else torch.from_numpy(np.asarray(v)) for v in out)
    return _kl_small_arrays(_TorchArrays, z, y, mu, var, rho, eps, lam, need_grad, fused)


def _kl_small_arrays(xp: Any, z: Any, y: Any, mu: Any, var: float, rho: float, eps: float, lam: float,
                     need_grad: bool, fused: bool) -> tuple[Any, ...]:
    n_total, d = z.shape
    k = mu.shape[0]
    rows, diag = xp.arange(n_total, y), xp.arange(d, y)
    onehot = xp.zeros((n_total, k), z)
    onehot[rows, y] = 1.0
    counts = onehot.sum(0)
    means = (onehot.T @ z) / xp.at_least_one(counts)[:, None]
    centred = z - onehot @ means  # exactly 0 for a one-sample class
    if n_total * d * d <= 1 << 22:  # N d^2 floats are cheap to hold: outer products
        scatter = (onehot.T @ (centred[:, :, None] * centred[:, None, :]).reshape(n_total, d * d)).reshape(k, d, d)
    else:
        spread = (onehot[:, :, None] * centred[:, None, :]).reshape(n_total, k * d)
        scatter = (centred.T @ spread).reshape(d, k, d).swapaxes(0, 1)
    inv_denom = 1.0 / xp.at_least_one(counts - 1)
    trace = scatter[:, diag, diag].sum(-1) * inv_denom  # tr S_k
    shrunk = scatter * (inv_denom * (1.0 - rho))[:, None, None]  # S^_k = (1 - rho) S_k + a_k I
    shrunk[:, diag, diag] += (trace * (rho / d) + eps)[:, None]
    chol, inv = xp.factor(shrunk, need_grad)
    logdet = 2.0 * xp.log(chol[:, diag, diag]).sum(-1)
    diff = means - mu
    # sum_k n_k KL_k: every class's mean term, the spread terms of the classes with >= 2 samples
    weight = counts * (counts >= 2)
    spread_term = (trace * (1.0 / var) - logdet) @ weight + float(d * eps / var - d + d * math.log(var)) * weight.sum()
    kl = ((diff * diff).sum(1) @ counts * (1.0 / var) + spread_term) * (0.5 / n_total)
    offset = z - onehot @ mu
    pull = (offset * offset).sum() * (lam / (2.0 * var * n_total))
    if not need_grad:
        return kl, pull, None, None
    # d kl / d z_i = x_i G_k + (m_k - mu_k) / (N sigma^2), G_k = (n_k / (N (n_k-1))) (beta_k I - (1-rho) S^_k^-1),
    # beta_k = 1/sigma^2 - (rho/d) tr S^_k^-1; 0 spread part for a one-sample class (x_i = 0).
    scale = counts * inv_denom * (1.0 / n_total)
    gk = inv * (scale * (rho - 1.0))[:, None, None]
    beta = inv[:, diag, diag].sum(-1) * (-rho / d) + 1.0 / var
    # fused: the pull's gradient lam (x_i + m_k - mu_k) / (N sigma^2) folded into G_k and the mean term
    pull_scale = lam / (n_total * var) if fused else 0.0
    gk[:, diag, diag] += (scale * beta + pull_scale)[:, None]
    # every row times every class's G_k in one matmul, then each row's own class picked out
    per_class = (centred @ gk.swapaxes(0, 1).reshape(d, k * d)).reshape(n_total, k, d)
    kl_grad = per_class[rows, y] + onehot @ (diff * (1.0 / (n_total * var) + pull_scale))
    return kl, pull, kl_grad, (None if fused else offset * (lam / (n_total * var)))


def _kl_gram(z: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, var: float, rho: float, eps: float,
             lam: float, need_grad: bool) -> tuple[torch.Tensor, ...]:
    """The Gram route (matrix determinant lemma), for d large against the batch.

    All classes in one N x N block-diagonal matrix M = diag(a_y) + c_y [y_i = y_j] x_i^T x_j; Cholesky has no
    fill-in across classes, so the log of its diagonal, summed per class, is ln det M_k; and
    X_k S^_k^-1 = M_k^-1 X_k (Woodbury).
    """
    n_total, d = z.shape
    k = mu.shape[0]
    onehot = _onehot(y, k, z.dtype)
    counts = onehot.sum(0)
    means = onehot.T @ z / counts.clamp(min=1)[:, None]
    centred = z - onehot @ means  # exactly 0 for a class with one sample; a matmul gathers faster than indexing
    denom = (counts - 1).clamp(min=1)
    c = (1.0 - rho) / denom  # S^_k = c_k X_k^T X_k + a_k I, X_k the centred rows of class k
    solved = trinv = None
    trace = onehot.T @ (centred * centred).sum(1) / denom
    a = trace * (rho / d) + eps
    gram = (centred @ centred.T) * (onehot @ onehot.T) * c[y][:, None]
    rows = torch.arange(n_total, device=z.device)
    gram[rows, rows] += a[y]
    chol = torch.linalg.cholesky_ex(gram)[0]
    logdet = (d - counts) * torch.log(a) + 2.0 * (onehot.T @ torch.log(chol.diagonal(0, -2, -1)))
    if need_grad:
        solved = torch.cholesky_solve(centred, chol)
        trinv = (d - c * (onehot.T @ (solved * centred).sum(1))) / a  # tr S^_k^-1
    diff = means - mu
    mean_term = (diff * diff).sum(1) / var
    kl_full = 0.5 * ((trace + d * eps) / var + mean_term - d + d * math.log(var) - logdet)
    # A class with one sample has no covariance estimate: only its mean term counts.
    kl = (counts * torch.where(counts >= 2, kl_full, 0.5 * mean_term)).sum() / n_total
    offset = z - onehot @ mu
    pull = (offset * offset).sum() * (lam / (2.0 * var * n_total))
    if not need_grad:
        return kl, pull, None, None
    # d kl / d z_i = (n_k/N) (x_i G_k) / (n_k-1) + (m_k - mu_k) / (N sigma^2), with G_k = beta_k I - (1-rho) S^_k^-1
    # and beta_k = 1/sigma^2 - (rho/d) tr S^_k^-1 (d tr S^ and d ln det S^ by S); 0 for a one-sample class (x_i = 0).
    # d pull / d z_i = lam (z_i - mu_y) / (N sigma^2).
    beta = 1.0 / var - (rho / d) * trinv
    scale = counts / (n_total * denom)
    kl_grad = scale[y][:, None] * (beta[y][:, None] * centred - (1.0 - rho) * solved)
    kl_grad = kl_grad + onehot @ (diff * (1.0 / (n_total * var)))
    return kl, pull, kl_grad, offset * (lam / (n_total * var))


class _GaussianKL(torch.autograd.Function):
    """The GCCS batch KL and the pull term as a vector ``[kl, pull]``, with the gradient from ``_kl_and_gradient``."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, var: float, rho: float,  # type: ignore[override]
                eps: float, lam: float, dtype: torch.dtype) -> torch.Tensor:
        need_grad = ctx.needs_input_grad[0]
        kl, pull, kl_grad, pull_grad = _kl_and_gradient(z.detach().to(dtype), y, mu.detach().to(dtype), var, rho, eps,
                                                        lam, need_grad)
        if need_grad:
            ctx.save_for_backward(torch.stack((kl_grad, pull_grad)).to(z.dtype))
        return torch.stack((kl, pull)).to(z.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (grads,) = ctx.saved_tensors
        return torch.tensordot(grad_out, grads, 1), None, None, None, None, None, None, None


class _GaussianKLTotal(torch.autograd.Function):
    """``kl + pull`` (differentiable) and the detached vector ``[kl, pull]``: one saved gradient, one op backward."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, var: float, rho: float,  # type: ignore[override]
                eps: float, lam: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        need_grad = ctx.needs_input_grad[0]
        kl, pull, grad, _ = _kl_and_gradient(z.detach().to(dtype), y, mu.detach().to(dtype), var, rho, eps, lam,
                                             need_grad, fused=True)
        if need_grad:
            ctx.save_for_backward(grad.to(z.dtype))
        values = torch.stack((kl, pull))
        ctx.mark_non_differentiable(values)
        return values.sum().to(z.dtype), values.to(z.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_total: torch.Tensor, _: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_total, None, None, None, None, None, None, None


def gaussian_kl(z: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, sigma: float, shrinkage: float, cov_eps: float,
                lam: float = 0.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """GCCS's two terms as a vector ``[kl, pull]`` (differentiable in ``z``).

    ``kl = sum_k (n_k / N) KL(N(m_k, S^_k) || N(mu_k, sigma^2 I))`` over the classes present, with
    ``S^_k = (1 - rho) S_k + (rho tr S_k / d + cov_eps) I``; a class with one sample contributes
    ``||m_k - mu_k||^2 / (2 sigma^2)``. ``pull = lam * mean_i ||z_i - mu_{y_i}||^2 / (2 sigma^2)``.
    Computed in ``dtype`` (at least float32) by one batched Cholesky (d x d per class, or one N x N
    block-diagonal Gram matrix when that is cheaper), with the gradient written out: no per-class kernels,
    no Python loop, no host-device synchronisation. Not twice differentiable.
    """
    dtype = torch.promote_types(dtype, torch.float32)
    return _GaussianKL.apply(z, y, mu, float(sigma) ** 2, float(shrinkage), float(cov_eps), float(lam), dtype)


# -- GCCS and its readings ----------------------------------------------------------------------


class GCCSLoss(_SimplexHead):
    """Gaussian class-conditional simplex loss (our reconstruction; see docs/gccs.md).

    For every class k present in the batch (n_k samples, latent mean m_k, covariance S_k shrunk
    towards ``(tr S_k / d) I`` by ``shrinkage`` plus ``cov_eps I``)::

        KL_k = 1/2 [ tr(S_k)/sigma^2 + ||m_k - mu_k||^2/sigma^2 - d + d ln sigma^2 - ln det S_k ]
        loss = sum_k (n_k / N) KL_k  +  lam * mean_i ||z_i - mu_{y_i}||^2 / (2 sigma^2)

    A class with a single sample in the batch has no covariance estimate; it contributes only its
    mean term ``||m_k - mu_k||^2 / (2 sigma^2)``.

    Precision: the statistics are computed in float32 by default (``gaussian_kl``). Against float64
    (``float64=True``) the loss agrees to a relative 1e-5 and its gradient to a relative 1e-4 (norm of
    the difference over the norm of the gradient) at d = 16 and d = 512, for classes of 1 to 40
    samples (rank-deficient at d = 512) spread from sigma down to 0.01 sigma around their vertices
    (tests/test_losses_speed.py). The reason: the shrunk covariance's condition number is at most
    1 + (1 - rho) d / rho (145 at d = 16, 4600 at d = 512), so float32 Cholesky factors are accurate.

    Args:
        sigma: per-dimension standard deviation of every target Gaussian (> 0).
        radius: vertex norm r of the simplex (> 0). Only ``Delta / sigma`` matters for separability.
        shrinkage: rho in [0, 1], weight of the ``(tr S / d) I`` target in the shrunk covariance.
        lam: weight (>= 0) of the optional per-sample pull term.
        cov_eps: ridge added to every covariance (> 0), keeps ``ln det`` finite (``eps`` in old checkpoints).
        float64: compute the statistics in float64 (slower; not a hyperparameter, not saved).
    """

    name = "gccs"

    def __init__(self, num_classes: int, latent_dim: int, sigma: float = DEFAULT_SIGMA, radius: float = DEFAULT_RADIUS,
                 shrinkage: float = 0.1, lam: float = 1.0, cov_eps: float = 1e-4, *, float64: bool = False) -> None:
        super().__init__(num_classes, latent_dim, sigma=sigma, radius=radius, shrinkage=shrinkage, lam=lam,
                         cov_eps=cov_eps)
        self.float64 = bool(float64)

    @property
    def _dtype(self) -> torch.dtype:
        return torch.float64 if self.float64 else torch.float32

    def _terms(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[kl, pull]`` as one vector."""
        return gaussian_kl(z, y, self.vertices, self._sigma, self.shrinkage, self.cov_eps, self.lam, self._dtype)

    def compute_terms(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        kl, pull = self._terms(z, y)
        return {"kl": kl, "pull": pull}

    def loss_and_terms(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, tuple[str, ...], torch.Tensor]:
        # the sum and its gradient fused in one autograd node (the same value and gradient as ``_terms(z, y).sum()``)
        total, values = _GaussianKLTotal.apply(z, y, self.vertices, float(self._sigma) ** 2, float(self.shrinkage),
                                               float(self.cov_eps), float(self.lam),
                                               torch.promote_types(self._dtype, torch.float32))
        return total, ("kl", "pull"), values


class GCCSSubspaceLoss(GCCSLoss):
    """GCCS with the spread constraint only on the simplex subspace span{mu_k} (K-1 dimensions).

    With Q an orthonormal basis of span{mu_k} and P the projector onto its complement::

        KL_k = KL( N(Q^T m_k, Q^T S^_k Q) || N(Q^T mu_k, sigma^2 I_{K-1}) )     (shrinkage as in gccs, in K-1 dims)
               + 1/2 [ ||P m_k||^2 + tr(P S_k P) ] / sigma^2
        loss = sum_k (n_k / N) KL_k  +  lam * mean_i ||z_i - mu_{y_i}||^2 / (2 sigma^2)

    The complement is **pulled to 0**: it keeps the KL's mean and trace terms (which push its mean and
    spread to zero) and drops the ``-ln det`` anti-collapse and the ``sigma^2`` spread target there. So
    no sigma-scale noise is forced into the d-K+1 dimensions that carry no class information, but those
    dimensions cannot drift either: they add the same ``||P z||^2`` to every class distance, and left
    free they could grow until float32 scores lose the class differences to cancellation. For
    d = K-1 this is exactly ``gccs``.
    """

    name = "gccs-subspace"

    def __init__(self, num_classes: int, latent_dim: int, sigma: float = DEFAULT_SIGMA, radius: float = DEFAULT_RADIUS,
                 shrinkage: float = 0.1, lam: float = 1.0, cov_eps: float = 1e-4, *, float64: bool = False) -> None:
        super().__init__(num_classes, latent_dim, sigma, radius, shrinkage, lam, cov_eps, float64=float64)
        # span{mu_k}: the right singular vectors of the (K, d) vertex matrix with nonzero singular values
        _, _, vh = torch.linalg.svd(self.vertices.double(), full_matrices=False)
        self.register_buffer("basis", vh[: num_classes - 1].T.to(self.vertices.dtype), persistent=False)

    def loss_and_terms(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, tuple[str, ...], torch.Tensor]:
        values = self._terms(z, y)
        return values.sum(), ("kl", "pull"), values.detach()

    def _terms(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        inside = z @ self.basis
        outside = z - inside @ self.basis.T
        kl_pull = gaussian_kl(inside, y, self.vertices @ self.basis, self._sigma, self.shrinkage, self.cov_eps, 0.0,
                              self._dtype)
        counts, means, centred, onehot = _class_stats(outside, y, self.num_classes)
        trace = onehot.T @ centred.pow(2).sum(1) / (counts - 1).clamp(min=1)
        per_class = means.pow(2).sum(1) + torch.where(counts >= 2, trace, torch.zeros_like(trace))
        kl = kl_pull[0] + ((counts / len(y)) * per_class).sum() / (2.0 * self._sigma**2)
        return torch.stack((kl, self.lam * self._pull(z, y)))


class GCCSMomentsLoss(_SimplexHead):
    """GCCS read as moment matching: class mean onto its vertex, class covariance onto sigma^2 I (Frobenius).

    For every class k present (S_k the unbiased batch covariance, no shrinkage, no ridge)::

        D_k  = 1/2 ||m_k - mu_k||^2 / sigma^2  +  1/4 ||S_k - sigma^2 I||_F^2 / sigma^4
        loss = sum_k (n_k / N) D_k  +  lam * mean_i ||z_i - mu_{y_i}||^2 / (2 sigma^2)

    The constants make D_k the KL's second-order expansion at the target (``tr A - d - ln det A ~
    ||A - I||_F^2 / 2``), so it has the KL's optimum and curvature there, but no ``ln det``: a singular
    S_k (n_k <= d) is fine without shrinkage and the gradient stays bounded. One-sample classes: mean
    term only.
    """

    name = "gccs-moments"

    def __init__(self, num_classes: int, latent_dim: int, sigma: float = DEFAULT_SIGMA, radius: float = DEFAULT_RADIUS,
                 lam: float = 1.0) -> None:
        super().__init__(num_classes, latent_dim, sigma=sigma, radius=radius, lam=lam)

    def compute_terms(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        d, var = self.latent_dim, self._sigma**2
        counts, means, centred, onehot = _class_stats(z, y, self.num_classes)
        blocks = _spectral_blocks(centred, y, counts, onehot)
        trace = torch.diagonal(blocks, dim1=-2, dim2=-1).sum(-1)
        frob = blocks.pow(2).sum((-2, -1)) - 2.0 * var * trace + d * var * var  # ||S_k - sigma^2 I||_F^2
        spread = torch.where(counts >= 2, frob / (4.0 * var * var), torch.zeros_like(frob))
        per_class = 0.5 * (means - self.vertices).pow(2).sum(1) / var + spread
        terms = {"moments": ((counts / len(y)) * per_class).sum()}
        if self.lam > 0:
            terms["pull"] = self.lam * self._pull(z, y)
        return terms


class GCCSW2Loss(_SimplexHead):
    """GCCS read as the 2-Wasserstein distance between each class's batch Gaussian and its target.

    For every class k present (S_k the unbiased batch covariance)::

        W2_k^2 = ||m_k - mu_k||^2 + ||(S_k + cov_eps I)^{1/2} - sigma I||_F^2
               = ||m_k - mu_k||^2 + tr S_k + d cov_eps - 2 sigma tr (S_k + cov_eps I)^{1/2} + d sigma^2
        loss   = sum_k (n_k / N) W2_k^2 / (2 sigma^2)  +  lam * mean_i ||z_i - mu_{y_i}||^2 / (2 sigma^2)

    (the closed form for an isotropic target). Divided by 2 sigma^2 so that the mean term is the KL's.
    The trace of the square root is a sum over eigenvalues (``eigvalsh`` of the d x d covariances, or of
    the n_k x n_k Gram matrices above ``SMALL_DIM``, whose gradient uses no eigenvalue gaps, so repeated
    zero eigenvalues of rank-deficient classes are harmless); ``cov_eps`` keeps ``sqrt`` differentiable at
    0. The spread gradient is proportional to ``sqrt(lambda) - sigma``: it does not explode when a
    direction collapses, unlike the KL's ``1/sigma^2 - 1/lambda``. One-sample classes: mean term only.
    """

    name = "gccs-w2"

    def __init__(self, num_classes: int, latent_dim: int, sigma: float = DEFAULT_SIGMA, radius: float = DEFAULT_RADIUS,
                 lam: float = 1.0, cov_eps: float = 1e-4) -> None:
        super().__init__(num_classes, latent_dim, sigma=sigma, radius=radius, lam=lam, cov_eps=cov_eps)

    def compute_terms(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        d, sigma, eps = self.latent_dim, self._sigma, self.cov_eps
        counts, means, centred, onehot = _class_stats(z, y, self.num_classes)
        blocks = _spectral_blocks(centred, y, counts, onehot)
        finite = torch.isfinite(blocks).all()  # eigvalsh fails on NaN; a NaN loss is reported instead
        eig = torch.linalg.eigvalsh(torch.where(finite, blocks, torch.zeros_like(blocks))).clamp(min=0.0)
        root_trace = (eig + eps).sqrt().sum(-1) + (d - blocks.shape[-1]) * math.sqrt(eps)
        spread = eig.sum(-1) + d * eps - 2.0 * sigma * root_trace + d * sigma * sigma
        spread = torch.where(counts >= 2, spread, torch.zeros_like(spread))
        per_class = (means - self.vertices).pow(2).sum(1) + spread
        w2 = ((counts / len(y)) * per_class).sum() / (2.0 * sigma * sigma)
        terms = {"w2": torch.where(finite, w2, torch.full_like(w2, math.nan))}
        if self.lam > 0:
            terms["pull"] = self.lam * self._pull(z, y)
        return terms


class GCCSHybridLoss(_SimplexHead):
    """GCCS read as a generative-discriminative hybrid: cross-entropy over the distance scores plus likelihood.

    ::

        loss = -mean_i log softmax_k( -||z_i - mu_k||^2 / (2 sigma^2) )[y_i]
               + lam * mean_i ||z_i - mu_{y_i}||^2 / (2 sigma^2)

    The only reading with an explicit push away from the other vertices (the softmax normaliser): it
    gives a latent margin. At large Delta/sigma the cross-entropy part saturates (the push vanishes for
    points well inside their region) and the likelihood term, i.e. MMC, does the rest.
    """

    name = "gccs-hybrid"
    help_overrides = {"lam": "weight of the per-sample likelihood term lam * mean ||z - mu_y||^2 / (2 sigma^2)"}

    def __init__(self, num_classes: int, latent_dim: int, sigma: float = DEFAULT_SIGMA, radius: float = DEFAULT_RADIUS,
                 lam: float = 1.0) -> None:
        super().__init__(num_classes, latent_dim, sigma=sigma, radius=radius, lam=lam)

    def compute_terms(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {"ce": F.cross_entropy(self.scores(z), y)}
        if self.lam > 0:
            terms["pull"] = self.lam * self._pull(z, y)
        return terms


class GCCSPathsLoss(_SimplexHead):
    """GCCS read literally as "few short paths toward neighbouring decision regions".

    With h_j(z) = (||z - mu_j||^2 - ||z - mu_y||^2) / (2 Delta), the signed distance of z from the
    hyperplane bisecting mu_y and mu_j (Delta/2 at the vertex, 0 on the boundary)::

        loss = mean_i sum_{j != y_i} softplus(kappa - h_j(z_i) / sigma)
               + lam * mean_i ||z_i - mu_{y_i}||^2 / (2 sigma^2)

    It penalises latent points closer than about kappa sigma to any decision boundary, and fades out
    beyond. It enlarges *latent* margins only; nothing in it controls the encoder's input Jacobian.
    """

    name = "gccs-paths"

    def __init__(self, num_classes: int, latent_dim: int, sigma: float = DEFAULT_SIGMA, radius: float = DEFAULT_RADIUS,
                 kappa: float = 3.0, lam: float = 1.0) -> None:
        super().__init__(num_classes, latent_dim, sigma=sigma, radius=radius, kappa=kappa, lam=lam)
        self.edge = edge_length(num_classes, self.radius)

    def compute_terms(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        sq = -2.0 * self._sigma**2 * self.scores(z)  # ||z - mu_k||^2
        dist = (sq - sq.gather(1, y[:, None])) / (2.0 * self.edge * self._sigma)  # h_j / sigma
        penalty = F.softplus(self.kappa - dist).scatter(1, y[:, None], 0.0).sum(1).mean()
        terms = {"paths": penalty}
        if self.lam > 0:
            terms["pull"] = self.lam * self._pull(z, y)
        return terms


# -- peers --------------------------------------------------------------------------------------


class MMCLoss(_SimplexHead):
    """Max-Mahalanobis centre loss (Pang et al., ICLR 2020): ``1/2 ||z - mu_y||^2`` on the GCCS simplex.

    Same centres and the same nearest-vertex scores as GCCS, so a comparison isolates the loss.
    ``sigma`` only scales the scores (the prediction does not depend on it).
    """

    name = "mmc"

    def __init__(
        self, num_classes: int, latent_dim: int, sigma: float = DEFAULT_SIGMA, radius: float = DEFAULT_RADIUS
    ) -> None:
        super().__init__(num_classes, latent_dim, sigma=sigma, radius=radius)

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
    help_overrides = {"lam": "weight of the centre term lam/2 * mean ||z - c_y||^2 (learned centres c_k)"}

    def __init__(self, num_classes: int, latent_dim: int, lam: float = 0.01) -> None:
        super().__init__(num_classes, latent_dim)
        self._set_parameters({"lam": lam})
        self.learned_centers = nn.Parameter(torch.randn(num_classes, latent_dim))

    @property
    def centers(self) -> torch.Tensor:
        return self.learned_centers

    def compute_terms(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = super().compute_terms(z, y)
        terms["center"] = 0.5 * self.lam * (z - self.learned_centers[y]).pow(2).sum(1).mean()
        return terms


LOSSES: dict[str, type[LatentLoss]] = {
    cls.name: cls
    for cls in (GCCSLoss, CrossEntropyLoss, MMCLoss, CenterLoss, GCCSSubspaceLoss, GCCSMomentsLoss, GCCSW2Loss,
                GCCSHybridLoss, GCCSPathsLoss)
}


def _check_name(name: str) -> type[LatentLoss]:
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"loss={name!r} is unknown; allowed: {', '.join(LOSSES)}.")
    return LOSSES[name]


def loss_parameters(name: str) -> list[LossParameter]:
    """The hyperparameters of loss ``name``, in constructor order.

    Each item is the parameter's name (a ``str``, so ``"sigma" in loss_parameters("gccs")`` works) carrying
    ``.default``, ``.minimum``, ``.maximum``, ``.open_low`` and ``.help``: what a CLI flag or a form field needs.
    """
    cls = _check_name(name)
    out = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name in ("self", "num_classes", "latent_dim") or p.kind is not p.POSITIONAL_OR_KEYWORD:
            continue  # keyword-only options (float64) change the precision, not the function: not hyperparameters
        out.append(LossParameter(p.name, p.default, cls.help_overrides.get(p.name, HELP[p.name])))
    return out


def canonical_loss_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with deprecated names (``eps``) replaced by the current ones (``cov_eps``) where loss ``name`` takes them."""
    allowed = loss_parameters(name)
    out = dict(params)
    for old, new in DEPRECATED.items():
        if old in out and new in allowed:
            if new in out:
                raise ValueError(f"loss {name!r} got both {old!r} (deprecated) and {new!r}; pass only {new!r}.")
            out[new] = out.pop(old)
    return out


def build_loss(name: str, num_classes: int, latent_dim: int, **hparams: float) -> LatentLoss:
    """Build a loss by name (see ``LOSSES``) with its hyperparameters (``eps`` is a deprecated alias of ``cov_eps``)."""
    allowed = loss_parameters(name)
    fixed = canonical_loss_params(name, hparams)
    if fixed.keys() != hparams.keys():
        warnings.warn(f"loss parameter {', '.join(sorted(set(hparams) - set(fixed)))!r} is deprecated; "
                      f"use {', '.join(sorted(set(fixed) - set(hparams)))!r}.", DeprecationWarning, stacklevel=2)
    unknown = sorted(set(fixed) - set(allowed))
    if unknown:
        raise ValueError(
            f"loss {name!r} does not take parameter(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}."
        )
    return LOSSES[name](num_classes, latent_dim, **fixed)
