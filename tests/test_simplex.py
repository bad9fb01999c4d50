import itertools
import math

import pytest
import torch

from gccs_core.simplex import edge_length, normal_tail, pairwise_bayes_error, separation_ratio, simplex_vertices


@pytest.mark.parametrize("k,d", [(2, 1), (3, 2), (10, 9), (10, 16), (10, 512), (100, 128)])
@pytest.mark.parametrize("r", [1.0, 10.0])
def test_vertices_form_a_regular_simplex(k, d, r):
    mu = simplex_vertices(k, d, r, dtype=torch.float64)
    assert mu.shape == (k, d)
    assert torch.allclose(mu.norm(dim=1), torch.full((k,), r, dtype=torch.float64), atol=1e-9)
    gram = mu @ mu.T
    off = gram[~torch.eye(k, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -r * r / (k - 1)), atol=1e-9)
    assert torch.allclose(mu.sum(0), torch.zeros(d, dtype=torch.float64), atol=1e-9)
    dists = [float((mu[i] - mu[j]).norm()) for i, j in itertools.combinations(range(k), 2)]
    assert max(dists) - min(dists) < 1e-9
    assert dists[0] == pytest.approx(edge_length(k, r))


def test_vertices_are_deterministic_and_padded_with_zeros():
    a, b = simplex_vertices(10, 32), simplex_vertices(10, 32)
    assert torch.equal(a, b)
    assert torch.count_nonzero(a[:, 9:]) == 0


def test_edge_length_and_bayes_error():
    assert edge_length(2, 1.0) == pytest.approx(2.0)  # two antipodal points
    assert edge_length(10, 10.0) == pytest.approx(10 * math.sqrt(20 / 9))
    assert normal_tail(0.0) == pytest.approx(0.5)
    assert normal_tail(1.959964) == pytest.approx(0.025, rel=1e-4)
    # Delta = 2 for K=2, r=1; sigma = 1 -> Q(1)
    assert pairwise_bayes_error(2, 1.0, 1.0) == pytest.approx(0.158655, rel=1e-4)
    assert pairwise_bayes_error(10, 10.0, 2.0) > pairwise_bayes_error(10, 10.0, 1.0)
    assert separation_ratio(10, 10.0, 2.0) == pytest.approx(edge_length(10, 10.0) / 2.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_classes": 1, "dim": 4}, "num_classes=1"),
        ({"num_classes": 10, "dim": 8}, "dim=8 is too small.*dim >= K-1 = 9"),
        ({"num_classes": 3, "dim": 2, "radius": 0.0}, "radius=0.0"),
        ({"num_classes": 3, "dim": 2, "radius": float("nan")}, "radius=nan"),
    ],
)
def test_bad_geometry_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simplex_vertices(**kwargs)


def test_bad_sigma_is_a_clear_error():
    with pytest.raises(ValueError, match="sigma=0"):
        pairwise_bayes_error(10, 10.0, 0)
    with pytest.raises(ValueError, match="sigma=-1"):
        separation_ratio(10, 10.0, -1)
