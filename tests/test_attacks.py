"""Tests of gccs_core.attacks on small models trained on real digits (conftest fixtures)."""

from __future__ import annotations

import copy

import pytest
import torch

from gccs_core.attacks import (
    ATTACKS,
    MIN_PERTURBATION_ATTACKS,
    NATIVE_ATTACKS,
    AttackResult,
    AttackSpec,
    Trajectory,
    dlr_loss,
    margin_loss,
    pgd_linf,
    run_attack,
)

N = 120


@pytest.fixture(scope="module")
def batch(digits_test):
    return digits_test.x[:N], digits_test.y[:N]


def _acc(model, x, y) -> float:
    return float((model.predict(x) == y).float().mean())


def test_every_registered_attack_runs_through_run_attack(digits_ce_model, batch):
    """The registry is what run_attack dispatches on: every name in it attacks a batch, bounded ones stay in
    the ball, and a name outside it is refused with the registry's names as the allowed list."""
    x, y = batch[0][:8], batch[1][:8]
    for name in ATTACKS:
        minimal = name in MIN_PERTURBATION_ATTACKS
        res = run_attack(digits_ce_model, x, y, name, eps=0.2, steps=3, norm="l2" if minimal else "linf")
        assert isinstance(res, AttackResult) and res.x_adv.shape == x.shape, name
        assert torch.equal(res.pred, digits_ce_model.predict(res.x_adv)), name
        if not minimal:
            assert float((res.x_adv - x).abs().max()) <= 0.2 + 1e-5, name
    with pytest.raises(ValueError) as info:
        run_attack(digits_ce_model, x, y, "jsma")
    assert f"allowed: {', '.join(ATTACKS)}." in str(info.value)


def test_attack_spec_is_checked_once_and_frozen():
    spec = AttackSpec("pgd", eps=0.1, steps=4)
    assert spec.alpha == pytest.approx(2.5 * 0.1 / 4) and spec.with_(step_size=0.01).alpha == 0.01
    with pytest.raises(ValueError, match="steps=0"):
        spec.with_(steps=0)
    with pytest.raises(AttributeError):
        spec.eps = 0.2  # type: ignore[misc]


def test_trajectory_fooled_per_frame(digits_gccs_model, batch):
    x, y = batch
    res = run_attack(digits_gccs_model, x, y, "pgd", eps=0.2, steps=5, objective="margin", record=True)
    fooled = res.trajectory.fooled(y)
    assert fooled.shape == (6, len(x)) and torch.equal(fooled[0], digits_gccs_model.predict(x) != y)
    assert int(fooled[-1].sum()) > int(fooled[0].sum())  # the attack fools more by its last frame
    targeted = run_attack(digits_gccs_model, x, y, "pgd", eps=0.3, steps=5, target=3, record=True)
    assert torch.equal(targeted.trajectory.fooled(y, 3), targeted.trajectory.pred == 3)


def test_margin_and_dlr_hand_computed():
    s = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, -4.0]])
    y = torch.tensor([0, 0])
    assert torch.allclose(margin_loss(s, y), torch.tensor([1.0 - 3.0, 2.0 - 0.0]))
    # untargeted DLR: -(s_y - max_other) / (s_pi1 - s_pi3)
    assert torch.allclose(dlr_loss(s, y), torch.tensor([-(3.0 - 1.0) / (3.0 - 0.0), -(0.0 - 2.0) / (2.0 - 0.0)]))
    # targeted DLR to class 2: -(s_y - s_t) / (s_pi1 - (s_pi3 + s_pi4) / 2)
    t = torch.tensor([2, 2])
    expected = torch.tensor([-(3.0 - 0.0) / (3.0 - (0.0 - 1.0) / 2), -(0.0 - 1.0) / (2.0 - (0.0 - 4.0) / 2)])
    assert torch.allclose(dlr_loss(s, y, t), expected)
    # DLR is invariant to shifting and positive scaling of the scores (why it suits distance scores)
    assert torch.allclose(dlr_loss(7.0 * s - 100.0, y), dlr_loss(s, y), atol=1e-6)


@pytest.mark.parametrize("attack", NATIVE_ATTACKS)
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_native_attacks_stay_in_ball_and_lower_accuracy(digits_ce_model, batch, attack, norm, eps):
    x, y = batch
    res = run_attack(digits_ce_model, x, y, attack, eps=eps, steps=10, norm=norm, objective="margin")
    assert isinstance(res, AttackResult) and res.trajectory is None
    assert res.x_adv.shape == x.shape and res.x_adv.device.type == "cpu"
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    delta = (res.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-5
    assert torch.equal(res.pred, digits_ce_model.predict(res.x_adv))
    assert torch.equal(res.success, res.pred != y)
    assert float((~res.success).float().mean()) < _acc(digits_ce_model, x, y) - 0.2


def test_iterative_beats_single_step(digits_ce_model, batch):
    """At an eps where FGSM breaks some but not all examples, 20 PGD steps break clearly more (>= 4 of 120)."""
    x, y = batch
    fgsm = int(run_attack(digits_ce_model, x, y, "fgsm", eps=0.1).success.sum())
    pgd = int(run_attack(digits_ce_model, x, y, "pgd", eps=0.1, steps=20, objective="margin").success.sum())
    assert 0.1 * len(x) < fgsm < 0.9 * len(x), fgsm  # room for the comparison on both sides
    assert pgd >= fgsm + 4, (pgd, fgsm)


def test_accuracy_falls_with_eps(digits_gccs_model, batch):
    x, y = batch
    accs = [float((~run_attack(digits_gccs_model, x, y, "pgd", eps=e, steps=20, objective="margin").success).float().mean())
            for e in (0.0, 0.05, 0.1, 0.2, 0.3)]
    assert accs == sorted(accs, reverse=True)
    assert accs[0] == pytest.approx(_acc(digits_gccs_model, x, y))
    assert accs[-1] <= 0.05


def test_trajectory_frames(digits_gccs_model, batch):
    x, y = batch
    steps = 7
    res = run_attack(digits_gccs_model, x, y, "pgd", eps=0.2, steps=steps, objective="dlr", record=True, restarts=2)
    tr = res.trajectory
    assert isinstance(tr, Trajectory)
    n, d, k = len(x), digits_gccs_model.latent_dim, digits_gccs_model.num_classes
    assert tr.x.shape == (steps + 1, *x.shape) and tr.z.shape == (steps + 1, n, d) and tr.scores.shape == (steps + 1, n, k)
    assert tr.pred.shape == (steps + 1, n) and tr.steps == list(range(steps + 1))
    assert torch.equal(tr.x[0], x)
    assert torch.equal(tr.pred, tr.scores.argmax(-1))
    with torch.no_grad():
        z_last = digits_gccs_model.embed(tr.x[-1])
    assert torch.allclose(tr.z[-1], z_last, atol=1e-4)
    assert float((tr.x - x).abs().max()) <= 0.2 + 1e-5
    # x_adv is one of the recorded iterates of the kept restart (the best one), per example
    hit = ((tr.x[1:] - res.x_adv[None]).flatten(2).abs().amax(2) < 1e-6).any(0)
    assert bool(hit.all())


def test_targeted_pgd_reaches_target(digits_ce_model, batch):
    x, y = batch
    target = 3
    res = run_attack(digits_ce_model, x, y, "pgd", eps=0.3, steps=30, objective="margin", target=target)
    assert torch.equal(res.success, res.pred == target)
    assert float(res.success.float().mean()) > 0.8
    tvec = (y + 1) % 10
    res2 = run_attack(digits_ce_model, x, y, "mim", eps=0.3, steps=30, objective="ce", target=tvec)
    assert torch.equal(res2.success, res2.pred == tvec)
    assert float(res2.success.float().mean()) > 0.6


def test_latent_objectives(digits_gccs_model, digits_ce_model, batch):
    x, y = batch
    mu = digits_gccs_model.centers
    res = run_attack(digits_gccs_model, x, y, "pgd", eps=0.2, steps=10, objective="latent", target=5, record=True)
    dist = (res.trajectory.z - mu[5]).norm(dim=-1).mean(1)
    assert dist[-1] < 0.5 * dist[0]  # pulled towards mu_t
    res = run_attack(digits_gccs_model, x, y, "pgd", eps=0.2, steps=10, objective="latent", record=True)
    own = (res.trajectory.z - mu[y][None]).norm(dim=-1).mean(1)
    assert own[-1] > 1.5 * own[0]  # pushed away from mu_y
    with pytest.raises(ValueError, match="class centres"):
        run_attack(digits_ce_model, x, y, "pgd", objective="latent")


def test_restarts_never_weaken_and_seed_reproduces(digits_ce_model, batch):
    x, y = batch
    one = run_attack(digits_ce_model, x, y, "pgd", eps=0.08, steps=5, restarts=1, seed=3)
    again = run_attack(digits_ce_model, x, y, "pgd", eps=0.08, steps=5, restarts=1, seed=3)
    assert torch.equal(one.x_adv, again.x_adv)
    three = run_attack(digits_ce_model, x, y, "pgd", eps=0.08, steps=5, restarts=3, seed=3)
    assert bool((three.success | ~one.success).all())  # every success of 1 restart is kept with 3


def test_batched_equals_split(digits_ce_model, batch):
    """No per-sample loop and no cross-talk: attacking halves gives the same as the whole batch."""
    x, y = batch
    whole = run_attack(digits_ce_model, x, y, "bim", eps=0.1, steps=5)
    a = run_attack(digits_ce_model, x[:50], y[:50], "bim", eps=0.1, steps=5)
    b = run_attack(digits_ce_model, x[50:], y[50:], "bim", eps=0.1, steps=5)
    assert torch.allclose(whole.x_adv, torch.cat([a.x_adv, b.x_adv]), atol=1e-6)


def test_zero_eps_is_identity(digits_ce_model, batch):
    x, y = batch
    res = run_attack(digits_ce_model, x, y, "pgd", eps=0.0, steps=3)
    assert torch.equal(res.x_adv, x)
    assert torch.equal(res.success, digits_ce_model.predict(x) != y)


def test_mode_is_restored(digits_ce_model, batch):
    x, y = batch
    model = copy.deepcopy(digits_ce_model)
    model.train()
    run_attack(model, x[:20], y[:20], "pgd", eps=0.1, steps=2)
    assert model.training
    model.eval()
    run_attack(model, x[:20], y[:20], "fgsm", eps=0.1)
    assert not model.training


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"eps": -0.1}, r"eps=-0\.1 .*>= 0"),
        ({"attack": "nope"}, r"attack='nope' is unknown; allowed: fgsm"),
        ({"steps": 0}, r"steps=0 .*>= 1"),
        ({"norm": "l1"}, r"norm='l1' is unknown; allowed: linf, l2"),
        ({"objective": "hinge"}, r"objective='hinge' is unknown"),
        ({"restarts": 0}, r"restarts=0"),
        ({"target": 10}, r"target class 10 is outside the label set: allowed classes are 0..9"),
        ({"target": -1}, r"target class -1 is outside the label set"),
        ({"target": torch.tensor([1, 2])}, r"target has 2 entries"),
        ({"step_size": 0.0}, r"step_size=0\.0"),
        ({"amp": "fp8"}, r"amp='fp8' is unknown; allowed: none, bf16"),
    ],
)
def test_bad_input_raises_clear_error(digits_ce_model, batch, kwargs, match):
    x, y = batch
    with pytest.raises(ValueError, match=match):
        run_attack(digits_ce_model, x[:4], y[:4], **kwargs)


@pytest.mark.parametrize("loss_model", ["digits_gccs_model", "digits_ce_model"])
def test_bf16_gradients_match_float32_with_the_margin_objective(loss_model, batch, request):
    """bf16 autocast speeds up the gradients; with the margin objective it must be as strong as float32,
    and the verdict (pred, success) must be the float32 model's own."""
    model = request.getfixturevalue(loss_model)
    x, y = batch
    res = {amp: run_attack(model, x, y, "pgd", eps=0.15, steps=20, objective="margin", seed=0, amp=amp, record=True)
           for amp in ("none", "bf16")}
    acc = {amp: float((~r.success).float().mean()) for amp, r in res.items()}
    assert abs(acc["bf16"] - acc["none"]) <= 0.03, acc
    assert acc["none"] < _acc(model, x, y) - 0.2  # the attack does something
    with torch.no_grad():
        assert torch.equal(res["bf16"].pred, model(res["bf16"].x_adv).argmax(1))
    assert res["bf16"].trajectory.z.dtype == torch.float32


@pytest.mark.parametrize("attack", ["apgd-dlr", "square"])
def test_bf16_art_attacks_are_as_strong_as_float32_and_keep_a_float32_verdict(digits_gccs_model, batch, attack):
    """ART's APGD (gradients) and Square (queries) under ``amp='bf16'``: the encoder runs in bfloat16 inside the
    attack, so the result differs from float32's, but by no more than 3 points; pred is the float32 model's own."""
    x, y = batch
    model = digits_gccs_model
    steps = 20 if attack == "apgd-dlr" else 100
    res = {amp: run_attack(model, x, y, attack, eps=0.15, steps=steps, seed=0, amp=amp) for amp in ("none", "bf16")}
    acc = {amp: float((~r.success).float().mean()) for amp, r in res.items()}
    assert abs(acc["bf16"] - acc["none"]) <= 0.03, acc
    assert acc["none"] < _acc(model, x, y) - 0.2, acc  # the attack does something
    assert not torch.equal(res["bf16"].x_adv, res["none"].x_adv)  # bf16 really ran (another search path)
    assert (res["bf16"].x_adv - x).abs().amax() <= 0.15 + 1e-6
    with torch.no_grad():
        assert torch.equal(res["bf16"].pred, model(res["bf16"].x_adv).argmax(1))


def test_bad_labels_raise(digits_ce_model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        run_attack(digits_ce_model, x[:2], torch.tensor([0, 12]))


def test_pgd_linf_training_entry_point(digits_ce_model, batch):
    """The adversarial-training PGD: in the ball, leaves parameter gradients alone, and is the same loop as
    run_attack's (from the clean input its last iterate is a 5-step BIM's last frame)."""
    x, y = batch
    model = copy.deepcopy(digits_ce_model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    g = torch.Generator().manual_seed(0)
    x_adv = pgd_linf(model, x, y, 0.1, 5, generator=g)
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert all(float(p.grad.abs().sum()) == 0 for p in model.parameters())  # parameter grads untouched
    assert _acc(model, x_adv, y) < _acc(model, x, y) - 0.2
    with pytest.raises(ValueError, match="eps=-1"):
        pgd_linf(model, x, y, -1, 5)
    from_clean = pgd_linf(model, x, y, 0.1, 5, random_start=False)
    bim = run_attack(model, x, y, "bim", eps=0.1, steps=5, record=True)
    same = (from_clean - bim.trajectory.x[-1]).abs() < 1e-5  # BIM runs on the BN-folded copy: a gradient sign
    assert float(same.float().mean()) > 0.99  # within float rounding of zero may flip, a different loop would not


def test_cli_attack(digits_gccs_model, tmp_path, capsys):
    from safetensors.torch import load_file

    from gccs_core import save_model
    from gccs_core.cli import main

    ckpt = save_model(digits_gccs_model, tmp_path / "m.safetensors", {"dataset": "digits"})
    out = tmp_path / "adv.safetensors"
    rc = main(["attack", "--checkpoint", str(ckpt), "--attack", "pgd", "--objective", "margin", "--eps", "0.3", "--n", "40",
               "--steps", "10", "--save", str(out)])
    assert rc == 0 and "success rate" in capsys.readouterr().out
    saved = load_file(out)
    assert saved["traj_x"].shape == (11, 40, 1, 8, 8) and float(saved["success"].float().mean()) > 0.9
    for args, match in [(["--target", "10"], "target class 10 is outside the label set"), (["--eps", "-1"], "eps=-1"),
                        (["--attack", "laser"], "attack='laser' is unknown"), (["--steps", "0"], "steps=0")]:
        assert main(["attack", "--checkpoint", str(ckpt), "--n", "5", *args]) == 2
        err = capsys.readouterr().err
        assert match in err and len(err.strip().splitlines()) == 1
    assert main(["attack", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
