"""Your own dataset as one NPZ file, read without unpickling anything.

Format (``np.savez`` / ``np.savez_compressed``):

* ``x``: images, (N, C, H, W) or (N, H, W) (one channel), C from 1 to 4, H and W from 2 to 1024;
  ``uint8`` (0..255, divided by 255) or float (16/32/64 bit) already in [0, 1]; no NaN or inf;
* ``y``: (N,) integer labels from 0 to K-1;
* ``class_names`` (optional): (K,) strings; K is its length, else ``max(y) + 1``; 2 <= K <= 1000;
* ``split`` (optional): (N,) strings ``train`` / ``test`` (or booleans, True = test).

Split rule: the file's ``split`` array when present; otherwise the library's fixed rule for its
own datasets (``gccs_core.data`` passes it in): a stratified 80/20 split by
``sklearn.model_selection.train_test_split(test_size=0.2, random_state=0, stratify=y)``, so the
same file always gives the same split (every class then needs at least 2 examples), each split in
train_test_split's shuffled order, so the first n test examples (``limit``, ``--n``) mix the classes.
With a ``split`` array the file's order is kept. Any other array in the file is an error (nothing
is silently ignored).

Safety: ``np.load(allow_pickle=False)``; before any array is read, every member's ``.npy`` header is
parsed with a size limit and its announced size compared with the bytes actually stored, so a
hostile header cannot make us allocate more than the file holds. Every problem is an ``NPZError``
(a ``ValueError``) with one line naming the file, the array and what is allowed.
"""

from __future__ import annotations

import functools
import os
import zipfile
from pathlib import Path

import numpy as np

SPLITS = ("train", "test")
MAX_NPZ_BYTES = 1024 * 1024 * 1024
MAX_NPY_HEADER = 10_000  # numpy's own default limit for np.load
MAX_CLASSES = 1000
MAX_SIDE = 1024
MAX_CHANNELS = 4
KEYS_ALLOWED = ("x", "y", "class_names", "split")


class NPZError(ValueError):
    """An NPZ dataset file is malformed or hostile."""


def _member_headers(path: Path, src: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array, from the headers only; refuses what would read more than is stored."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise NPZError(f"{src}: not an NPZ file (a zip archive of .npy arrays made by np.savez): {err}.") from err
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with zf:
        infos = zf.infolist()
        if sum(i.file_size for i in infos) > MAX_NPZ_BYTES:
            raise NPZError(f"{src}: the archive unpacks to more than {MAX_NPZ_BYTES} bytes; refusing to read it.")
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise NPZError(f"{src}: member {info.filename!r} is not a .npy array; expected arrays {', '.join(KEYS_ALLOWED)}.")
            name = info.filename[: -len(".npy")]
            try:
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=MAX_NPY_HEADER)
                    else:
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=MAX_NPY_HEADER)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError, TypeError) as err:
                raise NPZError(f"{src}: array {name!r} has a malformed or oversized .npy header "
                               f"(limit {MAX_NPY_HEADER} bytes): {str(err).splitlines()[0][:160]}.") from err
            if dtype.hasobject:
                raise NPZError(f"{src}: array {name!r} is a pickled object array (dtype {dtype}); refused "
                               "(allow_pickle=False). Store numbers and fixed-width strings only.")
            if not all(isinstance(v, int) and v >= 0 for v in shape):
                raise NPZError(f"{src}: array {name!r} announces an invalid shape {shape}.")
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > info.file_size:
                raise NPZError(f"{src}: array {name!r} announces shape {shape} ({nbytes} bytes) but only "
                               f"{info.file_size} bytes are stored; the file is truncated or forged.")
            out[name] = (tuple(shape), dtype)
    return out


def _read_arrays(path: Path, src: str) -> dict[str, np.ndarray]:
    headers = _member_headers(path, src)
    extra = [k for k in headers if k not in KEYS_ALLOWED]
    if extra:
        raise NPZError(f"{src}: unexpected array(s) {', '.join(map(repr, extra))}; allowed: {', '.join(KEYS_ALLOWED)}.")
    for key in ("x", "y"):
        if key not in headers:
            raise NPZError(f"{src}: no array {key!r}; an NPZ dataset must hold 'x' (images) and 'y' (labels).")
    try:
        with np.load(path, allow_pickle=False, max_header_size=MAX_NPY_HEADER) as npz:
            return {k: npz[k] for k in headers}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:  # truncated data, bad CRC ...
        raise NPZError(f"{src}: cannot read its arrays ({type(err).__name__}: {str(err).splitlines()[0][:160]}).") from err


def _images(x: np.ndarray, src: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise NPZError(f"{src}: x has shape {x.shape}; expected (N, C, H, W) or (N, H, W).")
    n, c, h, w = x.shape
    if n == 0:
        raise NPZError(f"{src}: x holds no images (N=0); give at least 2 per class.")
    if not 1 <= c <= MAX_CHANNELS:
        hint = " It looks channels-last: use x.transpose(0, 3, 1, 2)." if 1 <= w <= MAX_CHANNELS else ""
        raise NPZError(f"{src}: x has {c} channels (shape {x.shape}); expected (N, C, H, W) with C from 1 to "
                       f"{MAX_CHANNELS}.{hint}")
    if not (2 <= h <= MAX_SIDE and 2 <= w <= MAX_SIDE):
        raise NPZError(f"{src}: x images are {h}x{w}; height and width must be from 2 to {MAX_SIDE}.")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if x.dtype.kind != "f":
        raise NPZError(f"{src}: x has dtype {x.dtype}; allowed: uint8 (0..255) or float16/32/64 in [0, 1].")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise NPZError(f"{src}: x contains NaN or inf values; every pixel must be a finite number in [0, 1].")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise NPZError(f"{src}: x values lie in [{lo:g}, {hi:g}]; float images must be in [0, 1] "
                       "(divide 0..255 data by 255, or store it as uint8).")
    return x


def _labels(y: np.ndarray, n: int, src: str) -> np.ndarray:
    if y.ndim != 1 or y.shape[0] != n:
        raise NPZError(f"{src}: y has shape {y.shape}; expected ({n},), one label per image in x.")
    if y.dtype.kind not in "iu":
        raise NPZError(f"{src}: y has dtype {y.dtype}; labels must be integers (int8..int64, uint8..uint64).")
    if n and int(y.min()) < 0:
        raise NPZError(f"{src}: y contains the label {int(y.min())}; labels must be integers from 0 to K-1.")
    if n and int(y.max()) >= MAX_CLASSES:
        raise NPZError(f"{src}: y contains the label {int(y.max())}; at most {MAX_CLASSES} classes are allowed.")
    return y.astype(np.int64)


def _class_names(arr: np.ndarray | None, y: np.ndarray, src: str) -> list[str]:
    if arr is None:
        k = int(y.max()) + 1
        if k < 2:
            raise NPZError(f"{src}: y holds only class 0; a classifier needs at least 2 classes.")
        return [str(i) for i in range(k)]
    if arr.ndim != 1 or arr.dtype.kind not in "US":
        raise NPZError(f"{src}: class_names has shape {arr.shape} and dtype {arr.dtype}; expected (K,) strings.")
    try:
        names = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.tolist()]
    except UnicodeDecodeError as err:
        raise NPZError(f"{src}: class_names is not valid UTF-8 text.") from err
    if not 2 <= len(names) <= MAX_CLASSES:
        raise NPZError(f"{src}: class_names has {len(names)} entries; give from 2 to {MAX_CLASSES} classes.")
    if int(y.max()) >= len(names):
        raise NPZError(f"{src}: y contains the label {int(y.max())} but class_names has only {len(names)} classes "
                       f"(labels must be from 0 to {len(names) - 1}).")
    return names


def _split_indices(arr: np.ndarray | None, y: np.ndarray, src: str, test_fraction: float, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): in file order for a ``split`` array, else in train_test_split's order."""
    n = len(y)
    if arr is not None:
        if arr.ndim != 1 or arr.shape[0] != n:
            raise NPZError(f"{src}: split has shape {arr.shape}; expected ({n},), one entry per image.")
        if arr.dtype == np.bool_:
            test = arr.copy()
        elif arr.dtype.kind in "US":
            values = np.char.decode(arr, "utf-8", "replace") if arr.dtype.kind == "S" else arr
            bad = sorted(set(values.tolist()) - set(SPLITS))
            if bad:
                raise NPZError(f"{src}: split contains {bad[:3]!r}; allowed values: train, test.")
            test = values == "test"
        else:
            raise NPZError(f"{src}: split has dtype {arr.dtype}; expected strings 'train'/'test' or booleans (True = test).")
        if test.all() or not test.any():
            raise NPZError(f"{src}: split puts every example in {'test' if test.all() else 'train'}; both splits need examples.")
        return np.flatnonzero(~test), np.flatnonzero(test)
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    few = [k for k, c in enumerate(counts) if c == 1]
    if few:
        raise NPZError(f"{src}: class(es) {few[:5]} have 1 example; the stratified 80/20 split needs at least 2 "
                       "per class (or give a 'split' array).")
    if n < 5:
        raise NPZError(f"{src}: {n} examples are too few for an 80/20 split; give at least 5 (or a 'split' array).")
    try:
        train_idx, test_idx = train_test_split(np.arange(n), test_size=test_fraction, random_state=seed, stratify=y)
    except ValueError as err:  # a split smaller than the number of classes
        raise NPZError(f"{src}: cannot split {n} examples of {int((counts > 0).sum())} classes 80/20 stratified "
                       f"({str(err)[:120]}); add examples or give a 'split' array.") from err
    return train_idx, test_idx


@functools.lru_cache(maxsize=4)
def _parsed(path: str, mtime_ns: int, size: int, test_fraction: float, seed: int
            ) -> tuple[np.ndarray, np.ndarray, list[str], tuple[np.ndarray, np.ndarray]]:
    src = path
    arrays = _read_arrays(Path(path), src)
    x = _images(arrays["x"], src)
    y = _labels(arrays["y"], x.shape[0], src)
    names = _class_names(arrays.get("class_names"), y, src)
    train_idx, test_idx = _split_indices(arrays.get("split"), y, src, test_fraction, seed)
    for a in (x, y, train_idx, test_idx):
        a.setflags(write=False)  # cached: callers get read-only views
    return x, y, names, (train_idx, test_idx)


def read_npz(name: str | os.PathLike, test_fraction: float, seed: int
             ) -> tuple[np.ndarray, np.ndarray, list[str], tuple[np.ndarray, np.ndarray]]:
    """(x float32 (N, C, H, W) in [0, 1], y int64 (N,), class names, (train, test) indices) of an NPZ dataset.

    Cached by path, modification time and size; the arrays returned are read-only.
    """
    path = os.path.abspath(os.fspath(name))
    if not os.path.isfile(path):
        raise NPZError(f"dataset={os.fspath(name)!r} is not an existing file; expected a path to a .npz file "
                       "with arrays x and y.")
    st = os.stat(path)
    if st.st_size > MAX_NPZ_BYTES:
        raise NPZError(f"{path}: {st.st_size} bytes is over the {MAX_NPZ_BYTES}-byte limit for an NPZ dataset.")
    return _parsed(path, st.st_mtime_ns, st.st_size, float(test_fraction), int(seed))


def default_encoder(in_shape: tuple[int, int, int]) -> str:
    """mlp for images up to 16x16, resnet18 for colour images of 32 px and more, cnn otherwise."""
    c, h, w = in_shape
    if h * w <= 256:
        return "mlp"
    return "resnet18" if c == 3 and min(h, w) >= 32 else "cnn"
