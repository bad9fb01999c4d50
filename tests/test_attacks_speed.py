"""Early exit and batched restarts of the native attacks: the same broken examples for less work, the same
numbers as restarts run one by one, trajectories that freeze a broken example (digits models, fixed seeds)."""

from __future__ import annotations

import pytest
import torch

from gccs_core.attacks import run_attack
from gccs_core.attacks.native import native_attack
from gccs_core.attacks.types import AttackSpec

N = 150
CONFIGS = [
    dict(attack="pgd", eps=0.1, steps=10, objective="margin"),
    dict(attack="pgd", eps=0.08, steps=10, objective="ce", restarts=3),
    dict(attack="pgd", eps=0.1, steps=10, objective="ce", target=3),
    dict(attack="pgd", eps=0.08, steps=10, objective="dlr", amp="bf16"),
    dict(attack="mim", eps=0.1, steps=10),
    dict(attack="bim", eps=0.7, steps=8, norm="l2", objective="margin"),
]


@pytest.fixture(scope="module")
def batch(digits_test):
    return digits_test.x[:N], digits_test.y[:N]


class RowCounter:
    """Counts the rows the encoder sees: a forward pre-hook (a plain function, so the attack's deep-copied fast
    copy of the model shares it)."""

    def __init__(self, model) -> None:
        seen = [0]

        def hook(_module, args) -> None:
            seen[0] += int(args[0].shape[0])

        self.seen = seen
        self.handle = model.encoder.register_forward_pre_hook(hook)

    @property
    def rows(self) -> int:
        return self.seen[0]

    @rows.setter
    def rows(self, value: int) -> None:
        self.seen[0] = value

    def close(self) -> int:
        self.handle.remove()
        return self.rows


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
@pytest.mark.parametrize("loss", ["ce", "gccs"])
def test_early_exit_breaks_the_same_examples_with_less_work(loss, cfg, batch, request):
    model = request.getfixturevalue(f"digits_{loss}_model")
    x, y = batch
    count = RowCounter(model)
    full = run_attack(model, x, y, seed=3, **cfg)
    rows_full = count.rows
    count.rows = 0
    fast = run_attack(model, x, y, seed=3, early_exit=True, **cfg)
    rows_fast = count.close()
    assert torch.equal(fast.success, full.success)
    assert torch.equal(fast.pred == y, full.pred == y) or "target" in cfg
    broken = int(full.success.sum())
    assert 0.2 * N < broken < N, broken  # a setting where early exit has something to skip and something to keep
    assert rows_fast < 0.95 * rows_full, (rows_fast, rows_full)
    # unbroken examples ran the same steps (up to the float rounding of a smaller batch); all stay in the ball
    keep = ~full.success
    assert torch.allclose(fast.x_adv[keep], full.x_adv[keep], atol=1e-4)
    d = (fast.x_adv - x).flatten(1)
    bound = d.abs().amax(1) if cfg.get("norm", "linf") == "linf" else d.norm(dim=1)
    assert float(bound.max()) <= cfg["eps"] + 1e-5


def test_early_exit_trajectory_freezes_a_broken_example(digits_gccs_model, batch):
    x, y = batch
    full = run_attack(digits_gccs_model, x, y, eps=0.1, steps=10, objective="margin", record=True, seed=0)
    fast = run_attack(digits_gccs_model, x, y, eps=0.1, steps=10, objective="margin", record=True, seed=0, early_exit=True)
    tf, tq = full.trajectory, fast.trajectory
    assert tq.x.shape == tf.x.shape and tq.z.shape == tf.z.shape and tq.scores.shape == tf.scores.shape
    keep = ~full.success
    assert torch.allclose(tq.x[:, keep], tf.x[:, keep], atol=1e-4) and torch.allclose(tq.z[:, keep], tf.z[:, keep], atol=1e-3)
    fooled = tq.fooled(y)  # (T+1, N)
    first = torch.where(fooled.any(0), fooled.float().argmax(0), torch.full((N,), -1))
    broke = torch.nonzero(fast.success & ~fooled[0]).squeeze(1)  # broken by the attack (not wrong from the start)
    assert len(broke) > 20
    for i in broke[:40].tolist():
        t = int(first[i])
        assert t >= 1 and bool(fooled[t:, i].all())  # fooled from the step it broke, to the end
        assert torch.equal(tq.x[t:, i], tq.x[t, i].expand_as(tq.x[t:, i]))  # and it stops moving
        assert torch.equal(tq.x[t, i], fast.x_adv[i])  # its result is that iterate
    assert torch.equal(tq.x[0], x)


def test_batched_restarts_equal_restarts_one_by_one(digits_ce_model, batch):
    x, y = batch
    spec = AttackSpec("pgd", 0.05, 8, "linf", "margin", restarts=4, seed=5)
    one = native_attack(digits_ce_model.eval(), x, y, spec, record=True, batch_restarts=False)
    many = native_attack(digits_ce_model.eval(), x, y, spec, record=True, batch_restarts=True)
    assert torch.equal(one.x_adv, many.x_adv) and torch.equal(one.success, many.success)
    assert torch.equal(one.trajectory.x, many.trajectory.x) and torch.equal(one.trajectory.z, many.trajectory.z)
    single = native_attack(digits_ce_model.eval(), x, y, spec.with_(restarts=1))
    assert int(many.success.sum()) >= int(single.success.sum())  # restarts were really run


def test_early_exit_with_batched_restarts_drops_every_copy(digits_ce_model, batch):
    x, y = batch
    spec = AttackSpec("pgd", 0.1, 10, "linf", "ce", restarts=3, seed=1)
    count = RowCounter(digits_ce_model)
    full = native_attack(digits_ce_model.eval(), x, y, spec)
    rows_full, count.rows = count.rows, 0
    fast = native_attack(digits_ce_model.eval(), x, y, spec, early_stop=True)
    rows_fast = count.close()
    assert torch.equal(full.success, fast.success)
    assert rows_full == 3 * N * 11 + N  # 3 restarts x (10 steps + 1 scoring) in one batch, + the verdict
    assert rows_fast < 0.8 * rows_full


@pytest.mark.parametrize("rows_cap", [2 * N, N, 3 * N])
def test_restarts_batched_under_a_row_cap_give_the_same_result(digits_ce_model, batch, monkeypatch, rows_cap):
    """Large batches take a few restarts at a time (MAX_RESTART_ROWS): still the same as one by one."""
    from gccs_core.attacks import native

    x, y = batch
    spec = AttackSpec("pgd", 0.05, 6, "linf", "margin", restarts=3, seed=2)
    one = native_attack(digits_ce_model.eval(), x, y, spec, record=True, batch_restarts=False)
    monkeypatch.setattr(native, "MAX_RESTART_ROWS", rows_cap)
    count = RowCounter(digits_ce_model)
    capped = native_attack(digits_ce_model.eval(), x, y, spec, record=True)
    rows = count.close()
    assert torch.equal(one.x_adv, capped.x_adv) and torch.equal(one.trajectory.z, capped.trajectory.z)
    assert rows == 3 * N * 7 + 2 * N  # the frame-0 forward and the verdict, whatever the grouping
