"""Latent views and animation panels: what a latent-space plot needs, as numpy arrays, torch-free.

A *view* is everything one model's latent-space plot needs on a fixed set of samples: latents, labels,
predictions, distances to the prototypes, thumbnails and, per projection method, the 2-D/3-D
coordinates, the projected prototypes and the class Gaussians' contours. ``latent_view`` builds it
from a model (the only function here that needs torch, imported when called); ``save_view`` /
``load_view`` store it as a flat ``.npz`` (no pickle, with a format version), the shipped
``pretrained/projections/*.npz`` files that let the app paint its first page without torch.
``LatentView`` names the fields of that flat dict.

A *panel* is one model's side of an animation (attack steps or training epochs): frames of 2-D
points, predictions, prototypes, optional background and Gaussians. ``attack_panel``,
``preview_panel`` and ``snapshot_panel`` build them so that the app only hands them to a figure.

One rule for prototypes everywhere (``project_prototypes``): a class without a prototype (a
cross-entropy model's class absent from the plotted samples) gets a NaN row, which figures hide; it
is never drawn at the projection of the origin.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .projection import LINEAR_METHODS, LatentProjection, class_means

if TYPE_CHECKING:  # pragma: no cover
    from .data import Dataset
    from .models import LatentClassifier

PROTOTYPE_KINDS = ("simplex vertices", "learned centres", "class means")
"""What the drawn prototypes are: a GCCS/MMC model's vertices, a center-loss model's learned
centres, or (cross-entropy) the class means of the plotted latents."""

VIEW_FORMAT_VERSION = 1
VIEW_SAMPLES = {"digits": 360, "mnist5k": 500}
"""Samples plotted per dataset (the same ones in both panels of the app and in the shipped files)."""
DEFAULT_VIEW_SAMPLES = 500
VIEW_SEED = 0


def view_samples(dataset: str) -> int:
    """How many test samples a view of ``dataset`` plots (``VIEW_SAMPLES``, else ``DEFAULT_VIEW_SAMPLES``)."""
    return VIEW_SAMPLES.get(dataset, DEFAULT_VIEW_SAMPLES)


def fit_method(method: str) -> str:
    """The view method whose latents a projection is fitted on: UMAP views are fitted on the simplex view's."""
    return "simplex" if method == "umap" else method


# -- latent-space facts ---------------------------------------------------------------------------


def choose_prototypes(
    centers: np.ndarray | None, is_prototype: bool, Z: np.ndarray, y: np.ndarray, num_classes: int
) -> tuple[np.ndarray, str]:
    """The points drawn as class anchors and what they are (one of ``PROTOTYPE_KINDS``).

    Prototype models (GCCS, MMC) -> their simplex vertices; a model with learned centres (center
    loss) -> those; otherwise (cross-entropy) the class means of ``Z`` by true label ``y`` (NaN rows
    for classes absent from ``y``).
    """
    if centers is not None:
        return np.asarray(centers, dtype=np.float64), ("simplex vertices" if is_prototype else "learned centres")
    return class_means(Z, y, num_classes), "class means"


def project_prototypes(projection: LatentProjection, prototypes: np.ndarray) -> np.ndarray:
    """Prototypes (K, d) -> (K, n) plot coordinates; a class without a prototype (NaN row) stays NaN (hidden)."""
    protos = np.asarray(prototypes, dtype=np.float64)
    out = np.full((len(protos), projection.n_components), np.nan, dtype=np.float32)
    present = np.isfinite(protos).all(1)
    if present.any():
        out[present] = projection.transform(protos[present])
    return out


def distances(Z: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """Euclidean distance from every row of ``Z`` (..., d) to every prototype (K, d) -> (..., K)."""
    Z = np.asarray(Z, dtype=np.float64)
    P = np.asarray(prototypes, dtype=np.float64)
    if Z.shape[-1] != P.shape[-1]:
        raise ValueError(f"Z has {Z.shape[-1]} features but the prototypes have {P.shape[-1]}.")
    return np.sqrt(np.maximum(((Z[..., None, :] - P) ** 2).sum(-1), 0.0))


def class_gaussians_2d(coords: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (K, n) and covariance (K, n, n) of each class's projected points (NaN if < 2 samples).

    For a linear projection this is exactly the projection of the class's latent Gaussian fit.
    """
    coords = np.asarray(coords, dtype=np.float64)
    y = np.asarray(y).astype(np.int64)
    n = coords.shape[1]
    means = np.full((num_classes, n), np.nan)
    covs = np.full((num_classes, n, n), np.nan)
    for k in range(num_classes):
        pts = coords[y == k]
        if len(pts) >= 2:
            means[k] = pts.mean(0)
            covs[k] = np.cov(pts, rowvar=False)
    return means, covs


def ellipse_points(mean: np.ndarray, cov: np.ndarray, n_std: float = 1.0, n_points: int = 60) -> np.ndarray:
    """Closed contour (n_points + 1, 2) at ``n_std`` standard deviations of a 2-D Gaussian."""
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if mean.shape != (2,) or cov.shape != (2, 2):
        raise ValueError(f"ellipse_points needs a 2-D mean and a 2x2 covariance; got {mean.shape} and {cov.shape}.")
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2.0)
    radii = n_std * np.sqrt(np.clip(vals, 0.0, None))
    t = np.linspace(0.0, 2.0 * math.pi, n_points + 1)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    return mean + (circle * radii) @ vecs.T


def class_ellipses(means: np.ndarray, covs: np.ndarray, n_stds: Sequence[float] = (1.0, 2.0),
                   n_points: int = 48) -> np.ndarray:
    """Contours (K, len(n_stds), n_points + 1, 2) of every class Gaussian; NaN for classes without one."""
    k = len(means)
    out = np.full((k, len(n_stds), n_points + 1, 2), np.nan)
    for i in range(k):
        if np.isfinite(means[i]).all() and np.isfinite(covs[i]).all():
            for j, n_std in enumerate(n_stds):
                out[i, j] = ellipse_points(means[i], covs[i], n_std, n_points)
    return out


def _stratified_counts(counts: np.ndarray, n: int) -> np.ndarray:
    """Per-class sample counts summing to exactly ``n``, in proportion to ``counts`` (each class >= 1 if n allows).

    Starts from the rounded quotas (so the result is unchanged wherever rounding already summed to n), then
    takes from the classes rounded up the most, or gives to those rounded down the most, until the sum is n.
    """
    quota = n * counts / counts.sum()
    floor = 1 if n >= len(counts) else 0
    m = np.clip(np.round(quota), floor, counts).astype(np.int64)
    excess = m - quota  # how far each class was rounded up
    while m.sum() > n:
        k = int(np.argmax(np.where(m > floor, excess, -np.inf)))
        m[k] -= 1
        excess[k] -= 1.0
    while m.sum() < n:
        k = int(np.argmin(np.where(m < counts, excess, np.inf)))
        m[k] += 1
        excess[k] += 1.0
    return m


def sample_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Exactly ``n`` sorted indices drawn per class in proportion to its size (stratified), reproducible for ``seed``.

    All indices when ``n`` >= the number of samples; every class gets at least one sample when ``n`` >= the
    number of classes.
    """
    labels = np.asarray(labels).astype(np.int64)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r} is invalid: it must be an integer >= 1.")
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    picks = [rng.choice(np.flatnonzero(labels == k), size=int(m), replace=False)
             for k, m in zip(classes, _stratified_counts(counts, int(n)))]
    return np.sort(np.concatenate(picks))


# -- the view -------------------------------------------------------------------------------------------


class LatentView(Mapping[str, Any]):
    """A latent view: the flat dict of arrays that ``save_view`` writes, with named accessors.

    Read-only mapping access (``view["coords/pca"]``) keeps the file's keys; the accessors name the
    schema: ``idx``, ``y``, ``pred``, ``z``, ``dist``, ``prototypes``, ``prototype_kind``, ``images``,
    ``class_names``, ``sigma``, ``accuracy``, ``methods``, and per method ``coords(m)``,
    ``proto_coords(m)``, ``ellipses(m)``.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"LatentView(n={len(self.idx)}, kind={self.prototype_kind!r}, methods={self.methods})"

    @property
    def idx(self) -> np.ndarray:
        """(N,) sample indices into the dataset's test split, sorted."""
        return np.asarray(self._data["idx"])

    @property
    def y(self) -> np.ndarray:
        return np.asarray(self._data["y"])

    @property
    def pred(self) -> np.ndarray:
        return np.asarray(self._data["pred"])

    @property
    def z(self) -> np.ndarray:
        """(N, d) clean latents."""
        return np.asarray(self._data["z"])

    @property
    def dist(self) -> np.ndarray:
        """(N, K) distances to the prototypes."""
        return np.asarray(self._data["dist"])

    @property
    def prototypes(self) -> np.ndarray:
        """(K, d) prototypes; NaN rows for classes without one."""
        return np.asarray(self._data["prototypes"])

    @property
    def prototype_kind(self) -> str:
        return str(self._data["prototype_kind"])

    @property
    def images(self) -> np.ndarray:
        """(N, H, W, C) uint8 thumbnails."""
        return np.asarray(self._data["images"])

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self._data["class_names"]]

    @property
    def sigma(self) -> float:
        """The model's class standard deviation; NaN for a model without one."""
        return float(self._data["sigma"])

    @property
    def accuracy(self) -> float:
        return float(self._data["accuracy"])

    @property
    def methods(self) -> list[str]:
        return [str(m) for m in self._data.get("methods", [])]

    @property
    def checkpoint_sha256(self) -> str:
        """SHA-256 of the checkpoint a shipped view was made from ('' if not recorded)."""
        return str(self._data.get("checkpoint_sha256", ""))

    def position(self, sample: int) -> int | None:
        """Position in this view of dataset index ``sample``; None if the view does not hold it."""
        pos = int(np.searchsorted(self.idx, sample))
        return pos if pos < len(self.idx) and int(self.idx[pos]) == int(sample) else None

    def positions(self, samples: np.ndarray) -> np.ndarray:
        """Positions of dataset indices ``samples`` (all held by the view)."""
        pos = np.searchsorted(self.idx, samples)
        if (pos >= len(self.idx)).any() or not np.array_equal(self.idx[np.minimum(pos, len(self.idx) - 1)], samples):
            raise ValueError("some samples are not in this view.")
        return pos

    def has(self, method: str) -> bool:
        return f"coords/{method}" in self._data

    def coords(self, method: str) -> np.ndarray:
        """(N, n) coordinates of the samples in ``method``'s projection."""
        if not self.has(method):
            raise ValueError(f"this view has no {method!r} coordinates; it holds: {', '.join(self.methods)}.")
        return np.asarray(self._data[f"coords/{method}"])

    def proto_coords(self, method: str) -> np.ndarray:
        """(K, n) prototype coordinates (NaN rows hidden)."""
        return np.asarray(self._data[f"proto_coords/{method}"])

    def ellipses(self, method: str) -> np.ndarray | None:
        """(K, 2, P, 2) 1- and 2-sigma contours of the class Gaussians (linear 2-D methods), else None."""
        value = self._data.get(f"ellipse/{method}")
        return None if value is None else np.asarray(value)


def projection_for_view(view: Mapping[str, Any], method: str, n_components: int = 2,
                        random_state: int = 0) -> LatentProjection:
    """A ``LatentProjection`` fitted on a view's clean latents, as ``latent_view`` does (deterministic)."""
    z = np.asarray(view["z"], dtype=np.float64)
    y = np.asarray(view["y"])
    protos = np.asarray(view["prototypes"], dtype=np.float64)
    use = protos[np.isfinite(protos).all(1)] if method == "simplex" else None
    return LatentProjection(method, n_components, prototypes=use, random_state=random_state).fit(z, y)


def add_method(view: dict[str, Any], method: str, n_components: int = 2) -> LatentProjection:
    """Project a view (dict being built) with ``method``: coordinates, prototypes and, if linear, the Gaussians."""
    z, y = np.asarray(view["z"], dtype=np.float64), np.asarray(view["y"])
    k = len(view["prototypes"])
    proj = projection_for_view(view, method, n_components)
    view[f"coords/{method}"] = proj.embedding_.copy() if method == "umap" else proj.transform(z)
    view[f"proto_coords/{method}"] = project_prototypes(proj, view["prototypes"])
    if proj.is_linear:
        mu, cov = class_gaussians_2d(view[f"coords/{method}"], y, k)
        view[f"ell_mean/{method}"], view[f"ell_cov/{method}"] = mu.astype(np.float32), cov.astype(np.float32)
        if n_components == 2:
            view[f"ellipse/{method}"] = class_ellipses(mu, cov).astype(np.float32)
        view[f"mean/{method}"], view[f"components/{method}"] = proj.mean_, proj.components_
    return proj


def latent_view(
    model: LatentClassifier,
    data: Dataset,
    methods: Sequence[str] = LINEAR_METHODS,
    n_samples: int = 500,
    seed: int = 0,
    n_components: int = 2,
    indices: np.ndarray | None = None,
) -> LatentView:
    """Everything a latent-space plot of ``model`` on ``data`` needs (see ``LatentView``); needs torch.

    Keys: ``idx`` (N,) sample indices in ``data``; ``y``, ``pred`` (N,); ``z`` (N, d); ``dist`` (N, K)
    distances to the prototypes; ``prototypes`` (K, d) and ``prototype_kind``; ``images`` (N, H, W, C)
    uint8; ``class_names``; ``sigma`` (NaN if none); ``accuracy`` on these samples; and per method
    ``coords/<m>`` (N, n), ``proto_coords/<m>`` (K, n), and for linear methods ``ell_mean/<m>`` (K, n),
    ``ell_cov/<m>`` (K, n, n), ``ellipse/<m>`` (K, 2, P, 2) 1- and 2-sigma contours (2-D only),
    ``mean/<m>``, ``components/<m>``. ``methods`` lists the methods done.
    """
    from .models import embed_batched

    if indices is None:
        indices = sample_indices(data.y.numpy(), n_samples, seed)
    indices = np.asarray(indices, dtype=np.int64)
    x = data.x[indices]
    y = data.y.numpy()[indices]
    z_t, s_t = embed_batched(model, x)
    z = z_t.numpy().astype(np.float64)
    centers = None if model.centers is None else model.centers.detach().cpu().numpy()
    protos, kind = choose_prototypes(centers, model.is_prototype, z, y, model.num_classes)
    pred = s_t.argmax(1).numpy()
    images = (x.permute(0, 2, 3, 1).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    view: dict[str, Any] = {
        "format_version": np.array(VIEW_FORMAT_VERSION),
        "idx": indices,
        "y": y.astype(np.int64),
        "pred": pred.astype(np.int64),
        "z": z.astype(np.float32),
        "dist": distances(z, protos).astype(np.float32),
        "prototypes": protos.astype(np.float32),
        "prototype_kind": np.array(kind),
        "images": images,
        "class_names": np.array(list(data.class_names)),
        "sigma": np.array(float(model.sigma) if model.sigma is not None else float("nan")),
        "accuracy": np.array(float((pred == y).mean())),
        "n_components": np.array(n_components),
    }
    for m in methods:
        add_method(view, m, n_components)
    view["methods"] = np.array(list(methods))
    return LatentView(view)


def save_view(path: str | os.PathLike, view: Mapping[str, Any]) -> Path:
    """Write a view as a compressed ``.npz`` atomically (a reader never sees half a file); returns the path."""
    from .files import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{key.replace("/", "__"): np.asarray(value) for key, value in view.items()})
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_view(path: str | os.PathLike) -> LatentView:
    """Read a view written by ``save_view`` (no pickle); a file of another format version is refused."""
    with np.load(Path(path), allow_pickle=False) as data:
        view = {key.replace("__", "/"): data[key] for key in data.files}
    if "format_version" not in view or int(view["format_version"]) != VIEW_FORMAT_VERSION:
        raise ValueError(f"{path}: view format_version={view.get('format_version')}; expected {VIEW_FORMAT_VERSION}.")
    return LatentView(view)


# -- animation panels ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    """One model's side of an animation: ``frames`` (T, N, 2) of N points over T steps or epochs.

    ``pred`` (T, N) predictions per frame and ``y`` (N,) true labels colour the points; ``protos`` (K, 2)
    are the prototypes (NaN rows hidden) of kind ``kind``; optional ``background`` (M, 2) clean points
    with labels ``background_y`` and ``ellipses`` (K, L, P, 2) class Gaussians' contours; ``x``
    (T, N, H, W, C) the inputs per frame (attacks) for the per-step images. In the decision plane:
    ``boundary`` (2, 2) the decision boundary's segment, and per frame and point ``distance`` (T, N) the
    signed latent distance to it and ``perturbation`` (T, N) the input-space perturbation norm.
    """

    title: str
    frames: np.ndarray
    pred: np.ndarray
    y: np.ndarray
    protos: np.ndarray
    kind: str
    background: np.ndarray | None = None
    background_y: np.ndarray | None = None
    ellipses: np.ndarray | None = None
    x: np.ndarray | None = None
    label: str = ""
    key: str = ""
    boundary: np.ndarray | None = None
    distance: np.ndarray | None = None
    perturbation: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


def fooled(pred: np.ndarray, y: np.ndarray, target: int | None = None) -> np.ndarray:
    """(T, N) True where the attack has succeeded at that step: the target class reached, or any wrong class."""
    pred = np.asarray(pred)
    return pred == target if target is not None else pred != np.asarray(y)


def background_coords(projection: LatentProjection, z: np.ndarray) -> np.ndarray:
    """The clean points behind an animation: UMAP's own embedding of them, else their projection."""
    if projection.method == "umap":
        return projection.embedding_
    return projection.transform(z)


def attack_panel(view: LatentView, projection: LatentProjection, method: str, z: np.ndarray, pred: np.ndarray,
                 y: np.ndarray, *, title: str, target: int | None = None, x: np.ndarray | None = None,
                 label: str = "", key: str = "") -> Panel:
    """An attack animation panel: latent trajectories ``z`` (T, N, d) projected with the view's projection.

    ``projection`` is fitted on ``view`` (``projection_for_view``) for ``method``; every step of every
    sample is transformed in one batch. ``title`` may hold ``{fooled}`` and ``{n}`` (successes at the last step).
    """
    frames = projection.transform(np.asarray(z))
    hit = fooled(pred, y, target)
    return Panel(title=title.format(fooled=int(hit[-1].sum()), n=len(y)), frames=frames, pred=np.asarray(pred),
                 y=np.asarray(y), protos=project_prototypes(projection, view.prototypes), kind=view.prototype_kind,
                 background=background_coords(projection, view.z), background_y=view.y,
                 ellipses=view.ellipses(method), x=x, label=label, key=key)


def preview_panel(view: LatentView, method: str, samples: np.ndarray, title: str) -> Panel:
    """The chosen samples, clean, as a one-frame panel from the view's stored coordinates (no projection to fit)."""
    pos = view.positions(np.asarray(samples))
    coords = view.coords(method)
    boundary = view.get(f"boundary/{method}")
    return Panel(title=title, frames=coords[pos][None], pred=view.pred[pos][None], y=view.y[pos],
                 protos=view.proto_coords(method), kind=view.prototype_kind, background=coords, background_y=view.y,
                 ellipses=view.ellipses(method), boundary=None if boundary is None else np.asarray(boundary))


def snapshot_panel(z: np.ndarray, pred: np.ndarray, y: np.ndarray, centers: np.ndarray | None, is_prototype: bool,
                   num_classes: int, title: str) -> Panel:
    """Training snapshots ``z`` (E, N, d) as an epochs animation in the simplex view of the last epoch.

    The prototypes are the model's vertices or centres, else the last epoch's class means; a class absent
    from the probe samples has no star (hidden, not drawn at the origin).
    """
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y)
    protos, kind = choose_prototypes(centers, is_prototype, z[-1], y, num_classes)
    proj = LatentProjection("simplex", prototypes=protos[np.isfinite(protos).all(1)]).fit(z[-1], y)
    return Panel(title=title, frames=proj.transform(z), pred=np.asarray(pred), y=y,
                 protos=project_prototypes(proj, protos), kind=kind)


# -- the decision plane ------------------------------------------------------------------------------------

DECISION_METHOD = "decision"
"""The view method name of the decision plane (beside simplex, pca, lda, umap)."""


def latent_head(model: LatentClassifier, scale: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """The affine part of a model's class scores in latent space: ``s_k(z) - s_0(z) = W[k] . z + b[k]``; needs torch.

    Exact for every head of this library: a linear head (cross-entropy, center loss) is affine, and for a
    nearest-vertex head (GCCS, MMC) the quadratic term ``-|z|^2 / 2 sigma^2`` is the same for every class and
    cancels. Read from ``d + 1`` evaluations of the head and checked at random points (a head whose score
    differences are not affine is refused).
    """
    import torch

    from .models import eval_mode, model_device

    d = model.latent_dim
    param = next(model.parameters())
    pts = torch.cat([torch.zeros(1, d), scale * torch.eye(d)])
    rng = np.random.default_rng(0)
    probe = torch.from_numpy(rng.standard_normal((4, d)) * scale)
    with torch.no_grad(), eval_mode(model):
        s = model.scores_from_latent(torch.cat([pts, probe]).to(model_device(model), param.dtype)).double().cpu().numpy()
    rel = s - s[:, :1]
    b = rel[0]
    w = ((rel[1 : d + 1] - b) / scale).T  # (K, d)
    expected = probe.numpy() @ w.T + b
    err = np.abs(rel[d + 1 :] - expected).max()
    if not err <= 1e-3 * max(1.0, float(np.abs(rel).max())):
        raise ValueError(f"the model's class-score differences are not affine in the latent (error {err:.3g}): "
                         "no exact decision plane exists for it.")
    return w, b


@dataclass(frozen=True)
class DecisionPlane:
    """An exact 2-D linear view of the decision between true class ``y`` and other class ``t``.

    ``axes[0]`` is the unit normal of the y-vs-t decision boundary (pointing from y's side to t's), so the
    first plane coordinate of a latent is its exact signed distance to that boundary (> 0: t wins over y) and
    the boundary is the line ``x = 0``. ``axes[1]`` is the direction of largest remaining spread of the two
    classes' latents. ``anchors`` (2, 2) are the plane coordinates of y's and t's centre (vertex, learned
    centre or class mean: ``anchor_kind``).
    """

    y: int
    t: int
    origin: np.ndarray
    axes: np.ndarray
    anchors: np.ndarray
    anchor_kind: str

    def transform(self, Z: np.ndarray) -> np.ndarray:
        """Latents (..., d) -> plane coordinates (..., 2), float32."""
        Z = np.asarray(Z, dtype=np.float64)
        if Z.shape[-1] != self.origin.shape[0]:
            raise ValueError(f"Z has {Z.shape[-1]} features; this decision plane was built for {self.origin.shape[0]}.")
        return ((Z - self.origin) @ self.axes.T).astype(np.float32)

    def boundary_distance(self, Z: np.ndarray) -> np.ndarray:
        """Signed latent distance (...,) of every latent to the y-vs-t boundary (> 0: on t's side)."""
        return ((np.asarray(Z, dtype=np.float64) - self.origin) @ self.axes[0]).astype(np.float32)

    def boundary_line(self, lo: float, hi: float) -> np.ndarray:
        """The boundary in the plane from second coordinate ``lo`` to ``hi``: endpoints (2, 2)."""
        return np.array([[0.0, lo], [0.0, hi]], dtype=np.float32)


def decision_plane(Z: np.ndarray, labels: np.ndarray, y: int, t: int, head_w: np.ndarray, head_b: np.ndarray,
                   prototypes: np.ndarray | None = None) -> DecisionPlane:
    """The decision plane of classes ``y`` and ``t`` (see ``DecisionPlane``) from a head's affine part (``latent_head``).

    ``Z`` (N, d) and ``labels`` (N,) are clean latents; the second axis is their largest spread orthogonal to
    the boundary normal, over the samples of classes y and t. Anchors are the ``prototypes`` rows when finite,
    else the class means of ``Z``.
    """
    Z = np.asarray(Z, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    w_all, b_all = np.asarray(head_w, dtype=np.float64), np.asarray(head_b, dtype=np.float64)
    k = len(w_all)
    for name, value in (("y", y), ("t", t)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < k:
            raise ValueError(f"{name}={value!r} is invalid: it must be a class index in 0..{k - 1}.")
    if y == t:
        raise ValueError(f"y={y} and t={t} are the same class: a decision plane needs two classes.")
    if Z.ndim != 2 or Z.shape[1] != w_all.shape[1]:
        raise ValueError(f"Z has shape {Z.shape}; expected (N, {w_all.shape[1]}) to match the head.")
    w, c = w_all[t] - w_all[y], float(b_all[t] - b_all[y])
    norm = float(np.linalg.norm(w))
    if norm == 0.0:
        raise ValueError(f"classes {y} and {t} have the same scores everywhere: there is no boundary between them.")
    u = w / norm
    protos = None if prototypes is None else np.asarray(prototypes, dtype=np.float64)
    if protos is not None and np.isfinite(protos[[y, t]]).all():
        anchors, kind = protos[[y, t]], "centres"
    else:
        for cls in (y, t):
            if not np.any(labels == cls):
                raise ValueError(f"class {cls} has no sample here and the model no centre: nothing to anchor it.")
        anchors, kind = np.stack([Z[labels == y].mean(0), Z[labels == t].mean(0)]), "class means"
    mid = anchors.mean(0)
    origin = mid - (u @ mid + c / norm) * u  # the point of the boundary nearest the anchors' midpoint
    pair = Z[np.isin(labels, [y, t])]
    pts = pair if len(pair) >= 2 else Z
    resid = (pts - pts.mean(0)) - np.outer((pts - pts.mean(0)) @ u, u)
    _, sv, vt = np.linalg.svd(resid, full_matrices=False)
    if len(sv) == 0 or sv[0] <= 1e-12 * max(1.0, float(np.abs(pts).max())):
        raise ValueError("the latents have no spread besides the boundary normal: no second axis.")
    v = vt[0] - (vt[0] @ u) * u
    v /= np.linalg.norm(v)
    v *= np.sign(v[np.argmax(np.abs(v))])
    axes = np.stack([u, v])
    return DecisionPlane(int(y), int(t), origin, axes, ((anchors - origin) @ axes.T).astype(np.float32), kind)


def with_decision_plane(view: LatentView, plane: DecisionPlane) -> LatentView:
    """``view`` plus the plane as method ``decision``: coordinates, the two anchors, their 1/2-sigma contours, the boundary."""
    coords = plane.transform(view.z)
    k = len(view.prototypes)
    protos = np.full((k, 2), np.nan, dtype=np.float32)
    protos[[plane.y, plane.t]] = plane.anchors
    mu, cov = class_gaussians_2d(coords, view.y, k)
    others = np.setdiff1d(np.arange(k), [plane.y, plane.t])
    mu[others], cov[others] = np.nan, np.nan
    lo, hi = float(coords[:, 1].min()), float(coords[:, 1].max())
    pad = 0.1 * max(hi - lo, 1e-6)
    extra = {f"coords/{DECISION_METHOD}": coords, f"proto_coords/{DECISION_METHOD}": protos,
             f"ellipse/{DECISION_METHOD}": class_ellipses(mu, cov).astype(np.float32),
             f"boundary/{DECISION_METHOD}": plane.boundary_line(lo - pad, hi + pad),
             "methods": np.array([*view.methods, DECISION_METHOD])}
    return LatentView({**view, **extra})


def perturbation_norms(x: np.ndarray, norm: str = "linf") -> np.ndarray:
    """Input-space size (T, N) of every step's perturbation ``x[t] - x[0]`` for inputs ``x`` (T, N, ...)."""
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm={norm!r} is unknown; allowed: linf, l2.")
    x = np.asarray(x, dtype=np.float64)
    delta = (x - x[:1]).reshape(x.shape[0], x.shape[1], -1)
    return (np.abs(delta).max(-1) if norm == "linf" else np.sqrt((delta**2).sum(-1))).astype(np.float32)


def decision_attack_panel(view: LatentView, plane: DecisionPlane, z: np.ndarray, pred: np.ndarray, y: np.ndarray, *,
                          title: str, x: np.ndarray, norm: str = "linf", perturbation: np.ndarray | None = None,
                          target: int | None = None, label: str = "", key: str = "") -> Panel:
    """An attack animation panel in the decision plane (``view`` from ``with_decision_plane``), with every
    point's latent distance to the boundary and its input perturbation norm at every step (``perturbation``
    (T, N) if already measured on full-precision inputs, else ``perturbation_norms(x, norm)``)."""
    hit = fooled(pred, y, target)
    m = DECISION_METHOD
    kind = view.prototype_kind if plane.anchor_kind == "centres" else "class means"
    return Panel(title=title.format(fooled=int(hit[-1].sum()), n=len(y)), frames=plane.transform(z), pred=np.asarray(pred),
                 y=np.asarray(y), protos=view.proto_coords(m), kind=kind, background=view.coords(m),
                 background_y=view.y, ellipses=view.ellipses(m), x=x, label=label, key=key,
                 boundary=np.asarray(view[f"boundary/{m}"]), distance=plane.boundary_distance(z),
                 perturbation=perturbation_norms(x, norm) if perturbation is None else np.asarray(perturbation))


# -- export tables ---------------------------------------------------------------------------------------


def view_table(view: LatentView, method: str) -> dict[str, np.ndarray]:
    """Columns of a latent plot, one row per sample: dataset index, label, prediction and the plot coordinates."""
    coords = view.coords(method)
    table = {"sample": view.idx, "label": view.y, "pred": view.pred}
    table.update({f"coord_{i}": coords[:, i] for i in range(coords.shape[1])})
    return table


def panels_table(panels: Sequence[Panel], samples: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of an animation, one row per panel, frame and point: the trajectories in plot coordinates.

    ``samples`` (N,) are the dataset indices of the points; a decision-plane panel adds the latent distance to
    the boundary and the input perturbation norm. Refuses an empty animation (nothing to export).
    """
    samples = np.asarray(samples)
    if not panels or len(samples) == 0:
        raise ValueError("nothing to export: the animation has no points.")
    cols: dict[str, list[np.ndarray]] = {}
    extra = all(p.distance is not None and p.perturbation is not None for p in panels)
    for p in panels:
        t, n = p.frames.shape[:2]
        if n != len(samples):
            raise ValueError(f"panel {p.title!r} has {n} points but {len(samples)} samples were given.")
        part = {"model": np.full(t * n, p.label or p.title), "step": np.repeat(np.arange(t), n),
                "sample": np.tile(samples, t), "label": np.tile(p.y, t), "pred": p.pred.reshape(-1),
                "x": p.frames[..., 0].reshape(-1), "y": p.frames[..., 1].reshape(-1)}
        if extra:
            part["boundary_distance"] = p.distance.reshape(-1)
            part["perturbation"] = p.perturbation.reshape(-1)
        for key, value in part.items():
            cols.setdefault(key, []).append(np.asarray(value))
    return {key: np.concatenate(parts) for key, parts in cols.items()}


def adversarial_images(panels: Sequence[Panel], samples: np.ndarray) -> dict[str, np.ndarray]:
    """The attack's images as arrays for ``np.load``: ``sample`` (N,) dataset indices, ``label`` (N,),
    ``clean`` (N, H, W, C) the inputs, and per panel ``<i>_adversarial`` (N, H, W, C) its last frame's
    inputs, ``<i>_pred`` (N,) its predictions on them and ``<i>_model`` its label (``i`` = panel number).
    Pixel values in [0, 1], float32, at the precision the panels hold (the app keeps its frames in float16,
    about 1e-3). Refuses panels without inputs (a training animation has none)."""
    samples = np.asarray(samples)
    if not panels or len(samples) == 0:
        raise ValueError("nothing to export: the attack has no samples.")
    if any(p.x is None for p in panels):
        raise ValueError("nothing to export: these panels carry no input images (only attacks do).")
    first = panels[0]
    out: dict[str, np.ndarray] = {"sample": samples, "label": np.asarray(first.y),
                                  "clean": np.asarray(first.x[0], dtype=np.float32)}
    for i, p in enumerate(panels):
        if p.x.shape[1] != len(samples):
            raise ValueError(f"panel {p.title!r} has {p.x.shape[1]} samples but {len(samples)} indices were given.")
        out[f"{i}_adversarial"] = np.asarray(p.x[-1], dtype=np.float32)
        out[f"{i}_pred"] = np.asarray(p.pred[-1])
        out[f"{i}_model"] = np.asarray(p.label or p.title)
    return out


def table_csv(table: Mapping[str, np.ndarray]) -> str:
    """A table of equal-length columns as CSV text (header row first; floats with 6 significant digits)."""
    names = list(table)
    lengths = {len(table[k]) for k in names}
    if len(lengths) != 1:
        raise ValueError(f"columns of different lengths {sorted(lengths)}: not a table.")

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    cells = [[f"{float(v):.6g}" if np.issubdtype(np.asarray(table[k]).dtype, np.floating) else str(v) for v in table[k]]
             for k in names]
    writer.writerows(zip(*cells))
    return buf.getvalue()


def table_npz(table: Mapping[str, np.ndarray]) -> bytes:
    """A table as ``.npz`` bytes (one array per column, no pickle: strings stored as unicode arrays)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in table.items()})
    return buf.getvalue()
