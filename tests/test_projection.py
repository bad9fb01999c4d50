"""The projection estimator (simplex view, PCA, LDA, UMAP) and training snapshots; views are in test_views.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gccs_core import TrainConfig, load_dataset, simplex_vertices, train
from gccs_core.projection import LINEAR_METHODS, LatentProjection, NotFittedError, class_means
from gccs_core.snapshots import LatentSnapshots
from gccs_core.views import class_gaussians_2d

K, D = 10, 16


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class Gaussians N(mu_k, 0.5^2 I) around the vertices of a regular simplex (r = 5)."""
    rng = np.random.default_rng(0)
    mu = simplex_vertices(K, D, radius=5.0, dtype=torch.float64).numpy()
    y = np.repeat(np.arange(K), 30)
    z = mu[y] + 0.5 * rng.standard_normal((len(y), D))
    return z, y, mu


def test_simplex_view_maps_vertices_to_regular_polygon(blobs):
    z, y, mu = blobs
    proj = LatentProjection("simplex", prototypes=mu).fit(z, y)
    pv = proj.transform(mu).astype(np.float64)
    radii = np.linalg.norm(pv, axis=1)
    np.testing.assert_allclose(radii, radii[0], rtol=1e-5)
    angles = np.degrees(np.arctan2(pv[:, 1], pv[:, 0]))
    expected = 36.0 * np.arange(K)
    np.testing.assert_allclose(np.cos(np.radians(angles - expected)), 1.0, atol=1e-9)
    # Vertex radius of the K-gon: r^2 K/(K-1) / |a| with |a| = r sqrt(K/2 * K/(K-1)) -> r sqrt(2/(K-1)).
    np.testing.assert_allclose(radii[0], 5.0 * np.sqrt(2.0 / (K - 1)), rtol=1e-5)
    # orthonormal axes: an orthogonal projection
    np.testing.assert_allclose(proj.components_ @ proj.components_.T, np.eye(2), atol=1e-10)


def test_simplex_view_3d_and_class_means_fallback(blobs):
    z, y, mu = blobs
    p3 = LatentProjection("simplex", 3, prototypes=mu).fit(z, y)
    assert p3.transform(z).shape == (len(z), 3)
    np.testing.assert_allclose(p3.components_ @ p3.components_.T, np.eye(3), atol=1e-10)
    # Without prototypes the class means are used; they are close to the vertices here.
    pm = LatentProjection("simplex").fit(z, y)
    np.testing.assert_allclose(pm.prototypes_, class_means(z, y, K), atol=1e-12)
    with pytest.raises(ValueError, match="needs labels y"):
        LatentProjection("simplex").fit(z)


@pytest.mark.parametrize("method", LINEAR_METHODS)
def test_linear_fit_transform_matches_fit_then_transform(blobs, method):
    z, y, mu = blobs
    kw = {"prototypes": mu} if method == "simplex" else {}
    a = LatentProjection(method, **kw).fit_transform(z, y)
    p = LatentProjection(method, **kw).fit(z, y)
    np.testing.assert_allclose(a, p.transform(z), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(p.transform(z), ((z - p.mean_) @ p.components_.T).astype(np.float32), rtol=1e-5, atol=1e-5)
    # stacked frames (T, N, d) are transformed in one batch, identical to frame by frame
    frames = np.stack([z, z + 0.1, z - 0.2])
    out = p.transform(frames)
    assert out.shape == (3, len(z), 2)
    np.testing.assert_allclose(out[2], p.transform(z - 0.2), rtol=1e-6, atol=1e-6)
    # deterministic: a second fit gives the same axes (signs fixed)
    q = LatentProjection(method, **kw).fit(z, y)
    np.testing.assert_array_equal(p.components_, q.components_)


def test_lda_matches_sklearn_and_limits_components(blobs):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    z, y, _ = blobs
    p = LatentProjection("lda").fit(z, y)
    ref = LinearDiscriminantAnalysis(n_components=2).fit(z, y).transform(z)
    np.testing.assert_allclose(np.abs(p.transform(z)), np.abs(ref), rtol=1e-4, atol=1e-4)
    two = np.repeat([0, 1], 20)
    with pytest.raises(ValueError, match="n_components=2 must be <= min\\(n_classes - 1, n_features\\)=1"):
        LatentProjection("lda").fit(np.random.default_rng(0).standard_normal((40, 4)), two)


def test_errors_name_the_problem(blobs):
    z, y, mu = blobs
    with pytest.raises(ValueError, match="method='tsne' is unknown; allowed: simplex, pca, lda, umap"):
        LatentProjection("tsne").fit(z, y)
    with pytest.raises(ValueError, match="new_points='exact' is unknown; allowed: knn, umap"):
        LatentProjection("umap", new_points="exact").fit(z, y)
    with pytest.raises(ValueError, match="n_components=4 is invalid"):
        LatentProjection("pca", 4).fit(z)
    with pytest.raises(NotFittedError, match="not fitted"):
        LatentProjection("pca").transform(z)
    p = LatentProjection("pca").fit(z)
    with pytest.raises(ValueError, match="fitted with 16"):
        p.transform(z[:, :5])
    with pytest.raises(ValueError, match="prototypes have shape"):
        LatentProjection("simplex", prototypes=mu[:, :3]).fit(z, y)
    with pytest.raises(ValueError, match="degenerate"):
        LatentProjection("simplex", prototypes=np.zeros((K, D))).fit(z, y)
    with pytest.raises(ValueError, match="NaN"):
        LatentProjection("pca").fit(np.full((5, 3), np.nan))


def test_project_covariance_matches_projected_sample_covariance(blobs):
    z, y, mu = blobs
    p = LatentProjection("simplex", prototypes=mu).fit(z, y)
    cov = np.cov(z[y == 3], rowvar=False)
    _, covs = class_gaussians_2d(p.transform(z), y, K)
    np.testing.assert_allclose(p.project_covariance(cov), covs[3], rtol=1e-4, atol=1e-6)
    # isotropic sigma^2 I stays sigma^2 I under an orthogonal projection
    np.testing.assert_allclose(p.project_covariance(0.25 * np.eye(D)), 0.25 * np.eye(2), atol=1e-12)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A GCCS model trained for 3 epochs on 300 digits, with latent snapshots every epoch."""
    probe = load_dataset("digits", "test").x[:40]
    snaps = LatentSnapshots(probe, every=1)
    cfg = TrainConfig(dataset="digits", loss="gccs", epochs=3, limit_train=300, batch_size=100, seed=0)
    result = train(cfg, [snaps], tmp_path_factory.mktemp("run"))
    return result, snaps


def test_snapshots_record_every_epoch_and_restore_mode(tiny_run):
    result, snaps = tiny_run
    assert snaps.epochs == [1, 2, 3]
    z, pred = snaps.stacked()
    assert z.shape == (3, 40, 16) and pred.shape == (3, 40)
    assert [round(s.test_accuracy, 6) for s in snaps.snapshots] == [round(h["test_accuracy"], 6) for h in result.history]
    # the final snapshot equals the final model's latents
    with torch.no_grad():
        result.model.eval()
        np.testing.assert_allclose(z[-1], result.model.embed(snaps.x).numpy(), rtol=1e-5, atol=1e-5)
    # latents move between epochs (the animation has something to show)
    assert np.abs(z[0] - z[-1]).max() > 1e-3
    result.model.train()
    snaps.record(result.model, 99)
    assert result.model.training, "record() must restore the model's previous mode"
    snaps.snapshots.pop()
    result.model.eval()


def test_snapshots_bound_memory_and_validate():
    model_x = torch.zeros(2, 1, 8, 8)
    s = LatentSnapshots(model_x, max_snapshots=4)
    from gccs_core import ModelSpec, build_model

    model = build_model(ModelSpec("mlp", (1, 8, 8), 10, 16, "gccs")).eval()
    for e in range(1, 10):
        s.record(model, e)
    assert len(s.snapshots) <= 4 and s.epochs[0] == 1 and s.epochs[-1] == 9
    assert s.epochs == sorted(s.epochs)
    with pytest.raises(ValueError, match="every=0"):
        LatentSnapshots(model_x, every=0)
    with pytest.raises(ValueError, match="no snapshots"):
        LatentSnapshots(model_x).stacked()


def test_class_means_by_hand():
    z = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    means = class_means(z, np.array([0, 0, 1]), 3)
    np.testing.assert_allclose(means[:2], [[1.0, 0.0], [0.0, 4.0]])
    assert np.isnan(means[2]).all()
    with pytest.raises(ValueError, match="labels must lie in"):
        class_means(z, np.array([0, 0, 5]), 3)


def test_smooth_knn_weights_follow_umap_memberships():
    from gccs_core.projection import _smooth_knn_weights

    rng = np.random.default_rng(0)
    dist = np.sort(rng.uniform(0.5, 3.0, (50, 15)), axis=1)
    w = _smooth_knn_weights(dist)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-9)
    assert (np.diff(w, axis=1) <= 1e-12).all()  # nearer neighbours weigh more
    # before normalisation the memberships sum to log2(k), as in UMAP's smooth_knn_dist
    excess = dist - dist[:, :1]
    sigma = excess[:, 1:2] / -np.log(w[:, 1:2] / w[:, :1])
    np.testing.assert_allclose(np.exp(-excess / sigma).sum(1), np.log2(15), rtol=1e-6)


@pytest.fixture(scope="module")
def digits_umap():
    from gccs_core import load_model
    from gccs_core.models import embed_batched

    ds = load_dataset("digits", "test")
    z = embed_batched(load_model("pretrained/digits-gccs.safetensors"), ds.x)[0].numpy()
    return z, ds.y.numpy(), LatentProjection("umap").fit(z, ds.y.numpy())


def test_umap_places_new_points_among_the_clean_points_they_resemble(digits_umap):
    z, y, proj = digits_umap
    emb = proj.embedding_
    assert emb.shape == (len(z), 2) and np.isfinite(emb).all()
    span = float(np.ptp(emb, axis=0).max())
    # a clean point placed again lands near its own embedding (its nearest neighbour is itself)
    err = np.linalg.norm(proj.transform(z) - emb, axis=1)
    assert np.median(err) < 0.05 * span, (np.median(err), span)
    # per point and deterministic: the same point gets the same place in any batch
    frames = np.stack([z[:30], 0.5 * (z[:30] + z[30:60])])
    np.testing.assert_allclose(proj.transform(frames)[0], proj.transform(z[:30]), atol=1e-5)
    # a latent moved onto another class's cluster is placed inside that cluster
    target = z[y == 8]
    moved = proj.transform(target[:5] + 0.01)
    centre8 = emb[y == 8].mean(0)
    others = [np.linalg.norm(emb[y == k].mean(0) - moved.mean(0)) for k in range(10) if k != 8]
    assert np.linalg.norm(moved.mean(0) - centre8) < min(others)
