import math

import pytest
import torch

from gccs_core.losses import LOSSES, GCCSLoss, MMCLoss, build_loss, prototype_scores
from gccs_core.simplex import simplex_vertices


def _batch(n=64, d=16, k=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.arange(n) % k


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_gives_a_finite_scalar_and_scores(name):
    loss = build_loss(name, 10, 16)
    z, y = _batch()
    z.requires_grad_(True)
    value = loss(z, y)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert loss.scores(z).shape == (64, 10)
    assert set(loss.last_terms)


def test_gccs_kl_matches_the_closed_form_for_two_classes():
    """Hand-computed KL(N(m, S) || N(mu, sigma^2 I)) with no shrinkage, two classes of four points."""
    sigma, d = 2.0, 2
    loss = GCCSLoss(2, d, sigma=sigma, radius=3.0, shrinkage=0.0, lam=0.0, eps=1e-12)
    z = torch.tensor([[1.0, 0], [2, 1], [3, 0], [2, -1], [-4, 0], [-2, 0], [-3, 1], [-3, -1]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    mu = simplex_vertices(2, d, 3.0, dtype=torch.float64)
    expected = 0.0
    for k in range(2):
        zk = z[y == k]
        m = zk.mean(0)
        s = torch.cov(zk.T)
        kl = 0.5 * (torch.trace(s) / sigma**2 + (m - mu[k]).pow(2).sum() / sigma**2 - d + d * math.log(sigma**2)
                    - torch.logdet(s))
        expected += 0.5 * float(kl)
    assert float(loss(z.float(), y)) == pytest.approx(expected, rel=1e-5)


def test_gccs_is_zero_at_the_target_distribution_and_positive_elsewhere():
    torch.manual_seed(0)
    k, d, sigma = 3, 4, 0.5
    loss = GCCSLoss(k, d, sigma=sigma, radius=5.0, shrinkage=0.0, lam=0.0, eps=1e-9)
    mu = simplex_vertices(k, d, 5.0)
    n = 20000
    y = torch.arange(n) % k
    z = mu[y] + sigma * torch.randn(n, d)
    assert abs(float(loss(z, y))) < 0.01
    assert float(loss(mu[y] + 2 * sigma * torch.randn(n, d), y)) > 0.5  # too wide
    assert float(loss(mu[y] + 0.2 * sigma * torch.randn(n, d), y)) > 0.5  # collapsed: -ln det penalises it


def test_gccs_is_stable_for_singleton_classes_and_d_512():
    loss = GCCSLoss(10, 512, lam=0.5)
    z = torch.randn(11, 512, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9])  # nine classes with one sample
    value = loss(z, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    # a big batch in 512 dims with few samples per class: the Gram-matrix path
    z2 = (torch.randn(256, 512) * 1e-3).requires_grad_(True)
    v2 = loss(z2, torch.arange(256) % 10)
    v2.backward()
    assert torch.isfinite(v2) and torch.isfinite(z2.grad).all()


def test_gccs_gram_and_full_logdet_paths_agree():
    loss = GCCSLoss(2, 6, shrinkage=0.3)
    x = torch.randn(5, 6, dtype=torch.float64)
    centred = x - x.mean(0)
    tr = centred.pow(2).sum() / 4
    s = centred.T @ centred / 4
    full = (1 - 0.3) * s + (0.3 * tr / 6 + loss.eps) * torch.eye(6, dtype=torch.float64)
    assert float(loss._logdet_shrunk(centred, tr)) == pytest.approx(float(torch.logdet(full)), rel=1e-9)
    x = torch.randn(9, 6, dtype=torch.float64)  # n > d path
    centred = x - x.mean(0)
    tr = centred.pow(2).sum() / 8
    s = centred.T @ centred / 8
    full = (1 - 0.3) * s + (0.3 * tr / 6 + loss.eps) * torch.eye(6, dtype=torch.float64)
    assert float(loss._logdet_shrunk(centred, tr)) == pytest.approx(float(torch.logdet(full)), rel=1e-9)


def test_mmc_is_half_squared_distance_and_prototype_scores_pick_nearest_vertex():
    loss = MMCLoss(4, 3, radius=2.0)
    mu = loss.centers
    z = mu[[0, 1, 2, 3]] + torch.tensor([[0.1, 0, 0], [0, 0.2, 0], [0, 0, 0], [0.3, 0, 0]])
    y = torch.tensor([0, 1, 2, 3])
    assert float(loss(z, y)) == pytest.approx(0.5 * (0.01 + 0.04 + 0 + 0.09) / 4, rel=1e-5)
    s = prototype_scores(z, mu, 0.5)
    assert torch.equal(s.argmax(1), torch.cdist(z, mu).argmin(1))
    assert float(s[0, 0]) == pytest.approx(-0.01 / (2 * 0.25), rel=1e-4)


def test_center_loss_adds_the_centre_term_to_cross_entropy():
    torch.manual_seed(0)
    loss = build_loss("center", 3, 2, lam=0.5)
    z, y = torch.randn(6, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    total = float(loss(z, y))
    ce = float(torch.nn.functional.cross_entropy(loss.head(z), y))
    centre = 0.25 * float((z - loss.centers[y]).pow(2).sum(1).mean())
    assert total == pytest.approx(ce + centre, rel=1e-5)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: build_loss("softmax", 10, 16), "loss='softmax' is unknown; allowed: gccs, ce, mmc, center"),
        (lambda: build_loss("gccs", 10, 16, sigma=0.0), "sigma=0.0 is invalid"),
        (lambda: build_loss("gccs", 10, 16, sigma=-1.0), "sigma=-1.0 is invalid"),
        (lambda: build_loss("gccs", 10, 8), "dim=8 is too small"),
        (lambda: build_loss("gccs", 10, 16, shrinkage=1.5), "shrinkage=1.5"),
        (lambda: build_loss("mmc", 10, 16, lam=1.0), "does not take parameter\\(s\\) lam; allowed: sigma, radius"),
        (lambda: build_loss("ce", 1, 16), "num_classes=1"),
    ],
)
def test_bad_parameters_are_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_labels_and_shapes_are_clear_errors():
    loss = build_loss("gccs", 10, 16)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        loss(torch.randn(4, 16), torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"expected \(N, 16\)"):
        loss(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))


@pytest.mark.parametrize("d,lam", [(9, 0.0), (32, 1.0), (512, 0.5)])
def test_gccs_batched_computation_matches_a_per_class_reference(d, lam):
    """Classes of 1, 2, 5 and 40 samples (n_k below and above d), one class absent."""
    rho, eps, sigma = 0.2, 1e-3, 1.5
    loss = GCCSLoss(10, d, sigma=sigma, radius=4.0, shrinkage=rho, lam=lam, eps=eps)
    y = torch.tensor([0] + [1] * 2 + [2] * 5 + [3] * 40)
    z = torch.randn(len(y), d, generator=torch.Generator().manual_seed(d)) * 2
    z64, mu = z.double(), loss.centers.double()
    expected = 0.0
    for k in range(10):
        zk = z64[y == k]
        n_k = len(zk)
        if n_k == 0:
            continue
        m = zk.mean(0)
        mean_term = float((m - mu[k]).pow(2).sum()) / sigma**2
        if n_k == 1:
            kl = 0.5 * mean_term
        else:
            s = torch.cov(zk.T).reshape(d, d)
            shrunk = (1 - rho) * s + (rho * torch.trace(s) / d + eps) * torch.eye(d, dtype=torch.float64)
            kl = 0.5 * (float(torch.trace(shrunk)) / sigma**2 + mean_term - d + d * math.log(sigma**2)
                        - float(torch.logdet(shrunk)))
        expected += n_k / len(y) * kl
    expected += lam * float((z64 - mu[y]).pow(2).sum(1).mean()) / (2 * sigma**2)
    assert float(loss(z, y)) == pytest.approx(expected, rel=1e-4)
