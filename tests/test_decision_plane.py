"""The decision plane (gccs_core.views): an exact 2-D view of one pairwise decision, on real digits models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gccs_core import load_dataset
from gccs_core.attacks import run_attack
from gccs_core.models import embed_batched
from gccs_core.simplex import edge_length
from gccs_core.views import (
    DECISION_METHOD,
    decision_attack_panel,
    decision_plane,
    latent_head,
    latent_view,
    perturbation_norms,
    with_decision_plane,
)


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits", "test")
    return data, data.y.numpy()


def _latents_and_scores(model, x):
    z, s = embed_batched(model, x)
    return z.numpy().astype(np.float64), s.numpy().astype(np.float64)


@pytest.mark.parametrize("which", ["digits_gccs_model", "digits_ce_model"])
def test_the_first_axis_is_the_exact_signed_distance_to_the_boundary(request, digits, which):
    """For every sample, the side of the line x = 0 is the model's own choice between y and t."""
    model = request.getfixturevalue(which)
    data, labels = digits
    z, s = _latents_and_scores(model, data.x)
    w, b = latent_head(model)
    np.testing.assert_allclose(s - s[:, :1], z @ w.T + b, rtol=1e-4, atol=1e-3)  # the affine part is exact
    centers = None if model.centers is None else model.centers.numpy()
    for y, t in ((3, 8), (1, 7), (9, 4)):
        plane = decision_plane(z, labels, y, t, w, b, centers)
        np.testing.assert_allclose(plane.axes @ plane.axes.T, np.eye(2), atol=1e-9)
        xy = plane.transform(z)
        margin = s[:, t] - s[:, y]
        decided = np.abs(margin) > 1e-3 * np.abs(s).max()
        assert np.array_equal(np.sign(xy[decided, 0]), np.sign(margin[decided])), (which, y, t)
        # the first coordinate is the Euclidean distance to the boundary hyperplane w.z + c = 0
        wt, c = w[t] - w[y], b[t] - b[y]
        np.testing.assert_allclose(xy[:, 0], (z @ wt + c) / np.linalg.norm(wt), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(plane.boundary_distance(z), xy[:, 0], rtol=1e-5, atol=1e-5)
        assert plane.anchors[0, 0] < 0 < plane.anchors[1, 0]


def test_a_gccs_plane_is_spanned_by_the_vertex_difference(digits_gccs_model, digits):
    data, labels = digits
    z, _ = _latents_and_scores(digits_gccs_model, data.x)
    mu = digits_gccs_model.centers.numpy().astype(np.float64)
    w, b = latent_head(digits_gccs_model)
    plane = decision_plane(z, labels, 3, 8, w, b, mu)
    direction = (mu[8] - mu[3]) / np.linalg.norm(mu[8] - mu[3])
    np.testing.assert_allclose(plane.axes[0], direction, atol=1e-5)
    # the two vertices sit at -Delta/2 and +Delta/2 on the first axis, on the same height
    delta = edge_length(10, float(np.linalg.norm(mu[0])))
    np.testing.assert_allclose(plane.anchors[:, 0], [-delta / 2, delta / 2], rtol=1e-4)
    assert plane.anchor_kind == "centres" and abs(plane.anchors[0, 1] - plane.anchors[1, 1]) < 1e-4 * delta
    # the second axis: the largest spread of classes 3 and 8 once the normal is removed
    pair = z[np.isin(labels, [3, 8])]
    resid = pair - pair.mean(0)
    resid -= np.outer(resid @ plane.axes[0], plane.axes[0])
    spread = np.var(resid @ plane.axes[1])
    rng = np.random.default_rng(0)
    for _ in range(20):
        r = rng.standard_normal(z.shape[1])
        r -= (r @ plane.axes[0]) * plane.axes[0]
        r /= np.linalg.norm(r)
        assert np.var(resid @ r) <= spread + 1e-9


def test_a_model_without_centres_is_anchored_at_class_means_and_bad_pairs_are_refused(digits_ce_model, digits):
    data, labels = digits
    z, _ = _latents_and_scores(digits_ce_model, data.x)
    w, b = latent_head(digits_ce_model)
    plane = decision_plane(z, labels, 2, 5, w, b)
    assert plane.anchor_kind == "class means"
    np.testing.assert_allclose(plane.anchors[0], plane.transform(z[labels == 2].mean(0)), atol=1e-4)
    keep = labels != 5
    with pytest.raises(ValueError, match="class 5 has no sample here"):
        decision_plane(z[keep], labels[keep], 2, 5, w, b)
    with pytest.raises(ValueError, match="y=3 and t=3 are the same class"):
        decision_plane(z, labels, 3, 3, w, b)
    with pytest.raises(ValueError, match=r"t=10 is invalid: it must be a class index in 0\.\.9"):
        decision_plane(z, labels, 3, 10, w, b)
    with pytest.raises(ValueError, match="norm='l3' is unknown"):
        perturbation_norms(np.zeros((2, 3, 4)), "l3")


def test_an_attack_crosses_the_line_exactly_when_the_prediction_flips(digits_gccs_model, digits):
    """Targeted PGD 3 -> 8: every recorded step is on t's side of the drawn line iff the model then prefers 8 to 3."""
    data, labels = digits
    idx = np.flatnonzero(labels == 3)[:12]
    eps = 0.3
    res = run_attack(digits_gccs_model, data.x[idx], data.y[idx], attack="pgd", eps=eps, steps=10, target=8,
                     record=True, seed=0)
    traj = res.trajectory
    view = latent_view(digits_gccs_model, data, methods=("simplex",), n_samples=200)
    w, b = latent_head(digits_gccs_model)
    plane = decision_plane(view.z, view.y, 3, 8, w, b, view.prototypes)
    pview = with_decision_plane(view, plane)
    assert DECISION_METHOD in pview.methods and pview.has(DECISION_METHOD)
    ell = pview.ellipses(DECISION_METHOD)
    assert np.isfinite(ell[[3, 8]]).all() and np.isnan(np.delete(ell, [3, 8], axis=0)).all()
    x = traj.x.permute(0, 1, 3, 4, 2).numpy()
    panel = decision_attack_panel(pview, plane, traj.z.numpy(), traj.pred.numpy(), labels[idx], title="{fooled}/{n}",
                                  x=x, target=8)
    scores = traj.scores.numpy()
    prefers_t = scores[..., 8] > scores[..., 3]
    assert np.array_equal(panel.distance > 0, prefers_t)
    assert prefers_t[-1].any() and not prefers_t[0].any()  # the attack gets somewhere, from the clean side
    np.testing.assert_array_equal(panel.frames[..., 0], panel.distance)
    assert panel.perturbation.shape == panel.distance.shape and (panel.perturbation[0] == 0).all()
    assert panel.perturbation.max() <= eps + 1e-5 and panel.perturbation[-1].min() > 0
    np.testing.assert_allclose(panel.boundary[:, 0], 0.0)
    l2 = perturbation_norms(x, "l2")
    assert (l2 >= panel.perturbation - 1e-6).all()  # an L2 norm is never below the L-inf norm
    with torch.no_grad():
        assert int(digits_gccs_model(torch.from_numpy(x[-1]).permute(0, 3, 1, 2)).argmax(1).eq(8).sum()) == int(
            (traj.pred[-1] == 8).sum())
