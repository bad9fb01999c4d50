"""torchvision datasets end to end, offline: tiny datasets written in torchvision's on-disk layouts.

The files are what torchvision's downloads leave on disk (cifar-10-batches-py/data_batch_1..5, test_batch,
batches.meta; cifar-100-python/train, test, meta; train_32x32.mat, test_32x32.mat; MNIST/raw/*-idx?-ubyte.gz),
with fewer images. gccs_core reads these files itself, so they need no md5 match; nothing touches the network.
"""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gccs_core import load_dataset, load_model
from gccs_core.data import torchvision_files

ENV = dict(os.environ, OMP_NUM_THREADS="1")
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gccs_core", *args], capture_output=True, text=True, env=ENV, timeout=300)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)  # like the original python-2 batches: bytes keys, protocol 2


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        _pickle(folder / name, {b"batch_label": name.encode(), b"labels": [int(v) for v in (np.arange(n) + i) % 10],
                                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                b"filenames": [f"img{j}.png".encode() for j in range(n)]})
    _pickle(folder / "batches.meta", {b"label_names": [s.encode() for s in CIFAR10_NAMES], b"num_vis": 3072})


def test_cifar10_layout_is_read_in_order_with_its_class_names(tmp_path):
    write_cifar10(tmp_path)
    tr, te = load_dataset("cifar10", "train", tmp_path), load_dataset("cifar10", "test", tmp_path)
    assert tr.x.shape == (20, 3, 32, 32) and te.x.shape == (8, 3, 32, 32) and tr.x.dtype == torch.float32
    assert tr.y.tolist() == [(j + i) % 10 for i in range(5) for j in range(4)]  # batches 1..5 in order
    assert tr.class_names == CIFAR10_NAMES
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:
        raw = pickle.load(fh, encoding="latin1")[b"data"]
    # rows are 1024 red, then 1024 green, then 1024 blue values, row-major 32x32
    assert torch.equal(tr.x[0], torch.from_numpy(raw[0].reshape(3, 32, 32).astype(np.float32) / 255.0))


def test_cifar100_and_svhn_layouts(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 6), ("test", 3)):
        _pickle(folder / name, {b"fine_labels": [99 - j for j in range(n)], b"coarse_labels": [0] * n,
                                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)})
    _pickle(folder / "meta", {b"fine_label_names": [f"c{k}".encode() for k in range(100)], b"coarse_label_names": []})
    tr = load_dataset("cifar100", "train", tmp_path)
    assert tr.x.shape == (6, 3, 32, 32) and tr.y.tolist() == [99, 98, 97, 96, 95, 94] and len(tr.class_names) == 100

    images = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)  # SVHN's .mat: (H, W, C, N), digit 0 labelled 10
    savemat(tmp_path / "train_32x32.mat", {"X": images, "y": np.array([[10], [1], [2], [9], [10]], dtype=np.uint8)})
    sv = load_dataset("svhn", "train", tmp_path)
    assert sv.y.tolist() == [0, 1, 2, 9, 0] and sv.x.shape == (5, 3, 32, 32)
    assert torch.equal(sv.x[3, 1], torch.from_numpy(images[:, :, 1, 3].astype(np.float32) / 255.0))
    with pytest.raises(FileNotFoundError, match="missing: test_32x32.mat"):
        load_dataset("svhn", "test", tmp_path)


def test_gzipped_mnist_files_are_read(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 7), ("t10k", 3)):
        images = np.arange(n * 784, dtype=np.uint64).reshape(n, 28, 28) % 256
        header = bytes([0, 0, 8, 3]) + b"".join(int(v).to_bytes(4, "big") for v in (n, 28, 28))
        with gzip.open(raw / f"{prefix}-images-idx3-ubyte.gz", "wb") as fh:
            fh.write(header + images.astype(np.uint8).tobytes())
        with gzip.open(raw / f"{prefix}-labels-idx1-ubyte.gz", "wb") as fh:
            fh.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(range(n)))
    tr = load_dataset("fashion-mnist", "train", tmp_path)
    assert tr.x.shape == (7, 1, 28, 28) and tr.y.tolist() == list(range(7)) and tr.class_names[9] == "Ankle boot"
    assert float(tr.x[0, 0, 0, 1]) == pytest.approx(1 / 255)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    write_cifar10(tmp_path)

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    _pickle(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": Payload(), b"labels": []})
    with pytest.raises(ValueError, match="refusing to load"):
        load_dataset("cifar10", "test", tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_train_one_epoch_on_a_cifar10_folder_through_the_cli(tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    write_cifar10(data, per_batch=2, n_test=4)
    r = cli("train", "--dataset", "cifar10", "--data-root", str(data), "--epochs", "1", "--batch-size", "5",
            "--augment", "--device", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done: gccs on cifar10" in r.stdout and "epoch 1/1" in r.stderr
    model, meta = load_model(out, with_metadata=True)
    assert model.spec.encoder == "resnet18" and meta["class_names"] == CIFAR10_NAMES
    assert meta["n_train"] == 10 and meta["n_test"] == 4 and meta["config"]["augment"] is True
    test = load_dataset("cifar10", "test", data)
    assert meta["metrics"]["test_accuracy"] == pytest.approx(float((model.predict(test.x) == test.y).float().mean()))


def _one_line_error(capsys, *args: str) -> str:
    """``python -m gccs_core ARGS`` in this process (the same ``main``): exit code 2 and one line on stderr."""
    from gccs_core.cli import main

    code = main(list(args))
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, lines
    return lines[0]


def test_a_dataset_not_on_disk_without_download_is_a_one_line_error(tmp_path, capsys):
    line = _one_line_error(capsys, "train", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"))
    assert "dataset 'cifar10' is not on disk" in line and "missing: cifar-10-batches-py/data_batch_1" in line
    assert "--download" in line and list(tmp_path.iterdir()) == []
    assert [p.name for p in torchvision_files("cifar10", "test", tmp_path)] == ["test_batch", "batches.meta"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_where_there_is_none_is_a_one_line_error(tmp_path, capsys):
    line = _one_line_error(capsys, "train", "--dataset", "digits", "--device", "cuda", "--out", str(tmp_path / "o"))
    assert "device='cuda' was requested but no CUDA device is available" in line


def test_fp16_without_cuda_is_a_one_line_error(tmp_path, capsys):
    line = _one_line_error(capsys, "train", "--dataset", "digits", "--device", "cpu", "--amp", "fp16",
                           "--out", str(tmp_path / "o"))
    assert "amp='fp16' needs a CUDA device" in line


def test_bf16_autocast_on_cpu_trains_close_to_float32():
    from gccs_core import TrainConfig, train

    common = dict(dataset="digits", loss="gccs", epochs=2, limit_train=256, batch_size=64, seed=0, device="cpu")
    fp32, bf16 = train(TrainConfig(**common)), train(TrainConfig(amp="bf16", **common))
    assert bf16.history[0]["train_loss"] != fp32.history[0]["train_loss"]  # the encoder really ran in bfloat16
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in bf16.model.parameters())
    assert bf16.metrics["test_accuracy"] > 0.8 and abs(bf16.metrics["test_accuracy"] - fp32.metrics["test_accuracy"]) < 0.05
