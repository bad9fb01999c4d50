"""The losses' shared interface, GCCS against values computed by hand, the peers, parameters and bad input."""

import copy
import json
import math
import warnings

import numpy as np
import pytest
import torch

from gccs_core.losses import LOSSES, GCCSLoss, MMCLoss, build_loss, canonical_loss_params, loss_parameters, prototype_scores
from gccs_core.simplex import simplex_vertices

READINGS = ("gccs", "gccs-subspace", "gccs-moments", "gccs-w2", "gccs-hybrid", "gccs-paths")


def _batch(n=64, d=16, k=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.arange(n) % k


def gccs_by_hand(z, y, mu, sigma, rho, eps, lam):
    """The documented GCCS loss, class by class in numpy (float64)."""
    z, y, mu = np.asarray(z, np.float64), np.asarray(y), np.asarray(mu, np.float64)
    n, d = z.shape
    total = 0.0
    for k in range(len(mu)):
        zk = z[y == k]
        if len(zk) == 0:
            continue
        mean_term = np.sum((zk.mean(0) - mu[k]) ** 2) / sigma**2
        if len(zk) == 1:
            kl = 0.5 * mean_term
        else:
            s = np.cov(zk.T).reshape(d, d)
            shrunk = (1 - rho) * s + (rho * np.trace(s) / d + eps) * np.eye(d)
            kl = 0.5 * (np.trace(shrunk) / sigma**2 + mean_term - d + d * math.log(sigma**2)
                        - np.linalg.slogdet(shrunk)[1])
        total += len(zk) / n * kl
    return total + lam * np.mean(np.sum((z - mu[y]) ** 2, 1)) / (2 * sigma**2)


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
    terms = loss.last_terms
    assert terms and sum(terms.values()) == pytest.approx(float(value.detach()), rel=1e-5)


@pytest.mark.parametrize("name", READINGS)
def test_every_reading_is_a_prototype_head_with_the_gccs_geometry(name):
    loss = build_loss(name, 10, 16, sigma=3.73, radius=10.0)
    ref = GCCSLoss(10, 16, sigma=3.73, radius=10.0)
    assert loss.prototype and loss.sigma == 3.73
    assert torch.equal(loss.centers, simplex_vertices(10, 16, 10.0))
    z, _ = _batch()
    assert torch.allclose(loss.scores(z), ref.scores(z))
    assert {"sigma", "radius"} <= set(loss_parameters(name))
    assert loss.hparams()["sigma"] == 3.73


def test_gccs_kl_matches_the_closed_form_for_two_classes():
    """KL(N(m, S) || N(mu, sigma^2 I)) by hand, no shrinkage, two classes of four points."""
    sigma, d = 2.0, 2
    loss = GCCSLoss(2, d, sigma=sigma, radius=3.0, shrinkage=0.0, lam=0.0, cov_eps=1e-12)
    z = np.array([[1.0, 0], [2, 1], [3, 0], [2, -1], [-4, 0], [-2, 0], [-3, 1], [-3, -1]])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    mu = simplex_vertices(2, d, 3.0, dtype=torch.float64).numpy()
    expected = 0.0
    for k in range(2):
        zk = z[y == k]
        m, s = zk.mean(0), np.cov(zk.T)
        kl = 0.5 * (np.trace(s) / sigma**2 + np.sum((m - mu[k]) ** 2) / sigma**2 - d + d * math.log(sigma**2)
                    - math.log(np.linalg.det(s)))
        expected += 0.5 * kl
    assert float(loss(torch.tensor(z, dtype=torch.float32), torch.tensor(y))) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("d,lam,float64", [(9, 0.0, True), (32, 1.0, False), (100, 0.3, False), (512, 0.5, True)])
def test_gccs_matches_the_per_class_computation_by_hand(d, lam, float64):
    """Classes of 1, 2, 5 and 40 samples (n_k below and above d), six classes absent; both Cholesky routes."""
    rho, eps, sigma = 0.2, 1e-3, 1.5
    loss = GCCSLoss(10, d, sigma=sigma, radius=4.0, shrinkage=rho, lam=lam, cov_eps=eps, float64=float64)
    y = torch.tensor([0] + [1] * 2 + [2] * 5 + [3] * 40)
    z = torch.randn(len(y), d, generator=torch.Generator().manual_seed(d)) * 2
    expected = gccs_by_hand(z.numpy(), y.numpy(), loss.centers.numpy(), sigma, rho, eps, lam)
    assert float(loss(z, y)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("n,d", [(24, 5), (12, 40)])
def test_gccs_gradient_is_the_derivative_of_its_value(n, d):
    """The hand-written gradient against finite differences (float64), with a one-sample and an absent class."""
    loss = GCCSLoss(4, d, sigma=0.8, radius=2.0, shrinkage=0.3, lam=0.7, cov_eps=1e-2, float64=True)
    y = torch.tensor([0] + [1] * 3 + [2] * (n - 4))
    z = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(n), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z,), eps=1e-6, atol=1e-6)


def test_gccs_is_zero_at_the_target_distribution_and_positive_elsewhere():
    torch.manual_seed(0)
    k, d, sigma = 3, 4, 0.5
    loss = GCCSLoss(k, d, sigma=sigma, radius=5.0, shrinkage=0.0, lam=0.0, cov_eps=1e-9)
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
    z2 = (torch.randn(256, 512) * 1e-3).requires_grad_(True)  # collapsed classes, 25 samples each in 512 dims
    v2 = loss(z2, torch.arange(256) % 10)
    v2.backward()
    assert torch.isfinite(v2) and torch.isfinite(z2.grad).all()


def test_a_non_finite_latent_gives_a_nan_loss_not_an_exception():
    z, y = _batch()
    z[3, 2] = math.nan
    for name in READINGS:
        assert math.isnan(float(build_loss(name, 10, 16)(z, y))), name


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
    total = float(loss(z, y).detach())
    ce = float(torch.nn.functional.cross_entropy(loss.head(z), y).detach())
    centre = 0.25 * float((z - loss.centers[y]).pow(2).sum(1).mean().detach())
    assert total == pytest.approx(ce + centre, rel=1e-5)


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_parameters_describe_name_default_and_range(name):
    params = loss_parameters(name)
    loss = build_loss(name, 10, 16)
    assert list(loss.hparams()) == params  # the names, in constructor order, are what a checkpoint stores
    for p in params:
        assert isinstance(p, str) and p.help
        assert loss.hparams()[p] == p.default  # the default is the constructor's
        assert p.check(p.default) == p.default
        below = p.minimum if p.open_low else p.minimum - 1.0
        with pytest.raises(ValueError, match=f"{p}="):
            build_loss(name, 10, 16, **{p: below})
        if p.maximum is not None:
            with pytest.raises(ValueError, match=f"{p}="):
                build_loss(name, 10, 16, **{p: p.maximum + 0.5})
    again = copy.deepcopy(params)  # a CLI or a config may copy or serialise them
    assert again == params and [p.default for p in again] == [p.default for p in params]
    assert json.loads(json.dumps(params)) == list(params)


def test_eps_is_a_deprecated_alias_of_cov_eps():
    with pytest.warns(DeprecationWarning, match="'eps' is deprecated; use 'cov_eps'"):
        loss = build_loss("gccs", 10, 16, eps=3e-4)
    assert loss.cov_eps == 3e-4 and loss.hparams()["cov_eps"] == 3e-4 and "eps" not in loss.hparams()
    assert canonical_loss_params("gccs-w2", {"eps": 1e-3, "sigma": 2.0}) == {"cov_eps": 1e-3, "sigma": 2.0}
    assert canonical_loss_params("mmc", {"eps": 1e-3}) == {"eps": 1e-3}  # not a cov_eps loss: left to be refused
    with pytest.raises(ValueError, match="got both 'eps' \\(deprecated\\) and 'cov_eps'"):
        build_loss("gccs", 10, 16, eps=1e-3, cov_eps=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match="does not take parameter\\(s\\) eps"):
            build_loss("mmc", 10, 16, eps=1e-3)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: build_loss("softmax", 10, 16), "loss='softmax' is unknown; allowed: gccs, ce, mmc, center, gccs-subspace"),
        (lambda: build_loss("gccs", 10, 16, sigma=0.0), "sigma=0.0 is invalid"),
        (lambda: build_loss("gccs-w2", 10, 16, sigma=-1.0), "sigma=-1.0 is invalid"),
        (lambda: build_loss("gccs", 10, 8), "dim=8 is too small"),
        (lambda: build_loss("gccs-subspace", 10, 8), "dim=8 is too small"),
        (lambda: build_loss("gccs", 10, 16, shrinkage=1.5), "shrinkage=1.5"),
        (lambda: build_loss("gccs-paths", 10, 16, kappa=-1.0), "kappa=-1.0 is invalid"),
        (lambda: build_loss("mmc", 10, 16, lam=1.0), "does not take parameter\\(s\\) lam; allowed: sigma, radius"),
        (lambda: build_loss("gccs-hybrid", 10, 16, shrinkage=0.1), "does not take parameter\\(s\\) shrinkage"),
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


def test_a_checkpoint_that_stores_eps_loads_with_the_ridge_as_cov_eps(tmp_path):
    from gccs_core import TrainConfig
    from gccs_core.checkpoint import load_model, save_model
    from gccs_core.models import ModelSpec, build_model

    spec = TrainConfig(dataset="digits", loss="gccs").model_spec().to_dict()
    spec["loss_params"] = {"eps": 2e-4, "sigma": 1.5}  # what a checkpoint written before the rename holds
    with pytest.warns(DeprecationWarning):
        model = build_model(ModelSpec(**spec))
        save_model(model, tmp_path / "old.safetensors", {"dataset": "digits"})
        loaded = load_model(tmp_path / "old.safetensors")
    assert loaded.head.cov_eps == 2e-4 and loaded.sigma == 1.5
