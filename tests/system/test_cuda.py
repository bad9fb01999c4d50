"""The CUDA path: training (with autocast), attacks, ART, evaluation and checkpoints on a GPU.

Skipped where there is no CUDA device (CI has none); run by hand on a GPU machine with
``pytest tests/test_cuda.py``. Each test compares the GPU result with the CPU one where they should agree.
``GCCS_TEST_DEVICE=cpu`` runs the same checks on the CPU (to check the tests themselves without a GPU).
"""

from __future__ import annotations

import os

import pytest
import torch

from gccs_core import TrainConfig, load_dataset, load_model, save_model, train
from gccs_core.attacks import run_attack
from gccs_core.evaluate import evaluate_robustness
from gccs_core.losses import build_loss
from gccs_core.models import attack_copy

DEVICE = os.environ.get("GCCS_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def digits_cuda_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda-run")
    cfg = TrainConfig(dataset="digits", loss="gccs", epochs=8, device=DEVICE, amp="bf16", seed=0)
    res = train(cfg, out_dir=out)
    return res, out


def test_training_on_cuda_with_bf16_reaches_accuracy(digits_cuda_model):
    res, _ = digits_cuda_model
    assert next(res.model.parameters()).device.type == DEVICE
    assert res.history[-1]["test_accuracy"] >= 0.93


def test_cuda_checkpoint_loads_on_cpu_with_the_same_predictions(digits_cuda_model, tmp_path):
    res, _ = digits_cuda_model
    path = save_model(res.model, tmp_path / "m.safetensors", metadata={"dataset": "digits"})
    cpu_model = load_model(path)
    ds = load_dataset("digits", "test")
    gpu_pred = res.model.predict(ds.x.to(DEVICE)).cpu()
    cpu_pred = cpu_model.predict(ds.x)
    assert (gpu_pred == cpu_pred).float().mean() >= 0.995


def test_gccs_loss_on_cuda_matches_cpu():
    torch.manual_seed(0)
    z, y = torch.randn(256, 32), torch.randint(0, 10, (256,))
    cpu = build_loss("gccs", 10, 32)(z, y)
    gpu = build_loss("gccs", 10, 32).to(DEVICE)(z.to(DEVICE), y.to(DEVICE))
    assert torch.allclose(cpu, gpu.cpu(), rtol=1e-4, atol=1e-4)


def test_native_attack_on_cuda_records_a_trajectory_and_agrees_with_cpu(digits_cuda_model):
    res, _ = digits_cuda_model
    model = res.model.eval()
    ds = load_dataset("digits", "test", limit=200)
    gpu = run_attack(model, ds.x, ds.y, "pgd", eps=0.1, steps=10, record=True, seed=0)
    assert gpu.trajectory is not None and gpu.trajectory.z.device.type == "cpu"
    assert gpu.trajectory.x.shape[0] == 11
    cpu = run_attack(attack_copy(model).cpu(), ds.x, ds.y, "pgd", eps=0.1, steps=10, seed=0)
    gpu_acc, cpu_acc = float((~gpu.success).float().mean()), float((~cpu.success).float().mean())
    assert abs(gpu_acc - cpu_acc) <= 0.03, (gpu_acc, cpu_acc)
    assert gpu.success.any(), "PGD at eps 0.1 must fool some digits"


def test_art_attacks_and_evaluation_run_on_cuda(digits_cuda_model):
    res, _ = digits_cuda_model
    model = res.model.eval()
    ds = load_dataset("digits", "test", limit=100)
    apgd = run_attack(model, ds.x, ds.y, "apgd-ce", eps=0.2, steps=10, seed=0)
    assert apgd.success.float().mean() > 0.3
    rep = evaluate_robustness(model, ds.x, ds.y, [0.05, 0.2], steps=10, min_l2_n=20, square_queries=50)
    wc = rep.worst_case()
    assert wc[0] >= wc[1] and 0.0 <= wc[1] < rep.clean_accuracy
    assert rep.median_min_l2 is not None and rep.median_min_l2 > 0
