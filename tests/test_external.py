"""LatentClassifier.from_module: any logits module is attacked, evaluated and projected like a native model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from gccs_core.attacks import run_attack
from gccs_core.data import load_dataset
from gccs_core.evaluate import evaluate_robustness
from gccs_core.external import ExternalClassifier, ExternalModelError
from gccs_core.models import LatentClassifier, attack_copy


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _fit(net: nn.Module, data, epochs: int = 15, lr: float = 3e-3, scale: float = 1.0) -> nn.Module:
    """A user's own training loop (plain cross-entropy, Adam), seeded."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(data), generator=g)
        for i in range(0, len(data), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(net(data.x[idx] * scale), data.y[idx]).backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def mlp(digits):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return _fit(net, digits[0])


class SmallCNN(nn.Module):
    """A head that is more than one layer after the chosen latent (``features``)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.block(self.features(x)), 1))


class Residual(nn.Module):
    """``features`` is bypassed by a skip connection, so it does not cut the network."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.features = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.fc(torch.flatten(h + self.features(h), 1))


class DataDependent(nn.Module):
    """Python control flow on a tensor value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        if float(h.detach().sum()) > -1.0:  # always true for ReLU output
            h = h * 1.0
        return self.head(h)


def _resnet18(channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    net.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    return net.eval()


@pytest.mark.parametrize("layer,dim", [(None, 512), ("avgpool", 512), ("layer3", 256 * 2 * 2), ("layer4.1", 512), ("fc", 10)])
def test_resnet18_cut_at_any_stage_reproduces_its_logits(layer, dim):
    net = _resnet18()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    model = LatentClassifier.from_module(net, latent_layer=layer, input_shape=(1, 28, 28))
    assert isinstance(model, LatentClassifier) and model.num_classes == 10 and model.latent_dim == dim
    z = model.embed(x)
    assert z.shape == (4, dim)
    with torch.no_grad():
        ref = net(x)
    assert torch.allclose(model(x), ref, atol=1e-5)
    assert torch.allclose(model.scores_from_latent(z), ref, atol=1e-5)  # the rest of the network runs from z
    assert torch.allclose(attack_copy(model)(x), ref, atol=1e-4)
    # gradients reach the input through the cut, as the attacks need
    xg = x.clone().requires_grad_(True)
    model.scores_from_latent(model.embed(xg))[:, 3].sum().backward()
    assert xg.grad is not None and float(xg.grad.abs().sum()) > 0


def test_latent_layer_inside_the_head_runs_the_rest_of_the_network():
    torch.manual_seed(0)
    net = SmallCNN().eval()
    model = LatentClassifier.from_module(net, latent_layer="features", input_shape=(1, 8, 8))
    assert model.spec.latent_shape == (16, 8, 8) and model.latent_dim == 1024
    x = torch.rand(3, 1, 8, 8)
    z = model.embed(x).detach().requires_grad_(True)
    scores = model.scores_from_latent(z)
    assert torch.allclose(scores, net(x), atol=1e-5)
    scores[:, 0].sum().backward()  # a latent-space direction changes the logits through block and fc
    assert float(z.grad.abs().sum()) > 0
    with pytest.raises(ExternalModelError, match="'linear' needs the latent to be the input of the final nn.Linear"):
        model.set_linear_prototypes()


def test_a_layer_bypassed_by_a_skip_connection_is_refused_clearly():
    with pytest.raises(ExternalModelError, match=r"latent_layer='features' does not cut the network in two.*'stem'"):
        LatentClassifier.from_module(Residual(), latent_layer="features", input_shape=(1, 8, 8))
    model = LatentClassifier.from_module(Residual(), input_shape=(1, 8, 8))  # the head's input is a cut
    assert model.spec.latent_layer == "fc:input"


def test_untraceable_module_uses_a_hook_on_the_head_and_copies_stay_independent():
    torch.manual_seed(0)
    net = DataDependent().eval()
    model = LatentClassifier.from_module(net, input_shape=(1, 8, 8))
    assert model.spec.mode == "hook" and model.spec.latent_layer == "head:input" and model.latent_dim == 16
    x = torch.rand(5, 1, 8, 8)
    assert torch.allclose(model.scores_from_latent(model.embed(x)), net(x), atol=1e-6)
    twin = copy.deepcopy(model)
    assert torch.allclose(twin.embed(x), model.embed(x))
    with pytest.raises(ExternalModelError, match="torch.fx cannot trace DataDependent.*latent_layer=None"):
        LatentClassifier.from_module(net, latent_layer="body", input_shape=(1, 8, 8))


def test_value_range_and_normalisation_are_applied_before_the_module(digits):
    torch.manual_seed(0)
    net = _fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), digits[0], epochs=3, scale=255.0)
    model = LatentClassifier.from_module(net, input_shape=(1, 8, 8), value_range=(0, 255))
    x = digits[1].x[:20]
    assert torch.allclose(model(x), net(x * 255.0), atol=1e-3)
    norm = LatentClassifier.from_module(net, input_shape=(1, 8, 8), value_range=(0, 255), mean=10.0, std=2.0)
    assert torch.allclose(norm(x), net((x * 255.0 - 10.0) / 2.0), atol=1e-3)


@pytest.mark.parametrize("kwargs,match", [
    ({"input_shape": None}, "input_shape=None is invalid"),
    ({"input_shape": (8, 8)}, r"input_shape=\(8, 8\) is invalid"),
    ({"input_shape": (3, 8, 8)}, "fails on inputs of shape"),
    ({"num_classes": 7}, "num_classes=7 but Sequential returns 10 logits"),
    ({"num_classes": 1}, "num_classes=1 is invalid"),
    ({"value_range": (1, 0)}, "value_range=.* low < high"),
    ({"value_range": (0, float("nan"))}, "value_range=.*finite"),
    ({"std": 0.0}, "std=0.0 is invalid"),
    ({"mean": (0.1, 0.2)}, "one per channel"),
    ({"latent_layer": "fc9"}, "latent_layer='fc9' is not a submodule of Sequential; e.g."),
    ({"latent_layer": 3}, "latent_layer=3 is not a submodule"),
    ({"prototypes": "means"}, "prototypes='means' is unknown"),
])
def test_bad_arguments_get_one_clear_line(mlp, kwargs, match):
    args = {"input_shape": (1, 8, 8), **kwargs}
    with pytest.raises(ExternalModelError, match=match) as info:
        LatentClassifier.from_module(mlp, **args)
    assert "\n" not in str(info.value)


def test_not_a_module_and_not_logits_are_refused():
    with pytest.raises(ExternalModelError, match="is not a torch.nn.Module"):
        LatentClassifier.from_module(lambda x: x, input_shape=(1, 8, 8))
    with pytest.raises(ExternalModelError, match="calls no nn.Linear"):
        LatentClassifier.from_module(nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten()), input_shape=(1, 8, 8))
    with pytest.raises(ExternalModelError, match=r"returns \(2, 4, 4\); expected logits"):
        LatentClassifier.from_module(nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Unflatten(1, (4, 4))),
                                     input_shape=(1, 8, 8))


def test_sequential_is_attacked_evaluated_and_projected_like_a_native_model(mlp, digits):
    from gccs_core.views import latent_view

    train, test = digits
    model = LatentClassifier.from_module(mlp, input_shape=(1, 8, 8))
    assert isinstance(model, ExternalClassifier) and model.centers is None and not model.is_prototype
    x, y = test.x[:60], test.y[:60]
    acc = float((model.predict(x) == y).float().mean())
    assert acc == float((mlp(x).argmax(1) == y).float().mean()) and acc > 0.85
    # native PGD breaks it at a large eps, and the recorded trajectory lives in the latent space
    res = run_attack(model, x, y, attack="pgd", eps=0.3, steps=10, objective="margin", record=True, seed=0)
    assert float(res.success.float().mean()) > 0.9
    assert res.trajectory is not None and res.trajectory.z.shape[-1] == model.latent_dim
    # class means as prototypes enable the latent attack in the suite
    protos = model.fit_prototypes(train.x, train.y)
    assert protos.shape == (10, 32) and model.sigma and model.sigma > 0
    report = evaluate_robustness(model, x, y, [0.0, 0.1], steps=5, square_queries=30, min_l2_n=10, seed=0)
    assert report.clean_accuracy == pytest.approx(acc)
    assert report.worst_case()[0] == pytest.approx(acc) and report.worst_case()[1] < acc
    assert "pgd-latent" in report.attacks and "pgd-latent" in report.results[1]
    view = latent_view(model, test, methods=("pca",), n_samples=50)
    assert view["z"].shape == (50, 32) and str(view["prototype_kind"]) == "learned centres"
    assert np.allclose(view["prototypes"], protos.numpy(), atol=1e-6)


def test_art_attack_accepts_the_wrapped_model(mlp, digits):
    model = LatentClassifier.from_module(mlp, input_shape=(1, 8, 8))
    x, y = digits[1].x[:20], digits[1].y[:20]
    res = run_attack(model, x, y, attack="apgd-ce", eps=0.3, steps=10, seed=0)
    assert float(res.success.float().mean()) > 0.8
    assert float((res.x_adv - x).abs().max()) <= 0.3 + 1e-5


def test_linear_prototypes_are_the_head_rows(mlp):
    model = LatentClassifier.from_module(mlp, input_shape=(1, 8, 8), prototypes="linear")
    assert torch.equal(model.centers, mlp[-1].weight)
    with pytest.raises(ExternalModelError, match=r"class\(es\) \[9\] have no example"):
        model.fit_prototypes(torch.rand(9, 1, 8, 8), torch.arange(9))


def test_decision_plane_reads_the_wrapped_head_exactly(mlp):
    from gccs_core.views import latent_head

    model = LatentClassifier.from_module(mlp, input_shape=(1, 8, 8))
    w, b = latent_head(model)
    head = mlp[-1]
    ref_w = (head.weight - head.weight[:1]).detach().double().numpy()
    ref_b = (head.bias - head.bias[:1]).detach().double().numpy()
    assert np.allclose(w, ref_w, atol=1e-4) and np.allclose(b, ref_b, atol=1e-4)
    deep = LatentClassifier.from_module(SmallCNN().eval(), latent_layer="features", input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="not affine in the latent"):
        latent_head(deep)  # the rest of the network is not linear: no exact plane, said clearly
