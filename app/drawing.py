"""Glue for the Draw page: a drawing or an uploaded picture -> ``gccs_core.images.image_input`` -> both models'
latent views with the new point (``gccs_core.images.place_input``, the view's own projection)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app import figures, loaders
from app.registry import ModelEntry
from gccs_core.images import attack_input, image_input, place_input
from gccs_core.views import DECISION_METHOD

UPLOAD_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "webp"]
MAX_UPLOAD_MB = 5


@dataclass(frozen=True)
class Landing:
    """One model's view of the picture: the figure with the point, its prediction and distances."""

    figure: Any
    pred: int
    distances: np.ndarray
    kind: str
    xy: np.ndarray
    names: list[str]


def model_input(image: bytes | np.ndarray, dataset: str) -> np.ndarray:
    """The picture as one input of ``dataset``'s models (raises ``ValueError`` with the reason)."""
    return image_input(image, dataset)


@dataclass(frozen=True)
class Attacked:
    """The picture under attack on one model: its path's final prediction and the adversarial picture."""

    pred: int
    fooled: bool
    x_adv: np.ndarray


def landing(entry: ModelEntry, x: np.ndarray, method: str, pair: tuple[int, int], height: int,
            attack: dict[str, Any] | None = None) -> tuple[Landing, Attacked | None]:
    """Where ``x`` lands in ``entry``'s latent view drawn in ``method`` (2-D), with its prediction; with ``attack``
    (``label``, ``eps``, ``objective``) also its PGD path, drawn in the same projection."""
    if method == DECISION_METHOD:
        view, plane = loaders.get_plane(entry, *pair)
        project = plane.transform
    else:
        view = loaders.get_view(entry, method, 2)
        project = loaders.get_projection(entry, method, 2).transform
    placed = place_input(loaders.get_model(entry), x, np.asarray(view["prototypes"]))
    xy = np.asarray(project(placed.z[None]))[0]
    names = [str(c) for c in view["class_names"]]
    fig = figures.latent_figure(view, method, f"{entry.label} · {entry.loss}", height, approximate=method == "umap")
    fig = figures.with_new_point(fig, xy, f"your picture: predicted {names[placed.pred]}")
    hit = None
    if attack is not None:
        adv = attack_input(loaders.get_model(entry), x, int(attack["label"]), float(attack["eps"]),
                           objective=str(attack["objective"]))
        path = np.asarray(project(adv.z))
        fig = figures.with_path(fig, path, f"attack path: predicted {names[int(adv.pred[-1])]} at the end")
        hit = Attacked(int(adv.pred[-1]), adv.fooled, adv.x_adv)
    return Landing(fig, placed.pred, placed.distances, str(view["prototype_kind"]), xy, names), hit

