"""Projections of latent vectors to 2-D/3-D for plotting, plus the latent-space facts a plot needs.

``LatentProjection`` follows the scikit-learn conventions: the constructor only stores parameters,
``fit(Z, y=None)`` returns ``self``, learned state ends in ``_``, ``transform`` checks that the object
is fitted and that the feature count matches, and ``fit_transform`` equals ``fit().transform()``.
Fit once on clean latents; then transform the prototypes, attack trajectories and training
snapshots with the same object so every frame shares the same axes.

Methods:

* ``simplex`` -- exact linear "simplex view". With prototypes ``p_k`` (simplex vertices, or class
  means for a model without vertices), centred at their mean, ``theta_k = 2 pi k / K``,
  ``a = sum_k cos(theta_k) p_k`` and ``b = sum_k sin(theta_k) p_k``. For a regular simplex ``a`` and
  ``b`` are orthogonal with equal norms, so projecting onto ``a/|a|, b/|b|`` maps the K vertices onto
  a regular K-gon (vertex k at angle ``theta_k``). For other prototypes the axes are orthonormalised
  (still an exact orthogonal projection; the polygon is then only approximately regular). The third
  axis (3-D) is ``sum_k cos(2 theta_k) p_k``.
* ``pca`` -- ``sklearn.decomposition.PCA`` (signs fixed by ``svd_flip``).
* ``lda`` -- ``sklearn.discriminant_analysis.LinearDiscriminantAnalysis`` (needs labels; at most K-1 axes).
* ``umap`` -- ``umap.UMAP`` (optional dependency, ``random_state`` fixed) fitted on the clean latents.
  New points (attack frames, snapshots) are placed, by default (``new_points="knn"``), the way UMAP
  initialises its own ``transform``: at the membership-weighted mean of the embedded positions of their
  ``n_neighbors`` nearest clean latents (exact search, UMAP's smooth-kNN weights). That is per point,
  deterministic and takes milliseconds, with no extra numba compilation (about 100 MB less memory
  than UMAP's transform). ``new_points="umap"`` uses ``umap.UMAP.transform`` instead, which also
  optimises the positions but depends on the batch (transform every frame in one call) and compiles
  pynndescent. Either way UMAP positions of new points are approximate.

The linear methods expose ``mean_`` (d,) and ``components_`` (n_components, d):
``transform(Z) = (Z - mean_) @ components_.T``.

This module needs only numpy (scikit-learn and umap are imported when used). Latent views, prototype
projection and animation panels live in ``gccs_core.views``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

PROJECTION_METHODS = ("simplex", "pca", "lda", "umap")
LINEAR_METHODS = ("simplex", "pca", "lda")
APPROXIMATE_METHODS = ("umap",)
UMAP_NEW_POINTS = ("knn", "umap")



def _smooth_knn_weights(dist: np.ndarray, iters: int = 64) -> np.ndarray:
    """Row-normalised UMAP memberships ``exp(-(d - rho) / sigma)`` for (n, k) neighbour distances.

    ``rho`` is each row's nearest distance and ``sigma`` solves ``sum_j exp(-(d_j - rho) / sigma) = log2(k)``
    (UMAP's ``smooth_knn_dist``), found by bisection for all rows at once.
    """
    k = dist.shape[1]
    excess = np.maximum(dist - dist.min(1, keepdims=True), 0.0)
    if k == 1:
        return np.ones_like(dist)
    target = math.log2(k)
    lo, hi = np.full(len(dist), 1e-12), np.full(len(dist), 1.0)
    for _ in range(iters):  # grow hi until it overshoots, then bisect
        grow = np.exp(-excess / hi[:, None]).sum(1) < target
        if not grow.any():
            break
        hi = np.where(grow, hi * 2.0, hi)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = np.exp(-excess / mid[:, None]).sum(1) < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    w = np.exp(-excess / hi[:, None])
    return w / w.sum(1, keepdims=True)


class NotFittedError(RuntimeError):
    """``transform`` was called before ``fit``."""


class LatentProjection:
    """Fit-once projection of latent vectors (N, d) to ``n_components`` (2 or 3) plotting axes.

    Args:
        method: one of ``PROJECTION_METHODS``.
        n_components: 2 or 3 (LDA: at most K-1; simplex: K >= 3 for 2-D, K >= 4 for 3-D).
        prototypes: (K, d) prototypes for the simplex view; ``None`` = class means of ``fit``'s data
            (then ``y`` is required).
        random_state: seed for UMAP (the linear methods are deterministic).
        n_neighbors, n_epochs, min_dist: UMAP parameters.
        new_points: how UMAP places points not in ``fit``'s data: ``knn`` (default) or ``umap``
            (see the module docstring).
    """

    def __init__(
        self,
        method: str = "simplex",
        n_components: int = 2,
        *,
        prototypes: np.ndarray | None = None,
        random_state: int = 0,
        n_neighbors: int = 15,
        n_epochs: int = 200,
        min_dist: float = 0.1,
        new_points: str = "knn",
    ) -> None:
        self.method = method
        self.n_components = n_components
        self.prototypes = prototypes
        self.random_state = random_state
        self.n_neighbors = n_neighbors
        self.n_epochs = n_epochs
        self.min_dist = min_dist
        self.new_points = new_points

    # -- properties ---------------------------------------------------------------------------
    @property
    def is_linear(self) -> bool:
        """True for the exact linear views (simplex, PCA, LDA), where projected Gaussians stay Gaussian."""
        return self.method in LINEAR_METHODS

    @property
    def is_approximate(self) -> bool:
        """True for UMAP: positions of new points are approximate (see ``new_points``)."""
        return self.method in APPROXIMATE_METHODS

    # -- fitting ------------------------------------------------------------------------------
    def _validate(self, Z: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if self.method not in PROJECTION_METHODS:
            raise ValueError(f"method={self.method!r} is unknown; allowed: {', '.join(PROJECTION_METHODS)}.")
        if self.new_points not in UMAP_NEW_POINTS:
            raise ValueError(f"new_points={self.new_points!r} is unknown; allowed: {', '.join(UMAP_NEW_POINTS)}.")
        if self.n_components not in (2, 3) or isinstance(self.n_components, bool):
            raise ValueError(f"n_components={self.n_components!r} is invalid; allowed: 2, 3.")
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[0] < 2 or Z.shape[1] < 1:
            raise ValueError(f"Z has shape {Z.shape}; expected (N, d) with N >= 2 samples.")
        if not np.isfinite(Z).all():
            raise ValueError("Z contains NaN or inf values.")
        if y is not None:
            y = np.asarray(y).astype(np.int64)
            if y.shape != (Z.shape[0],):
                raise ValueError(f"y has shape {y.shape}; expected ({Z.shape[0]},) to match Z.")
        return Z, y

    def fit(self, Z: np.ndarray, y: np.ndarray | None = None) -> LatentProjection:
        """Learn the projection from clean latents ``Z`` (N, d) (and labels ``y`` for LDA / class means)."""
        Z, y = self._validate(Z, y)
        self.n_features_in_ = Z.shape[1]
        if self.method == "simplex":
            self._fit_simplex(Z, y)
        elif self.method == "pca":
            self._fit_pca(Z)
        elif self.method == "lda":
            self._fit_lda(Z, y)
        else:
            self._fit_umap(Z)
        return self

    def _fit_simplex(self, Z: np.ndarray, y: np.ndarray | None) -> None:
        if self.prototypes is not None:
            protos = np.asarray(self.prototypes, dtype=np.float64)
            if protos.ndim != 2 or protos.shape[1] != Z.shape[1]:
                raise ValueError(f"prototypes have shape {protos.shape}; expected (K, {Z.shape[1]}) to match Z.")
        else:
            if y is None:
                raise ValueError("method='simplex' without prototypes needs labels y to use the class means.")
            protos = class_means(Z, y, int(y.max()) + 1)
            protos = protos[np.isfinite(protos).all(1)]
        k = protos.shape[0]
        need = 3 if self.n_components == 2 else 4
        if k < need:
            raise ValueError(f"the simplex view in {self.n_components}-D needs at least {need} prototypes; got K={k}.")
        centre = protos.mean(0)
        pc = protos - centre
        theta = 2.0 * np.pi * np.arange(k) / k
        axes = [np.cos(theta) @ pc, np.sin(theta) @ pc]
        if self.n_components == 3:
            axes.append(np.cos(2.0 * theta) @ pc)
        basis = np.stack(axes, 1)  # (d, n_components)
        q, r = np.linalg.qr(basis)
        diag = np.diag(r)
        if np.min(np.abs(diag)) < 1e-9 * max(1.0, float(np.abs(pc).max())):
            raise ValueError("the prototypes are degenerate (rank too low) for a simplex view; use pca instead.")
        q = q * np.sign(diag)  # first axis points along a, second along b's component orthogonal to a
        self.mean_ = centre
        self.components_ = q.T
        self.prototypes_ = protos

    def _fit_pca(self, Z: np.ndarray) -> None:
        from sklearn.decomposition import PCA

        n = min(self.n_components, Z.shape[1], Z.shape[0])
        if n < self.n_components:
            raise ValueError(f"n_components={self.n_components} must be <= min(n_samples, n_features)={n} for pca.")
        pca = PCA(n_components=self.n_components, svd_solver="full").fit(Z)
        self.mean_ = pca.mean_.astype(np.float64)
        self.components_ = pca.components_.astype(np.float64)
        self.explained_variance_ratio_ = pca.explained_variance_ratio_

    def _fit_lda(self, Z: np.ndarray, y: np.ndarray | None) -> None:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        if y is None:
            raise ValueError("method='lda' needs labels y.")
        n_classes = len(np.unique(y))
        limit = min(n_classes - 1, Z.shape[1])
        if self.n_components > limit:
            raise ValueError(f"n_components={self.n_components} must be <= min(n_classes - 1, n_features)={limit} for lda.")
        lda = LinearDiscriminantAnalysis(n_components=self.n_components, solver="svd").fit(Z, y)
        comps = lda.scalings_[:, : self.n_components].T.astype(np.float64)
        # Fix signs like svd_flip: the largest-magnitude coefficient of each axis is positive.
        signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(1)])
        signs[signs == 0] = 1.0
        self.mean_ = lda.xbar_.astype(np.float64)
        self.components_ = comps * signs[:, None]

    def _fit_umap(self, Z: np.ndarray) -> None:
        try:
            import umap
        except ImportError as err:  # pragma: no cover - umap-learn is in requirements.txt
            raise ImportError("method='umap' needs umap-learn: pip install 'gccs-explorer[app]' (or umap-learn).") from err
        reducer = umap.UMAP(
            n_components=self.n_components,
            n_neighbors=min(self.n_neighbors, Z.shape[0] - 1),
            n_epochs=self.n_epochs,
            min_dist=self.min_dist,
            random_state=self.random_state,
            # NN-descent makes UMAP's own transform fast on small sets; the knn placement needs exact neighbours only
            force_approximation_algorithm=self.new_points == "umap",
        )
        with warnings.catch_warnings():  # "n_jobs overridden by random_state": expected, we want reproducibility
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            reducer.fit(Z.astype(np.float32))
        self.reducer_ = reducer
        self.embedding_ = np.array(reducer.embedding_, dtype=np.float32, copy=True)
        self.fit_latents_ = Z.astype(np.float32)

    def _place_knn(self, flat: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """New points at the smooth-kNN-weighted mean of their nearest fitted points' embedding (UMAP's transform init)."""
        ref = self.fit_latents_.astype(np.float64)
        k = min(self.n_neighbors, len(ref))
        ref_sq = (ref**2).sum(1)
        out = np.empty((len(flat), self.n_components), dtype=np.float64)
        for i in range(0, len(flat), chunk):
            q = flat[i : i + chunk]
            d2 = np.maximum((q**2).sum(1)[:, None] - 2.0 * q @ ref.T + ref_sq[None], 0.0)
            idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
            dist = np.sqrt(np.take_along_axis(d2, idx, 1))
            out[i : i + chunk] = np.einsum("nk,nkc->nc", _smooth_knn_weights(dist), self.embedding_[idx].astype(np.float64))
        return out

    # -- transforming -------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"this LatentProjection(method={self.method!r}) is not fitted yet; call fit(Z, y) first.")

    def transform(self, Z: np.ndarray) -> np.ndarray:
        """Project ``Z`` of shape (..., d) to (..., n_components), float32; all points in one batch."""
        self._check_fitted()
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim < 1 or Z.shape[-1] != self.n_features_in_:
            got = Z.shape[-1] if Z.ndim else 0
            raise ValueError(f"Z has {got} features; this projection was fitted with {self.n_features_in_}.")
        lead = Z.shape[:-1]
        flat = Z.reshape(-1, self.n_features_in_)
        if self.is_linear:
            out = (flat - self.mean_) @ self.components_.T
        else:
            if not np.isfinite(flat).all():
                raise ValueError("Z contains NaN or inf values.")
            if self.new_points == "knn":
                out = self._place_knn(flat)
            else:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
                    out = self.reducer_.transform(flat.astype(np.float32))
        return np.asarray(out, dtype=np.float32).reshape(*lead, self.n_components)

    def fit_transform(self, Z: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """``fit(Z, y).transform(Z)`` (for UMAP: the training embedding itself)."""
        self.fit(Z, y)
        if self.method == "umap":
            return self.embedding_.copy()
        return self.transform(Z)

    def project_covariance(self, cov: np.ndarray) -> np.ndarray:
        """Covariance (d, d) -> (n, n) of the projected Gaussian (linear methods only)."""
        self._check_fitted()
        if not self.is_linear:
            raise ValueError(f"method={self.method!r} is not linear: a projected Gaussian is not a Gaussian there.")
        return self.components_ @ np.asarray(cov, dtype=np.float64) @ self.components_.T

    def __repr__(self) -> str:
        return f"LatentProjection(method={self.method!r}, n_components={self.n_components}, random_state={self.random_state})"


# -- class statistics ---------------------------------------------------------------------------


def class_means(Z: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class mean of ``Z`` (N, d) -> (K, d); a class with no sample gets a row of NaN."""
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y).astype(np.int64)
    if y.shape != (Z.shape[0],):
        raise ValueError(f"y has shape {y.shape}; expected ({Z.shape[0]},).")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]; got [{y.min()}, {y.max()}].")
    out = np.full((num_classes, Z.shape[1]), np.nan)
    for k in range(num_classes):
        if np.any(y == k):
            out[k] = Z[y == k].mean(0)
    return out


_MOVED_TO_VIEWS = ("PROTOTYPE_KINDS", "VIEW_FORMAT_VERSION", "choose_prototypes", "distances", "class_gaussians_2d",
                   "ellipse_points", "class_ellipses", "sample_indices", "latent_view", "projection_for_view",
                   "save_view", "load_view")


def __getattr__(name: str) -> Any:
    """The view half of this module moved to ``gccs_core.views``; the old names still resolve (deprecated)."""
    if name in _MOVED_TO_VIEWS:
        warnings.warn(f"gccs_core.projection.{name} moved to gccs_core.views.{name}", DeprecationWarning, stacklevel=2)
        from . import views

        return getattr(views, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
