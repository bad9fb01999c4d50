"""The shipped pretrained models: present, loadable, as accurate as recorded, and (GCCS) geometrically right."""

import json
from pathlib import Path

import pytest
import torch

from gccs_core import load_dataset, load_model
from gccs_core.models import embed_batched

PRETRAINED = Path(__file__).resolve().parent.parent / "pretrained"
MANIFEST = {e["name"]: e for e in json.loads((PRETRAINED / "manifest.json").read_text())}
REQUIRED = {  # minimum test accuracy promised in the README / issue
    "digits-gccs": 0.97, "digits-ce": 0.97, "digits-mmc": 0.97, "digits-center": 0.97,
    "mnist5k-gccs": 0.975, "mnist5k-ce": 0.975, "mnist5k-mmc": 0.975, "mnist5k-center": 0.97,
}


@pytest.fixture(scope="module")
def test_sets():
    return {name: load_dataset(name, "test") for name in ("digits", "mnist5k")}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_pretrained_accuracy_is_reproduced_and_meets_the_target(name, test_sets):
    model, meta = load_model(PRETRAINED / f"{name}.safetensors", with_metadata=True)
    data = test_sets[meta["dataset"]]
    _, scores = embed_batched(model, data.x)
    acc = float((scores.argmax(1) == data.y).float().mean())
    assert acc == pytest.approx(meta["metrics"]["test_accuracy"], abs=1e-6)  # what the file says is true
    assert acc == pytest.approx(MANIFEST[name]["test_accuracy"], abs=1e-6)  # what the README table says is true
    assert acc >= REQUIRED[name]
    assert meta["spec"]["loss"] == name.split("-")[1]


def test_pretrained_folder_stays_small():
    total = sum(p.stat().st_size for p in PRETRAINED.rglob("*") if p.is_file())
    assert total < 25 * 1024 * 1024


def test_gccs_latents_follow_their_class_gaussians_on_real_test_data(test_sets):
    model = load_model(PRETRAINED / "mnist5k-gccs.safetensors")
    data = test_sets["mnist5k"]
    z, scores = embed_batched(model, data.x)
    mu, sigma = model.centers, model.sigma
    spreads = []
    for k in range(10):
        zk = z[data.y == k]
        assert float((zk.mean(0) - mu[k]).norm()) < sigma, f"class {k} mean is more than sigma from its vertex"
        spreads.append(float(zk.var(0).mean().sqrt()))  # per-dimension standard deviation, averaged
    assert 0.5 * sigma <= sum(spreads) / len(spreads) <= 2 * sigma, spreads
    assert torch.equal(torch.cdist(z, mu).argmin(1), scores.argmax(1))  # nearest vertex == argmax of scores


def test_readme_shows_the_measured_accuracies():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_pretrained", PRETRAINED.parent / "scripts" / "make_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (PRETRAINED.parent / "README.md").read_text()
    assert module.readme_table(list(MANIFEST.values())) in readme
