import gzip
import struct

import numpy as np
import pytest
import torch

from gccs_core.data import DATASETS, load_dataset


@pytest.mark.parametrize("name,n_train,n_test,shape", [("digits", 1437, 360, (1, 8, 8)), ("mnist5k", 4000, 1000, (1, 28, 28))])
def test_offline_datasets_have_fixed_stratified_splits(name, n_train, n_test, shape):
    tr, te = load_dataset(name, "train"), load_dataset(name, "test")
    assert (len(tr), len(te)) == (n_train, n_test)
    assert tuple(tr.x.shape[1:]) == shape and tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64
    assert float(tr.x.min()) >= 0.0 and float(tr.x.max()) <= 1.0 and float(tr.x.max()) > 0.9
    assert tr.class_names == [str(i) for i in range(10)]
    # stratified: every class's share in test is within 1 point of its share in train
    p_tr = torch.bincount(tr.y, minlength=10) / len(tr)
    p_te = torch.bincount(te.y, minlength=10) / len(te)
    assert float((p_tr - p_te).abs().max()) < 0.01
    # fixed: loading again gives the same split
    assert torch.equal(load_dataset(name, "test").y, te.y)


def _write_idx(path, array: np.ndarray, magic: int):
    with gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic))
        for dim in array.shape:
            fh.write(struct.pack(">I", dim))
        fh.write(array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_loader_reads_files_on_disk(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 2049)
    tr = load_dataset(name, "train", root=tmp_path)
    te = load_dataset(name, "test", root=tmp_path)
    assert tr.x.shape == (12, 1, 28, 28) and te.x.shape == (5, 1, 28, 28)
    assert tr.y.tolist() == [i % 10 for i in range(12)]
    assert float(tr.x.max()) <= 1.0
    assert len(tr.class_names) == 10


@pytest.mark.parametrize("name", [k for k, v in DATASETS.items() if not v.offline])
def test_missing_torchvision_files_say_how_to_download(tmp_path, name):
    with pytest.raises(FileNotFoundError, match="--download|download=True"):
        load_dataset(name, "train", root=tmp_path)
    assert list(tmp_path.rglob("*")) == []  # nothing was fetched or created


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="dataset='imagenet' is unknown; allowed: digits, mnist5k"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split='val' is unknown; allowed: train, test"):
        load_dataset("digits", "val")
    with pytest.raises(ValueError, match="limit=0"):
        load_dataset("digits", limit=0)
