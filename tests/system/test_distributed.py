"""Data-parallel training with torchrun on CPU (gloo): two processes must train exactly like one.

Each test launches ``python -m torch.distributed.run --standalone --nproc_per_node 2 -m gccs_core train ...``,
the command a user runs, and compares with ``train()`` in this process on the same global batches. The data
(87 examples, global batch 32) leave a last batch of 23 that splits 12/11, so uneven shares are covered.
SGD keeps the comparison linear in the gradients (Adam's first steps are sign-like and would magnify
float noise in gradients that are zero in theory, e.g. of a bias followed by batch norm).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from gccs_core import TrainConfig, load_model, train
from gccs_core.checkpoint import MODEL_FILE
from gccs_core.distributed import DistContext, check_batch_size, shard
from gccs_core.train import Callback

ENV = dict(os.environ, OMP_NUM_THREADS="1")
COMMON = dict(dataset="digits", limit_train=87, batch_size=32, optimizer="sgd", lr=0.05, epochs=2, seed=0, device="cpu")


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "gccs_core", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)


def cli_args(loss: str, out, **extra: str) -> list[str]:
    args = ["--dataset", "digits", "--loss", loss, "--limit-train", "87", "--batch-size", "32", "--optimizer", "sgd",
            "--lr", "0.05", "--epochs", "2", "--seed", "0", "--device", "cpu", "--out", str(out), "--quiet"]
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", v]
    return args


def assert_same_training(one, two_dir) -> None:
    two, meta = load_model(two_dir, with_metadata=True)
    for a, b in zip(one.history, meta["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5, abs=1e-6), (a, b)
        assert b["train_accuracy"] == a["train_accuracy"] and b["test_accuracy"] == a["test_accuracy"], (a, b)
    assert len(meta["history"]) == len(one.history) == COMMON["epochs"]
    ref = one.model.state_dict()
    for k, v in two.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("loss", ["gccs", "ce"])
def test_two_gloo_processes_train_like_one_process(loss, tmp_path):
    one = train(TrainConfig(loss=loss, **COMMON))
    r = torchrun(*cli_args(loss, tmp_path / "two"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("done:") == 1, r.stdout  # only rank 0 reports
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.safetensors", "metadata.json", MODEL_FILE]
    assert_same_training(one, tmp_path / "two")


def test_a_run_resumed_by_two_processes_ends_like_one_uninterrupted_process(tmp_path):
    class StopAfterOne(Callback):
        def on_epoch(self, info, model):
            return True

    cfg = TrainConfig(loss="gccs", **COMMON)
    full = train(cfg)
    part = train(cfg, [StopAfterOne()], out_dir=tmp_path / "run")
    assert part.stopped_early and len(part.history) == 1
    r = torchrun("--out", str(tmp_path / "run"), "--resume", "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_training(full, tmp_path / "run")


def test_a_batch_that_does_not_divide_across_processes_is_a_clear_error(tmp_path):
    r = torchrun(*cli_args("gccs", tmp_path / "bad", batch_size="33"))
    assert r.returncode != 0
    assert "batch_size=33 does not divide across 2 processes" in r.stderr and "multiple of 2" in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="batch_size=10 does not divide across 4 processes.*multiple of 4 \\(e.g. 8 or 12\\)"):
        check_batch_size(10, DistContext(torch.device("cpu"), 0, 4))


def test_shards_of_a_global_batch_are_contiguous_and_cover_it():
    idx = torch.arange(23)
    parts = [shard(idx, DistContext(torch.device("cpu"), r, 2)) for r in range(2)]
    assert [len(p) for p in parts] == [12, 11] and torch.equal(torch.cat(parts), idx)
    assert shard(idx, DistContext(torch.device("cpu"))) is idx


def test_global_batchnorm_swaps_in_and_out_sharing_parameters_and_statistics():
    from torch import nn

    from gccs_core.distributed import GlobalBatchNorm, global_batchnorm

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5))
    ref = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    x = torch.randn(8, 3, 8, 8)
    expected = net(x).detach()  # plain batch norm, training mode
    stats = [m.running_mean.clone() for m in ref]
    with torch.no_grad():
        for m, s in zip(ref, stats):
            m.running_mean.copy_(s * 0)  # start again from zero running means
    undo = global_batchnorm(net, torch.device("cpu"))
    swapped = [m for m in net.modules() if isinstance(m, GlobalBatchNorm)]
    assert len(swapped) == 2 and all(a.weight is b.weight and a.running_mean is b.running_mean for a, b in zip(swapped, ref))
    torch.testing.assert_close(net(x), expected)  # outside a process group: plain batch norm
    undo()
    assert [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] == ref
    for m, s in zip(ref, stats):
        torch.testing.assert_close(m.running_mean, s)  # the update made through the swapped layer is kept
