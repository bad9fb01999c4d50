"""Must show: a torchvision ResNet-18 trained by the user's own loop, saved as safetensors, evaluated through
the Python API and the CLI, has the same worst case as the same network wrapped natively (a LatentClassifier
whose encoder is that ResNet-18 and whose CE head is the identity), on the same examples."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from gccs_core.data import load_dataset
from gccs_core.evaluate import evaluate_robustness
from gccs_core.models import LatentClassifier, ModelSpec
from gccs_core.weights import build_arch, load_external_model

EPS = [0.0, 0.05, 0.1]
SUITE = dict(steps=10, attacks=["fgsm", "pgd-ce", "pgd-margin", "apgd-ce", "pgd-margin-x2"], min_l2=None, seed=0)
N = 60
TOL = 0.01  # one point


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """torchvision.models.resnet18 (1-channel stem), two epochs of plain CE on digits, saved as a state_dict."""
    train = load_dataset("digits", "train")
    torch.manual_seed(0)
    net = build_arch("torchvision:resnet18", 10, (1, 8, 8))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        net.train()
        perm = torch.randperm(len(train), generator=g)
        for i in range(0, len(train), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(net(train.x[idx]), train.y[idx]).backward()
            opt.step()
    path = tmp_path_factory.mktemp("resnet") / "resnet18_digits.safetensors"
    save_file({k: v.contiguous() for k, v in net.eval().state_dict().items()}, str(path))
    return path


def _native_twin(path) -> LatentClassifier:
    """The library's own LatentClassifier holding the same network: resnet18 encoder with torchvision's stem,
    latent = the 10 logits, CE head = identity, no input normalisation."""
    from safetensors.torch import load_file

    spec = ModelSpec(encoder="resnet18", in_shape=(1, 8, 8), num_classes=10, latent_dim=10, loss="ce")
    model = LatentClassifier(spec)
    model.encoder.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    model.encoder.maxpool = nn.MaxPool2d(3, 2, 1)
    model.encoder.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        model.head.head.weight.copy_(torch.eye(10))
        model.head.head.bias.zero_()
    return model.eval()


@pytest.fixture(scope="module")
def native_report(resnet_file):
    test = load_dataset("digits", "test", limit=N)
    return evaluate_robustness(_native_twin(resnet_file), test.x, test.y, EPS, **SUITE)


def test_python_api_matches_the_native_path(resnet_file, native_report):
    test = load_dataset("digits", "test", limit=N)
    model = load_external_model("torchvision:resnet18", resnet_file, 10, (1, 8, 8), latent_layer="avgpool")
    assert isinstance(model, LatentClassifier) and model.latent_dim == 512
    assert torch.allclose(model(test.x), _native_twin(resnet_file)(test.x), atol=1e-4)
    report = evaluate_robustness(model, test.x, test.y, EPS, **SUITE)
    assert report.clean_accuracy == native_report.clean_accuracy > 0.8
    for ours, native in zip(report.worst_case(), native_report.worst_case()):
        assert abs(ours - native) <= TOL
    assert native_report.worst_case()[-1] < native_report.clean_accuracy - 0.2  # the attacks bite: a real comparison
    print(f"worst case, native {native_report.worst_case()} vs Python API {report.worst_case()}")


def test_cli_matches_the_native_path(resnet_file, native_report, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "gccs_core", "evaluate", "--arch", "torchvision:resnet18", "--weights", str(resnet_file),
           "--latent-layer", "avgpool", "--dataset", "digits", "--n", str(N), "--eps", ",".join(map(str, EPS)),
           "--steps", "10", "--attacks", ",".join(SUITE["attacks"]), "--min-l2", "none", "--seed", "0",
           "--device", "cpu", "--threads", "1", "--quiet", "--json", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    worst = [r["worst_case"] for r in report["results"]]
    print(f"worst case, native {native_report.worst_case()} vs CLI {worst}")
    assert report["clean_accuracy"] == native_report.clean_accuracy
    for ours, native in zip(worst, native_report.worst_case()):
        assert abs(ours - native) <= TOL
    assert report["model"]["arch"] == "torchvision:resnet18" and report["model"]["latent_layer"] == "avgpool"
    assert report["model"]["sha256"]
