"""Own data as NPZ: a good file trains and evaluates; >= 100 malformed or malicious files each get one clear
NPZError and never unpickle anything (a sentinel a payload would create must not appear)."""

from __future__ import annotations

import io
import os
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from gccs_core.data import dataset_info, load_dataset
from gccs_core.npz import NPZError


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    b = load_digits()
    return (b.images / 16.0 * 255).round().astype(np.uint8), b.target.astype(np.int64)


def _npz(**arrays: object) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_raw(header: str, body: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    h = header.encode("latin1")
    pad = 16 - (10 + len(h) + 1) % 16 if version == (1, 0) else 16 - (12 + len(h) + 1) % 16
    h = h + b" " * (pad % 16) + b"\n"
    length = struct.pack("<H", len(h)) if version == (1, 0) else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes(version) + length + h + body


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=True)
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


class _Payload:
    def __init__(self, func: object, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def hostile_npz(sentinel: Path) -> list[tuple[str, bytes, str]]:
    """(name, bytes, regex the message must match)."""
    import builtins
    import subprocess

    x, y = _digits()
    x, y = x[:100], y[:100]
    xf = x.astype(np.float32) / 255
    names = np.array([str(i) for i in range(10)])
    good = {"x": x, "y": y}
    out: list[tuple[str, bytes, str]] = []

    payloads = [_Payload(os.system, (f"touch {sentinel}",)), _Payload(builtins.exec, (f"open({str(sentinel)!r}, 'w')",)),
                _Payload(builtins.eval, (f"open({str(sentinel)!r}, 'w')",)),
                _Payload(subprocess.call, (["touch", str(sentinel)],)), _Payload(Path.touch, (sentinel,))]
    for i, p in enumerate(payloads):
        for key in ("x", "y", "class_names", "split"):
            arr = np.empty(100 if key in ("x", "y", "split") else 10, dtype=object)
            arr[:] = [p] * len(arr)
            out.append((f"pickle_{i}_{key}.npz", _npz(**{**good, key: arr}), f"'{key}' is a pickled object array"))
    out.append(("object_x_plain.npz", _npz(x=np.array([[1, 2], [3]], dtype=object), y=y), "pickled object array"))

    # x: shapes
    for label, bad in [("1d", x.reshape(-1)), ("2d", x.reshape(100, -1)), ("5d", x[:, None, None]),
                       ("nhwc", np.repeat(x[..., None], 3, axis=3)), ("channels5", np.repeat(x[:, None], 5, axis=1)),
                       ("tiny", x[:, :1, :1]), ("empty", x[:0]), ("too_wide", np.zeros((100, 2, 1025), np.uint8))]:
        out.append((f"x_shape_{label}.npz", _npz(x=bad, y=y), "x has shape|channels|x images are|holds no images|one label per"))
    # x: dtypes and values
    for label, bad, pat in [("int64", x.astype(np.int64), "dtype int64"), ("int8", x.astype(np.int8), "dtype int8"),
                            ("bool", x > 100, "dtype bool"), ("complex", x.astype(np.complex64), "dtype complex64"),
                            ("str", x.astype("U3"), "dtype <U3"), ("float255", x.astype(np.float32), r"lie in \[0, 255\]"),
                            ("negative", xf - 0.5, r"lie in \[-0.5"), ("uint16", x.astype(np.uint16), "dtype uint16"),
                            ("structured", np.zeros((100, 8, 8), dtype=[("a", "f4"), ("b", "f4")]), "dtype"),
                            ("datetime", np.zeros((100, 8, 8), dtype="datetime64[s]"), "dtype datetime64")]:
        out.append((f"x_dtype_{label}.npz", _npz(x=bad, y=y), pat))
    for dtype in (np.float16, np.float32, np.float64):
        for value in (np.nan, np.inf, -np.inf):
            for where in (0, 50 * 64 + 7):
                bad = xf.astype(dtype).copy()
                bad.reshape(-1)[where] = value
                out.append((f"x_nonfinite_{np.dtype(dtype).name}_{value}_{where}.npz", _npz(x=bad, y=y), "NaN or inf"))
    # y
    for label, bad, pat in [("float", y.astype(np.float32), "y has dtype float32"), ("bool", y > 4, "y has dtype bool"),
                            ("str", y.astype("U2"), "y has dtype <U2"), ("2d", y.reshape(50, 2), r"y has shape \(50, 2\)"),
                            ("negative", np.where(y == 3, -1, y), "label -1"),
                            ("huge", np.where(y == 3, 10**6, y), "label 1000000"),
                            ("long", np.concatenate([y, y[:1]]), r"expected \(100,\)"), ("short", y[:-1], r"expected \(100,\)"),
                            ("empty", y[:0], r"expected \(100,\)"), ("scalar", np.array(3), r"y has shape \(\)"),
                            ("uint64_big", np.where(y == 3, 2**63, y).astype(np.uint64), "label")]:
        out.append((f"y_{label}.npz", _npz(x=x, y=bad), pat))
    out.append(("y_beyond_class_names.npz", _npz(x=x, y=y, class_names=names[:5]), "label 9 but class_names has only 5"))
    out.append(("one_class.npz", _npz(x=x, y=np.zeros(100, np.int64)), "only class 0"))
    # class_names
    for label, bad, pat in [("ints", np.arange(10), "class_names has shape"),
                            ("2d", names.reshape(2, 5), "class_names has shape"),
                            ("one", names[:1], "class_names has 1 entries"),
                            ("many", np.array([str(i) for i in range(1001)]), "class_names has 1001 entries"),
                            ("bad_utf8", np.array([b"\xff\xfe"] * 10), "not valid UTF-8")]:
        out.append((f"names_{label}.npz", _npz(x=x, y=y, class_names=bad), pat))
    # split
    test = np.arange(100) % 5 == 0
    for label, bad, pat in [("short", test[:-3], r"split has shape \(97,\)"),
                            ("words", np.where(test, "test", "valid"), "'valid'"),
                            ("ints", test.astype(np.int64), "split has dtype int64"),
                            ("all_train", np.zeros(100, bool), "every example in train"),
                            ("all_test", np.array(["test"] * 100), "every example in test")]:
        out.append((f"split_{label}.npz", _npz(x=x, y=y, split=bad), pat))
    # members
    out += [
        ("no_x.npz", _npz(y=y), "no array 'x'"), ("no_y.npz", _npz(x=x), "no array 'y'"),
        ("extra.npz", _npz(x=x, y=y, weights=np.ones(3)), "unexpected array.*'weights'; allowed: x, y, class_names, split"),
        ("not_npy_member.npz", _zip({"x.npy": _npy(x), "y.npy": _npy(y), "run.py": b"print('hi')"}), "'run.py' is not a .npy"),
        ("few_per_class.npz", _npz(x=x[:11], y=np.array([0] * 10 + [1])), r"class\(es\) \[1\] have 1 example"),
        ("too_few.npz", _npz(x=x[:4], y=np.array([0, 0, 1, 1])), "too few for an 80/20 split"),
    ]
    # .npy headers that lie or are huge
    body = x.tobytes()
    xy = {"x.npy": _npy(x), "y.npy": _npy(y)}
    for key in ("x", "y"):
        for shape in ("(1000000000000,)", "(100, 1000000, 1000, 1000)", "(4611686018427387904, 2)"):
            hdr = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}"
            members = {"x.npy": _npy(x), "y.npy": _npy(y)}
            members[f"{key}.npy"] = _npy_raw(hdr, body[:1000])
            out.append((f"lying_shape_{key}_{len(out)}.npz", _zip(members), "announces shape .* bytes are stored"))
        huge = "{'descr': '|u1', 'fortran_order': False, 'shape': (100,), 'pad': '" + "a" * 20000 + "', }"
        out.append((f"huge_header_{key}.npz", _zip({**xy, f"{key}.npy": _npy_raw(huge, b"\0" * 100, (2, 0))}),
                    "malformed or oversized"))
        out.append((f"header_code_{key}.npz", _zip({**xy, f"{key}.npy": _npy_raw(
            f"__import__('os').system('touch {sentinel}')", b"")}), "malformed or oversized"))
        out.append((f"header_garbage_{key}.npz", _zip({**xy, f"{key}.npy": b"\x93NUMPY\x01\x00\xff\xff"}),
                    "malformed or oversized"))
        out.append((f"not_npy_magic_{key}.npz", _zip({**xy, f"{key}.npy": b"PLAINTEXT" * 10}),
                    "malformed or oversized"))
    # truncated and non-zip files
    full = _npz(**good, class_names=names)
    n = len(full)
    for cut in sorted({0, 1, 3, 4, 10, 30, 60, 100, n // 4, n // 2, n - 200, n - 30, n - 1}):
        out.append((f"trunc_{cut}.npz", full[:cut], "not an NPZ file|cannot read|malformed|truncated"))
    corrupt = bytearray(full)
    corrupt[len(full) // 3] ^= 0xFF
    out.append(("bad_crc.npz", bytes(corrupt), "cannot read|malformed|Bad CRC|truncated"))
    out += [("random.npz", os.urandom(5000), "not an NPZ file"), ("text.npz", b"x,y\n1,2\n" * 50, "not an NPZ file"),
            ("plain_npy.npz", _npy(x), "not an NPZ file"),
            ("pickle_file.npz", __import__("pickle").dumps(payloads[0]), "not an NPZ file")]
    # a zip whose central directory claims a huge member (zip bomb)
    bomb = bytearray(_npz(**good))
    pos = bomb.find(b"PK\x01\x02")
    bomb[pos + 24 : pos + 28] = struct.pack("<I", 0xFFFFFFF0)
    out.append(("bomb.npz", bytes(bomb), "unpacks to more than|cannot read|not an NPZ"))
    return out


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("npz_sentinel") / "pwned"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, sentinel) -> list[tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("hostile_npz")
    files = []
    for name, data, pattern in hostile_npz(sentinel):
        (folder / name).write_bytes(data)
        files.append((folder / name, pattern))
    return files


def test_at_least_100_hostile_npz_files_each_get_one_clear_error(hostile, sentinel):
    assert len(hostile) >= 100
    wrong = []
    for path, pattern in hostile:
        for split in ("train", "test"):
            try:
                load_dataset(str(path), split)
            except NPZError as err:
                msg = str(err)
                if "\n" in msg or path.name not in msg or not re.search(pattern, msg):
                    wrong.append((path.name, msg[:300]))
            except Exception as err:
                wrong.append((path.name, f"CRASH {type(err).__name__}: {err}"[:300]))
            else:
                wrong.append((path.name, "loaded"))
    assert not sentinel.exists(), "a payload ran"
    assert wrong == []


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory) -> Path:
    x, y = _digits()
    path = tmp_path_factory.mktemp("npz") / "digits.npz"
    path.write_bytes(_npz(x=x, y=y, class_names=np.array([f"digit {i}" for i in range(10)])))
    return path


def test_uint8_npz_without_split_gives_the_libraries_stratified_split(digits_npz):
    tr, te = load_dataset(str(digits_npz), "train"), load_dataset(str(digits_npz), "test")
    ref_tr, ref_te = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(tr), len(te)) == (1437, 360)
    assert torch.equal(tr.y, ref_tr.y) and torch.equal(te.y, ref_te.y)  # the same rule as the built-in digits
    assert torch.allclose(te.x, ref_te.x, atol=0.5 / 255 + 1e-6)  # uint8 / 255 vs /16: the rounding only
    assert tr.class_names[3] == "digit 3" and tr.x.dtype == torch.float32 and tuple(tr.x.shape[1:]) == (1, 8, 8)
    info = dataset_info(str(digits_npz))
    assert info.in_shape == (1, 8, 8) and info.num_classes == 10 and info.default_encoder == "mlp"
    assert info.mean[0] == pytest.approx(float(tr.x.mean()), abs=1e-5)


def test_split_array_and_float_nchw_input(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((30, 3, 6, 5)).astype(np.float64)
    y = np.arange(30) % 3
    split = np.where(np.arange(30) < 21, "train", "test")
    path = tmp_path / "own.npz"
    np.savez_compressed(path, x=x, y=y.astype(np.int16), split=split)
    tr, te = load_dataset(str(path), "train"), load_dataset(str(path), "test", limit=4)
    assert len(tr) == 21 and len(te) == 4 and tr.class_names == ["0", "1", "2"]
    assert torch.allclose(tr.x, torch.from_numpy(x[:21]).float())
    np.savez(tmp_path / "bool.npz", x=x, y=y, split=np.arange(30) >= 21)
    assert torch.equal(load_dataset(str(tmp_path / "bool.npz"), "test").y, torch.from_numpy(y[21:]))


def test_missing_npz_and_bad_names_are_clear(tmp_path):
    with pytest.raises(NPZError, match="dataset='.*nope.npz' is not an existing file"):
        load_dataset(str(tmp_path / "nope.npz"))
    with pytest.raises(ValueError, match="allowed: digits, mnist5k.* or a path to a .npz file"):
        load_dataset("imagenet")


def test_npz_dataset_trains_and_evaluates(digits_npz, tmp_path):
    from gccs_core.checkpoint import load_model
    from gccs_core.evaluate import evaluate_checkpoint
    from gccs_core.train import TrainConfig, train

    result = train(TrainConfig(dataset=str(digits_npz), loss="gccs", epochs=3, seed=0, device="cpu"), out_dir=tmp_path / "run")
    assert result.metrics["test_accuracy"] > 0.85
    model, meta = load_model(tmp_path / "run", with_metadata=True)
    assert meta["dataset"] == str(digits_npz) and meta["class_names"][0] == "digit 0"
    report = evaluate_checkpoint(tmp_path / "run", [0.0, 0.2], n=60, steps=5, attacks=["fgsm", "pgd-margin"], min_l2=None,
                                 device="cpu")
    assert report.model["dataset"] == str(digits_npz)
    assert report.worst_case()[0] == pytest.approx(report.clean_accuracy) and report.worst_case()[1] < report.clean_accuracy


def test_every_hostile_npz_through_the_cli_is_one_line_and_exit_2(hostile, sentinel, capsys, tmp_path):
    from gccs_core.cli import main

    wrong = []
    for path, pattern in hostile:
        for argv in (["train", "--data", str(path), "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"],
                     ["evaluate", "--arch", "gccs:mlp", "--weights", str(tmp_path / "absent.safetensors"), "--data", str(path)]):
            try:
                code = main(argv)
            except BaseException as exc:  # noqa: BLE001 - a crash or SystemExit is what this test looks for
                wrong.append((path.name, f"CRASH {type(exc).__name__}: {exc}"[:300]))
                continue
            err = capsys.readouterr().err.strip().splitlines()
            if code != 2 or len(err) != 1 or path.name not in err[0] or not re.search(pattern, err[0]):
                wrong.append((path.name, argv[0], code, err[:2]))
    assert not sentinel.exists()
    assert not (tmp_path / "run").exists()
    assert wrong == []


def test_npz_through_the_cli_trains_with_tensorboard_and_evaluates(digits_npz, tmp_path):
    import json

    from gccs_core.cli import main

    tb = pytest.importorskip("tensorboard", reason="tensorboard (optional extra) is not installed")
    assert tb
    run = tmp_path / "run"
    assert main(["train", "--data", str(digits_npz), "--loss", "ce", "--epochs", "2", "--out", str(run), "--quiet",
                 "--device", "cpu", "--tensorboard", str(tmp_path / "tb")]) == 0
    assert list((tmp_path / "tb").glob("events.out.tfevents.*")) and (tmp_path / "tb" / "projector_config.pbtxt").exists()
    out = tmp_path / "report.json"
    assert main(["evaluate", "--checkpoint", str(run), "--n", "40", "--eps", "0.1", "--steps", "3", "--attacks", "fgsm",
                 "--min-l2", "none", "--quiet", "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"]["dataset"] == str(digits_npz) and report["clean_accuracy"] > 0.8
