"""The GCCS readings against their equations computed by hand (numpy, float64), and trained on real digits."""

import math

import numpy as np
import pytest
import torch

from gccs_core import TrainConfig, load_dataset, train
from gccs_core.losses import build_loss
from gccs_core.simplex import edge_length
from tests.test_losses import gccs_by_hand

# Classes of 1, 2, 3 and 30 samples, classes 4..9 absent: one-sample, rank-deficient (n_k < d) and full-rank classes.
LABELS = np.array([0] + [1] * 2 + [2] * 3 + [3] * 30)


def _batch(d, seed=0, scale=1.5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(len(LABELS), d)) * scale, LABELS


def _classes(z, y, num_classes=10):
    """(n_k, m_k, S_k or None) of every class present."""
    for k in range(num_classes):
        zk = z[y == k]
        if len(zk):
            yield k, len(zk), zk.mean(0), (np.cov(zk.T).reshape(z.shape[1], z.shape[1]) if len(zk) > 1 else None)


def _pull(z, y, mu, sigma):
    return np.mean(np.sum((z - mu[y]) ** 2, 1)) / (2 * sigma**2)


def _value(name, z, y, **params):
    loss = build_loss(name, 10, z.shape[1], **params)
    return float(loss(torch.tensor(z, dtype=torch.float64).float(), torch.tensor(y))), loss.centers.double().numpy()


def _kl(m, s, mu, sigma):
    d = len(m)
    return 0.5 * (np.trace(s) / sigma**2 + np.sum((m - mu) ** 2) / sigma**2 - d + d * math.log(sigma**2)
                  - np.linalg.slogdet(s)[1])


@pytest.mark.parametrize("d", [9, 16, 100])
def test_subspace_is_the_kl_on_span_mu_plus_a_pull_of_the_complement_to_zero(d):
    sigma, rho, eps, lam = 1.3, 0.2, 1e-3, 0.5
    z, y = _batch(d)
    value, mu = _value("gccs-subspace", z, y, sigma=sigma, shrinkage=rho, cov_eps=eps, lam=lam)
    q = np.linalg.svd(mu)[2][:9].T  # orthonormal basis of span{mu_k}, (d, K-1)
    p = np.eye(d) - q @ q.T
    expected = 0.0
    for k, n_k, m, s in _classes(z, y):
        inside = np.sum((q.T @ (m - mu[k])) ** 2) / sigma**2
        outside = np.sum((p @ m) ** 2) / sigma**2
        if s is None:
            per_class = 0.5 * inside + 0.5 * outside
        else:
            s_in = q.T @ s @ q
            shrunk = (1 - rho) * s_in + (rho * np.trace(s_in) / 9 + eps) * np.eye(9)
            per_class = _kl(q.T @ m, shrunk, q.T @ mu[k], sigma) + 0.5 * (outside + np.trace(p @ s @ p) / sigma**2)
        expected += n_k / len(y) * per_class
    expected += lam * _pull(z, y, mu, sigma)
    assert value == pytest.approx(expected, rel=1e-5)
    if d == 9:  # no complement: exactly gccs
        assert value == pytest.approx(gccs_by_hand(z, y, mu, sigma, rho, eps, lam), rel=1e-5)


@pytest.mark.parametrize("d", [16, 100])  # d x d covariances, and Gram matrices above SMALL_DIM
def test_moments_is_mean_term_plus_frobenius_distance_of_the_covariance(d):
    sigma, lam = 0.9, 0.25
    z, y = _batch(d, seed=1)
    value, mu = _value("gccs-moments", z, y, sigma=sigma, lam=lam)
    expected = 0.0
    for k, n_k, m, s in _classes(z, y):
        per_class = 0.5 * np.sum((m - mu[k]) ** 2) / sigma**2
        if s is not None:
            per_class += 0.25 * np.sum((s - sigma**2 * np.eye(d)) ** 2) / sigma**4
        expected += n_k / len(y) * per_class
    assert value == pytest.approx(expected + lam * _pull(z, y, mu, sigma), rel=1e-5)


def _sqrtm_psd(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


@pytest.mark.parametrize("d", [16, 100])
def test_w2_is_the_closed_form_wasserstein_distance_to_the_target(d):
    sigma, eps, lam = 1.2, 1e-4, 0.0
    z, y = _batch(d, seed=2)
    value, mu = _value("gccs-w2", z, y, sigma=sigma, cov_eps=eps, lam=lam)
    expected = 0.0
    for k, n_k, m, s in _classes(z, y):
        w2 = np.sum((m - mu[k]) ** 2)
        if s is not None:
            w2 += np.sum((_sqrtm_psd(s + eps * np.eye(d)) - sigma * np.eye(d)) ** 2)
        expected += n_k / len(y) * w2 / (2 * sigma**2)
    assert value == pytest.approx(expected, rel=1e-5)


def test_hybrid_is_cross_entropy_over_distance_scores_plus_likelihood():
    sigma, lam = 2.0, 0.3
    z, y = _batch(16, seed=3, scale=4.0)
    value, mu = _value("gccs-hybrid", z, y, sigma=sigma, lam=lam)
    scores = -np.sum((z[:, None, :] - mu[None]) ** 2, -1) / (2 * sigma**2)
    log_softmax = scores - scores.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    expected = -np.mean(log_softmax[np.arange(len(y)), y]) + lam * _pull(z, y, mu, sigma)
    assert value == pytest.approx(expected, rel=1e-5)


def test_paths_penalises_closeness_to_every_bisecting_hyperplane():
    sigma, kappa, lam = 1.5, 2.0, 0.1
    z, y = _batch(16, seed=4, scale=3.0)
    value, mu = _value("gccs-paths", z, y, sigma=sigma, kappa=kappa, lam=lam)
    delta = edge_length(10, 10.0)
    expected = 0.0
    for i in range(len(y)):
        for j in range(10):
            if j != y[i]:
                a, b = mu[y[i]], mu[j]  # signed distance from the bisector of a and b, positive on a's side
                h = np.dot(z[i] - (a + b) / 2, a - b) / np.linalg.norm(a - b)
                assert h == pytest.approx((np.sum((z[i] - b) ** 2) - np.sum((z[i] - a) ** 2)) / (2 * delta))
                expected += np.log1p(np.exp(kappa - h / sigma)) / len(y)
    assert value == pytest.approx(expected + lam * _pull(z, y, mu, sigma), rel=1e-5)


@pytest.mark.parametrize("name", ["gccs-subspace", "gccs-moments", "gccs-w2"])
def test_readings_gradient_is_the_derivative_of_their_value_on_rank_deficient_classes(name):
    """float64 finite differences; classes of 1, 2, 3 and 30 samples in d = 40 (n_k < d but one)."""
    loss = build_loss(name, 10, 40, sigma=0.8, lam=0.5).double()
    loss.float64 = True  # used by gccs-subspace; the others compute in the dtype of z
    z = torch.tensor(_batch(40, seed=5)[0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor(LABELS)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["gccs-moments", "gccs-w2"])
def test_spread_readings_are_smallest_at_the_target_spread(name):
    """Moment matching and W2 pull each class to N(mu_k, sigma^2 I): wider or collapsed classes cost more."""
    g = torch.Generator().manual_seed(0)
    loss = build_loss(name, 3, 4, sigma=0.5, radius=5.0, lam=0.0)
    y = torch.arange(6000) % 3
    values = {f: float(loss(loss.centers[y] + f * 0.5 * torch.randn(6000, 4, generator=g), y)) for f in (0.3, 1.0, 2.0)}
    assert values[1.0] < 0.05 and values[0.3] > 0.1 and values[2.0] > 0.1, values


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("digits", "test")


@pytest.mark.parametrize("name", ["gccs-subspace", "gccs-moments", "gccs-w2", "gccs-hybrid", "gccs-paths"])
def test_every_reading_trains_an_accurate_digits_classifier(name, digits_test):
    """3 epochs of the default recipe (about half a second): far above the 10% of chance."""
    result = train(TrainConfig(dataset="digits", loss=name, epochs=3, seed=0, device="cpu"))
    accuracy = float((result.model.predict(digits_test.x) == digits_test.y).float().mean())
    assert accuracy > 0.9
    assert result.model.is_prototype and result.model.head.name == name
