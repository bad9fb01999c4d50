"""A cost-ordered attack cascade (cheap attacks first, the expensive ones only on the survivors) gives the same
per-example worst case as running every attack on every example: the study's strong protocol and the
evaluation suite's survivors-only APGD and Square, on 100 test digits, fast settings, fixed seeds.

The identity is exact for attacks whose result for an example does not depend on the rest of its batch; the
random starts (ours per batch position, ART's per batch) do, so it is checked here, not guaranteed: one case
is a known difference (marked xfail, strict, so a fix shows up)."""

from __future__ import annotations

import pytest
import torch

from gccs_core.data import load_dataset
from gccs_core.evaluate import evaluate_robustness
from gccs_core.study import protocols

N = 100
EPS = [0.1, 0.2]
FAST = dict(steps=10, restarts=2, square_queries=100, seed=0)


@pytest.fixture(scope="module")
def digits100():
    test = load_dataset("digits", "test", limit=N)
    return test.x, test.y


def _every_attack_on_every_example(model, x, y, eps: float, steps: int, restarts: int, square_queries: int,
                                   seed: int) -> torch.Tensor:
    """The strong protocol's attacks, each on every clean-correct example (no cascade): the robust mask over x."""
    correct = protocols.predict(model, x) == y
    idx = torch.nonzero(correct).squeeze(1)
    xc, yc = x[idx], y[idx]
    everyone = torch.ones(len(idx), dtype=torch.bool)
    near = protocols.nearest_wrong_classes(model, xc, yc, 3)

    def run(reps: int, s: int = seed, **kw) -> torch.Tensor:
        return protocols._restarted(model, xc, yc, everyone, reps, s, eps=eps, **kw)

    broken = [run(1, attack="pgd", steps=min(20, steps), objective="margin"),
              run(restarts, attack="pgd", steps=steps, objective="margin"),
              run(restarts, attack="pgd", steps=steps, objective="dlr")]
    if getattr(model, "centers", None) is not None:
        broken.append(run(1, attack="pgd", steps=steps, objective="latent"))
    broken += [run(1, attack="apgd-ce", steps=steps), run(1, attack="apgd-dlr", steps=steps)]
    broken += [run(1, seed + j, attack="pgd", steps=steps, objective="margin", target_all=near[:, j]) for j in range(3)]
    broken.append(run(1, attack="square", steps=square_queries))
    any_broken = torch.stack(broken).any(0)
    robust = correct.clone()
    robust[idx] = ~any_broken
    return robust


@pytest.mark.parametrize("loss", ["gccs", "ce"])
def test_strong_protocol_cascade_equals_every_attack_on_every_example(loss, digits100, request):
    model = request.getfixturevalue(f"digits_{loss}_model").eval()
    x, y = digits100
    cascade = protocols.strong_protocol(model, x, y, EPS, **FAST)
    for eps in EPS:
        robust_cascade = torch.tensor(cascade["eps"][f"{eps:g}"]["robust"])
        robust_all = _every_attack_on_every_example(model, x, y, eps, **FAST)
        clean = int((protocols.predict(model, x) == y).sum())
        assert 0 < int(robust_all.sum()) < clean or eps == max(EPS), (eps, int(robust_all.sum()))  # a real contest
        assert torch.equal(robust_cascade, robust_all), (eps, torch.nonzero(robust_cascade != robust_all).flatten())


@pytest.mark.parametrize("loss", ["gccs", "ce"])
def test_evaluation_suite_on_survivors_agrees_with_everyone_up_to_apgds_random_start(loss, digits100, request):
    """The suite's APGD through ART draws its random start for the whole batch (numpy, by position), so APGD on
    the survivors sees other random starts than APGD on everyone: the worst cases may differ by chance, by a
    digit or two of 100 (measured: 36% vs 37% for CE at eps 0.1; 42% vs 43% for GCCS under another RNG state),
    never systematically. Exact identity needs per-example random streams (the study's own cascade, above, has
    it for its native attacks)."""
    model = request.getfixturevalue(f"digits_{loss}_model").eval()
    x, y = digits100
    common = dict(steps=10, square_queries=100, min_l2=None, seed=0)
    cascade = evaluate_robustness(model, x, y, EPS, apgd_on_all=False, square_on_all=False, **common)
    everyone = evaluate_robustness(model, x, y, EPS, apgd_on_all=True, square_on_all=True, **common)
    for a, b in zip(cascade.worst_case(), everyone.worst_case()):
        assert abs(a - b) <= 0.02 + 1e-9, (cascade.worst_case(), everyone.worst_case())
    assert cascade.clean_accuracy == everyone.clean_accuracy
    assert min(everyone.worst_case()) < cascade.clean_accuracy  # the attacks bite: a real comparison
