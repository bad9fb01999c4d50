"""The fast GCCS loss (float32 statistics, one batched factorisation, gradient written out) is the float64 loss."""

import pytest
import torch

from gccs_core.losses import GCCSLoss
from gccs_core.simplex import simplex_vertices


def _classes(n_per_class, d, spread, seed):
    """Latents around their vertices: the class sizes given (0 = absent), ``spread`` sigma per dimension."""
    y = torch.cat([torch.full((n,), k) for k, n in enumerate(n_per_class)])
    g = torch.Generator().manual_seed(seed)
    return simplex_vertices(10, d)[y] + spread * torch.randn(len(y), d, generator=g, dtype=torch.float64), y


@pytest.mark.parametrize("d", [16, 512])
@pytest.mark.parametrize("spread", [1.0, 0.1, 0.01])
def test_float32_statistics_agree_with_float64_within_the_stated_tolerance(d, spread):
    """Classes of 1, 2, 5, 13, 25 and 40 samples (n_k < d at d = 512; 13 < 16 too), four classes absent."""
    z, y = _classes([1, 2, 5, 13, 25, 40, 0, 0, 0, 0], d, spread, seed=d)
    out = {}
    for float64 in (True, False):
        zz = (z if float64 else z.float()).clone().requires_grad_(True)
        value = GCCSLoss(10, d, float64=float64)(zz, y)
        value.backward()
        out[float64] = float(value.detach()), zz.grad.double()
    (v64, g64), (v32, g32) = out[True], out[False]
    assert v32 == pytest.approx(v64, rel=1e-5)
    assert float((g32 - g64).norm() / g64.norm()) < 1e-4


@pytest.mark.parametrize("n,d", [(128, 16), (256, 512), (64, 64)])  # d x d and N x N Gram routes
def test_fast_loss_is_the_plain_autograd_loss(n, d):
    """The same value and gradient as the textbook computation differentiated by autograd (float64)."""
    rho, eps, sigma, lam = 0.1, 1e-4, 1.0, 1.0
    y = torch.arange(n) % 10
    y[:7] = 0  # uneven classes
    z = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(n)).requires_grad_(True)
    loss = GCCSLoss(10, d, float64=True)
    fast = loss(z, y)
    (g_fast,) = torch.autograd.grad(fast, z)
    mu = loss.centers.double()
    ref = 0.0
    for k in range(10):
        zk = z[y == k]
        s = torch.cov(zk.T)
        shrunk = (1 - rho) * s + (rho * torch.trace(s) / d + eps) * torch.eye(d, dtype=torch.float64)
        kl = 0.5 * (torch.trace(shrunk) / sigma**2 + (zk.mean(0) - mu[k]).pow(2).sum() / sigma**2 - d
                    - torch.logdet(shrunk))
        ref = ref + len(zk) / n * kl
    ref = ref + lam * (z - mu[y]).pow(2).sum(1).mean() / (2 * sigma**2)
    (g_ref,) = torch.autograd.grad(ref, z)
    assert float(fast) == pytest.approx(float(ref), rel=1e-10)
    assert torch.allclose(g_fast, g_ref, rtol=1e-8, atol=1e-12)


def test_no_gradient_is_computed_or_kept_without_autograd():
    z, y = _classes([20] * 10, 16, 1.0, seed=0)
    loss = GCCSLoss(10, 16)
    with torch.no_grad():
        value = loss(z.float(), y)
    assert value.grad_fn is None and torch.isfinite(value)
    assert loss.last_terms.keys() == {"kl", "pull"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("sizes", [[1, 2, 5, 13, 25, 40, 0, 0, 0, 0], [12] * 10, [30, 1, 1, 1, 0, 0, 0, 0, 0, 60]])
def test_the_cpu_numpy_backend_is_the_torch_backend(dtype, fused, sizes):
    """On the CPU the d x d route runs its formulas on numpy arrays (fewer per-call overheads); torch tensors stay
    for accelerators. Both give the same kl, pull and gradients: one-sample and absent classes, rank-deficient
    classes (13 < 16)."""
    from gccs_core.losses import _kl_small

    z, y = _classes(sizes, 16, 0.3, seed=len(sizes) + sum(sizes))
    z, mu = z.to(dtype), simplex_vertices(10, 16).to(dtype)
    args = (z, y, mu, 1.0, 0.1, 1e-4, 0.7, True, fused)
    ref, got = _kl_small(*args, backend="torch"), _kl_small(*args)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    for a, b in zip(ref, got):
        assert (a is None) == (b is None)
        if a is not None:
            assert b.dtype == dtype and b.shape == a.shape
            torch.testing.assert_close(b, a, **tol)
    for backend in ("numpy", "torch"):
        no_grad = _kl_small(z, y, mu, 1.0, 0.1, 1e-4, 0.7, False, fused, backend=backend)
        assert no_grad[2] is None and no_grad[3] is None
        torch.testing.assert_close(no_grad[0], ref[0], **tol)


def test_a_failed_factor_is_nan_on_both_backends():
    from gccs_core.losses import _kl_small

    z, y = _classes([20] * 10, 16, 1.0, seed=3)
    z = z.float()
    z[0, 0] = float("inf")
    mu = simplex_vertices(10, 16)
    for backend in ("numpy", "torch"):
        kl, _, grad, _ = _kl_small(z, y, mu, 1.0, 0.1, 1e-4, 1.0, True, True, backend=backend)
        assert not torch.isfinite(kl) and not torch.isfinite(grad).all(), backend


def test_both_backends_agree_on_a_batch_too_big_for_outer_products():
    """N d^2 above 4M floats: the scatter matrices come from one (N, K d) product instead of N outer products."""
    from gccs_core.losses import _kl_small

    z, y = _classes([1700] * 10, 16, 0.5, seed=11)  # 17,000 x 16 x 16 = 4.4M
    z, mu = z.float(), simplex_vertices(10, 16)
    args = (z, y, mu, 1.0, 0.1, 1e-4, 1.0, True, False)
    for a, b in zip(_kl_small(*args, backend="torch"), _kl_small(*args)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    small = _kl_small(z[::7].contiguous(), y[::7].contiguous(), mu, 1.0, 0.1, 1e-4, 1.0, False, False)
    assert torch.isfinite(small[0])
