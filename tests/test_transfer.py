"""gccs_core.transfer on the shipped digits models: replay is faithful, and what transfer shows about masking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gccs_core import load_dataset, load_model
from gccs_core.attacks import run_attack
from gccs_core.transfer import replay, step_bars, transfer_attack

N = 120


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return load_model("pretrained/digits-ce.safetensors"), load_model("pretrained/digits-gccs.safetensors")


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits", "test")
    return d.x[:N], d.y[:N]


def test_replay_on_the_crafting_model_gives_back_its_own_trajectory(models, digits):
    ce, gccs = models
    x, y = digits
    tr = transfer_attack(ce, gccs, x, y, attack="pgd", eps=0.1, steps=5, objective="margin", seed=0)
    own = replay(ce, tr.x)
    assert own.pred.shape == tr.source.pred.shape == (6, N)
    assert np.array_equal(own.pred, tr.source.pred)
    np.testing.assert_allclose(own.scores, tr.source.scores, rtol=1e-4, atol=1e-4)
    assert np.array_equal(tr.replayed.pred[0], gccs(x).argmax(1).numpy())  # frame 0 is the clean input
    assert tr.perturbation[0].max() == 0 and tr.perturbation.max() <= 0.1 + 1e-6


def test_a_strong_white_box_attack_beats_the_transfer_from_ce(models, digits):
    """Margin PGD-20, L-inf 0.1: crafted on GCCS itself it fools more digits than crafted on CE and replayed."""
    ce, gccs = models
    x, y = digits
    tr = transfer_attack(ce, gccs, x, y, attack="pgd", eps=0.1, steps=20, objective="margin", seed=0)
    white = run_attack(gccs, x, y, attack="pgd", eps=0.1, steps=20, objective="margin", seed=0)
    white_rate = white.success.float().mean().item()
    assert tr.transfer_rate < white_rate - 0.1, (tr.transfer_rate, white_rate)
    assert tr.transfer_rate <= tr.source_rate


def test_transfer_from_ce_exposes_the_masked_ce_gradient_of_gccs(models, digits):
    """Cross-entropy PGD-20 in L2 (eps 1): GCCS resists its own CE gradients, yet the inputs crafted on the CE
    model fool it almost always: the GCCS 'robustness' to this attack is gradient masking."""
    ce, gccs = models
    x, y = digits
    tr = transfer_attack(ce, gccs, x, y, attack="pgd", eps=1.0, steps=20, norm="l2", objective="ce", seed=0)
    white = run_attack(gccs, x, y, attack="pgd", eps=1.0, steps=20, norm="l2", objective="ce", seed=0)
    white_rate = white.success.float().mean().item()
    assert white_rate < 0.3 and tr.transfer_rate > 0.8, (white_rate, tr.transfer_rate)
    assert tr.perturbation.max() <= 1.0 + 1e-4 and tr.norm == "l2"


def test_step_bars_nearest_vertex_is_the_decision(models, digits):
    ce, gccs = models
    x, y = digits
    tr = transfer_attack(ce, gccs, x[:20], y[:20], attack="pgd", eps=0.2, steps=4, seed=0)
    centres = gccs.centers.detach().numpy()
    for t in range(tr.replayed.pred.shape[0]):
        for i in range(20):
            bars = step_bars(tr.replayed.z[t, i], tr.replayed.scores[t, i], centres, nearest_vertex=True)
            assert bars["kind"] == "distance" and bars["winner"] == tr.replayed.pred[t, i]
            assert bars["values"].shape == (10,) and (bars["values"] >= 0).all()
            ce_bars = step_bars(tr.source.z[t, i], tr.source.scores[t, i], None, nearest_vertex=False)
            assert ce_bars["kind"] == "score" and ce_bars["winner"] == tr.source.pred[t, i]


def test_bad_inputs_are_named(models):
    ce, gccs = models
    with pytest.raises(ValueError, match=r"\(T, N, C, H, W\)"):
        replay(gccs, np.zeros((3, 1, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"expected \(N, 1, 8, 8\)"):
        replay(gccs, np.zeros((2, 3, 1, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match="one sample"):
        step_bars(np.zeros((2, 3)), np.zeros(10), None, nearest_vertex=False)
    with pytest.raises(ValueError, match="finite prototype"):
        step_bars(np.zeros(3), np.zeros(10), None, nearest_vertex=True)
