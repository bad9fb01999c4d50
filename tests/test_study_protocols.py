"""The study's weak protocol runs as a cascade on survivors: its per-example verdict must be that of running
each deterministic attack on every example (real pretrained digits model, tiny budgets)."""

import pytest
import torch

from gccs_core.checkpoint import load_model
from gccs_core.data import load_dataset
from gccs_core.study import protocols as P


@pytest.fixture(scope="module")
def model_and_data():
    model = load_model("pretrained/digits-gccs.safetensors")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    test = load_dataset("digits", "test")
    return model, test.x[:60].float(), test.y[:60].long()


def test_weak_cascade_agrees_with_each_deterministic_attack_run_alone(model_and_data):
    model, x, y = model_and_data
    eps_list = [0.1, 0.3]
    out = P.weak_protocol(model, x, y, eps_list, steps=5, mim_steps=3, cw_steps=2, square_queries=5, seed=0)
    clean = torch.tensor(out["clean"])
    assert clean.float().mean() > 0.9
    targets = P.random_wrong_labels(y[clean], int(model.num_classes), 0)
    for eps in eps_list:
        robust = torch.tensor(out["eps"][f"{eps:g}"]["robust"])
        assert not (robust & ~clean).any()  # a clean-wrong example is never robust
        xc, yc = x[clean], y[clean]
        alone = {
            "fgsm": P._attack_pred(model, xc, yc, 0, attack="fgsm", eps=eps, objective="ce"),
            "pgd": P._attack_pred(model, xc, yc, 0, attack="pgd", eps=eps, steps=5, objective="ce", random_start=False),
            "mim": P._attack_pred(model, xc, yc, 0, attack="mim", eps=eps, steps=3, objective="ce", step_size=eps / 3),
            "targeted": P._attack_pred(model, xc, yc, 0, attack="pgd", eps=eps, steps=5, objective="ce",
                                       random_start=False, target_all=targets),
        }
        broken_alone = torch.zeros(len(yc), dtype=torch.bool)
        for pred in alone.values():
            broken_alone |= pred != yc
        # robust in the cascade => no deterministic attack breaks it when run alone on every example
        assert not (robust[clean] & broken_alone).any()
        # what the gradient attacks break alone, the cascade counts as broken (square and CW may break more)
        assert int((~robust[clean]).sum()) >= int(broken_alone.sum())
        breaks = out["eps"][f"{eps:g}"]["first_break"]
        assert sum(breaks.values()) == int((~robust[clean]).sum())
    # the weak protocol is weaker at the small eps than at the large one
    assert sum(out["eps"]["0.1"]["robust"]) >= sum(out["eps"]["0.3"]["robust"])


def test_the_strong_protocol_resumed_between_radii_gives_the_uninterrupted_result(model_and_data):
    """A long strong job saves each finished radius; a killed run starts again from the saved radii. The radii it
    computes then must equal those of one uninterrupted run (each radius draws its own random starts)."""
    model, x, y = model_and_data
    kw = dict(steps=4, restarts=2, square_queries=10, seed=0)
    eps_list = [0.05, 0.1, 0.2]
    saved: dict = {}
    whole = P.strong_protocol(model, x, y, eps_list, **kw, on_eps=lambda k, rec: saved.__setitem__(k, rec))
    assert list(saved) == ["0.05", "0.1", "0.2"] and saved == whole["eps"]
    # killed after the first radius: the resumed run computes only the other two, and they are the same
    seen: list = []
    resumed = P.strong_protocol(model, x, y, eps_list, **kw, done={"0.05": saved["0.05"]},
                                on_eps=lambda k, rec: seen.append(k))
    assert seen == ["0.1", "0.2"]
    assert resumed == whole
