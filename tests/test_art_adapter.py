"""Tests of the ART adapter: agreement with our PGD, the minimal-perturbation attacks, and the pitfalls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gccs_core.attacks import run_attack
from gccs_core.attacks.art import art_pgd


@pytest.mark.parametrize("model_name", ["digits_ce_model", "digits_gccs_model"])
@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_our_pgd_agrees_with_art_pgd(request, digits_test, model_name, eps):
    """Same model, eps, steps, step size, CE loss and one random start: robust accuracy within 2 points."""
    model = request.getfixturevalue(model_name)
    x, y = digits_test.x, digits_test.y  # all 360 test digits
    ours = run_attack(model, x, y, "pgd", eps=eps, steps=20, objective="ce", restarts=1, seed=0)
    art = art_pgd(model, x, y, eps=eps, steps=20, seed=0)
    acc_ours = float((~ours.success).float().mean())
    acc_art = float((~art.success).float().mean())
    clean = float((model.predict(x) == y).float().mean())
    assert acc_ours < clean - 0.1  # the attack does something at these eps
    assert abs(acc_ours - acc_art) <= 0.02, (acc_ours, acc_art)
    assert float((art.x_adv - x).abs().max()) <= eps + 1e-5


@pytest.mark.parametrize("attack", ["apgd-ce", "apgd-dlr", "square"])
def test_bounded_art_attacks(digits_gccs_model, digits_test, attack):
    x, y = digits_test.x[:100], digits_test.y[:100]
    eps = 0.2
    steps = 200 if attack == "square" else 20
    res = run_attack(digits_gccs_model, x, y, attack, eps=eps, steps=steps, record=True)
    assert float((res.x_adv - x).abs().max()) <= eps + 1e-5
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert torch.equal(res.pred, digits_gccs_model.predict(res.x_adv))
    assert torch.equal(res.success, res.pred != y)
    assert float(res.success.float().mean()) > 0.5
    tr = res.trajectory
    assert tr.steps == [0, steps] and tr.x.shape == (2, *x.shape) and torch.equal(tr.x[0], x)
    assert torch.equal(tr.x[1], res.x_adv)


@pytest.mark.parametrize("attack", ["deepfool", "cw"])
def test_minimal_perturbation_attacks(digits_ce_model, digits_test, attack):
    x, y = digits_test.x[:60], digits_test.y[:60]
    res = run_attack(digits_ce_model, x, y, attack, steps=20)
    assert float(res.success.float().mean()) > 0.9
    l2 = (res.x_adv - x).flatten(1).norm(dim=1)[res.success]
    # minimal perturbations are small next to the images themselves (8x8 digits have L2 norm ~3-4)
    assert 0.05 < float(l2.median()) < 1.5


def test_targeted_art_attack_uses_target(digits_ce_model, digits_test):
    x, y = digits_test.x[:60], digits_test.y[:60]
    res = run_attack(digits_ce_model, x, y, "apgd-ce", eps=0.3, steps=20, target=4)
    assert torch.equal(res.success, res.pred == 4)
    assert float(res.success.float().mean()) > 0.7
    with pytest.raises(ValueError, match="deepfool.*untargeted"):
        run_attack(digits_ce_model, x, y, "deepfool", target=4)


def test_art_randomness_is_seeded_and_restored(digits_ce_model, digits_test):
    x, y = digits_test.x[:40], digits_test.y[:40]
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = run_attack(digits_ce_model, x, y, "square", eps=0.1, steps=30, seed=5)
    assert np.array_equal(np.random.get_state()[1], before)  # global NumPy state untouched
    b = run_attack(digits_ce_model, x, y, "square", eps=0.1, steps=30, seed=5)
    assert torch.equal(a.x_adv, b.x_adv)
