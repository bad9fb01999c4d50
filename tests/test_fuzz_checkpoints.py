"""Hostile checkpoint files: 200+ malformed or malicious files fed to ``gccs_core.load_model`` and to the app's upload.

Every file must be refused with a clear ``CheckpointError`` (or ``ValueError``) message; none may run code (the
pickle payloads would create a marker file), crash the process, or leave the app unusable. The corpus is built
from a real checkpoint saved by the library, then broken in every way listed in issue 6: truncation, a header
that lies about its size or the tensor offsets, a huge declared header, wrong shapes and dtypes, NaN/inf weights,
metadata with wrong types or missing fields, unknown losses and encoders, pickle payloads, 0-byte and oversize
files, plus random byte flips.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save as st_save

from gccs_core import CheckpointError, load_model
from gccs_core.checkpoint import MAX_CHECKPOINT_BYTES, load_model_bytes, save_model, save_training_checkpoint
from gccs_core.models import ModelSpec, build_model

ROOT = Path(__file__).resolve().parent.parent

MARKER_ENV = "GCCS_FUZZ_MARKER"


# -- the payloads: objects whose unpickling would create a marker file -----------------------------


class _TouchMarker:
    """Unpickling this calls ``open(marker, 'w')``: the marker file exists iff pickle code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


class _SystemMarker:
    """Unpickling this runs ``os.system('touch marker')``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _ExecMarker:
    """Unpickling this runs ``exec`` of Python code that writes the marker."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


# -- building blocks --------------------------------------------------------------------------------


def _spec() -> ModelSpec:
    return ModelSpec("mlp", (1, 8, 8), 10, 16, "gccs", {}, (0.3,), (0.38,))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(_spec()).eval()


def good_model_bytes(tmp: Path) -> bytes:
    """A valid model file for digits, as the library writes it."""
    return save_model(_model(), tmp / "good.safetensors", {"dataset": "digits"}).read_bytes()


def good_training_bytes(tmp: Path) -> bytes:
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    loss, _ = model.loss(torch.rand(8, 1, 8, 8), torch.arange(8))
    loss.backward()
    opt.step()
    model.eval()
    path = save_training_checkpoint(tmp / "ckpt.safetensors", model, opt, {"dataset": "digits", "epoch": 1, "history": []})
    return path.read_bytes()


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join(header: dict[str, Any] | str | bytes, body: bytes, declared: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(raw) if declared is None else declared) + raw + body


def with_meta(data: bytes, edit: Callable[[dict[str, Any]], Any]) -> bytes:
    """Re-serialise ``data`` after ``edit`` changed the GCCS metadata dict (in place or by returning a new one)."""
    header, body = split(data)
    meta = json.loads(header["__metadata__"]["metadata"])
    out = edit(meta)
    header["__metadata__"]["metadata"] = json.dumps(meta if out is None else out)
    return join(header, body)


def with_spec(data: bytes, field: str, value: Any, delete: bool = False) -> bytes:
    def edit(meta: dict[str, Any]) -> None:
        if delete:
            meta["spec"].pop(field)
        else:
            meta["spec"][field] = value

    return with_meta(data, edit)


def with_info(data: bytes, edit: Callable[[dict[str, Any]], Any]) -> bytes:
    """Edit the raw ``__metadata__`` string map (format, kind, metadata)."""
    header, body = split(data)
    out = edit(header["__metadata__"])
    if out is not None:
        header["__metadata__"] = out
    return join(header, body)


def with_state(edit: Callable[[dict[str, torch.Tensor]], None], meta: dict[str, Any] | None = None) -> bytes:
    """A file written by safetensors itself (consistent layout) but with tensors changed by ``edit``."""
    model = _model()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    edit(state)
    info = {"library_version": "0.1.0", "spec": model.spec.to_dict(), "dataset": "digits", **(meta or {})}
    header = {"format": "gccs-checkpoint", "format_version": "1", "kind": "model", "metadata": json.dumps(info)}
    return st_save({k: v.contiguous() for k, v in state.items()}, metadata=header)


def pickles(marker: str) -> Iterator[tuple[str, bytes]]:
    """Pickle files with a code-execution payload, in several wrappers."""
    payloads = {"open": _TouchMarker(marker), "system": _SystemMarker(marker), "exec": _ExecMarker(marker)}
    for pname, obj in payloads.items():
        for proto in (0, 2, 4, 5):
            yield f"pickle-{pname}-p{proto}", pickle.dumps({"state_dict": obj}, protocol=proto)
    buf = io.BytesIO()
    torch.save({"model": _SystemMarker(marker), "weights": torch.zeros(3)}, buf)  # a torch .pt (zip + pickle)
    yield "torch-save-zip-payload", buf.getvalue()
    buf = io.BytesIO()
    torch.save({"model": _TouchMarker(marker)}, buf, _use_new_zipfile_serialization=False)  # legacy torch format
    yield "torch-save-legacy-payload", buf.getvalue()
    # a safetensors-looking prefix followed by a pickle, and a pickle hidden in the metadata string
    p = pickle.dumps(_SystemMarker(marker))
    yield "length-prefix-then-pickle", struct.pack("<Q", len(p)) + p
    yield "pickle-as-header-json", join(p, b"")


def corpus(tmp: Path, marker: str) -> list[tuple[str, bytes]]:
    """(name, bytes) for every hostile file; at least 200."""
    good = good_model_bytes(tmp)
    train_file = good_training_bytes(tmp)
    header, body = split(good)
    keys = [k for k in header if k != "__metadata__"]
    files: list[tuple[str, bytes]] = [("empty", b"")]

    # truncated safetensors: inside the length field, the header, the tensor data, the last byte
    n_header = struct.unpack("<Q", good[:8])[0]
    cuts = sorted({1, 4, 7, 8, 9, 20, n_header // 2, n_header + 7, n_header + 8, n_header + 9, len(good) // 3,
                   len(good) // 2, 2 * len(good) // 3, len(good) - 100, len(good) - 4, len(good) - 1})
    files += [(f"truncated-at-{c}", good[:c]) for c in cuts]
    files += [(f"training-truncated-at-{c}", train_file[:c]) for c in (9, len(train_file) // 2, len(train_file) - 1)]

    # a header that lies about its own size
    for declared in (0, 1, 2, n_header - 1, n_header + 1, len(good), len(good) - 7, 2**32, 2**63 - 1, 2**64 - 1):
        files.append((f"header-declares-{declared}", struct.pack("<Q", declared) + good[8:]))
    # a huge header: declared and real (2 MB of JSON padding, over the 1 MB header limit)
    files.append(("header-declares-1GB", join(header, body, declared=2**30)))
    big = dict(header)
    big["__metadata__"] = {**header["__metadata__"], "padding": "x" * (2 * 1024 * 1024)}
    files.append(("real-2MB-header", join(big, body)))
    files.append(("deeply-nested-header-json", join("[" * 200_000 + "]" * 200_000, body)))
    files.append(("deeply-nested-metadata-json", with_info(good, lambda i: i.update(metadata="[" * 200_000 + "]" * 200_000))))
    files.append(("header-not-json", join(b"{not json at all", body)))
    files.append(("header-invalid-utf8", join(b"\xff\xfe\x00{\"a\":1}", body)))
    for name, value in (("list", []), ("string", "x"), ("number", 3), ("null", None)):
        files.append((f"header-is-{name}", join(json.dumps(value), body)))

    # tensor offsets and descriptors that lie
    for key in keys[:4] + keys[-2:]:
        start, end = header[key]["data_offsets"]
        lies = {
            "past-end": [start, len(body) + 10],
            "reversed": [end, start],
            "overlap-previous": [max(0, start - 4), end - 4],
            "negative": [-8, end],
            "huge": [start, 2**62],
            "zero-length": [start, start],
            "not-ints": ["a", "b"],
            "one-offset": [start],
            "float-offsets": [float(start), float(end)],
        }
        for lie, offsets in lies.items():
            h = json.loads(json.dumps(header))
            h[key]["data_offsets"] = offsets
            files.append((f"offsets-{lie}-{key}", join(h, body)))
        for lie, desc in (("shape-lies", {"shape": [999, 999]}), ("dtype-unknown", {"dtype": "F128"}),
                          ("dtype-lies", {"dtype": "F64"}), ("shape-negative", {"shape": [-1, 4]}),
                          ("no-dtype", {"dtype": None})):
            h = json.loads(json.dumps(header))
            h[key].update(desc)
            if desc.get("dtype", "") is None:
                del h[key]["dtype"]
            files.append((f"descriptor-{lie}-{key}", join(h, body)))
    h = json.loads(json.dumps(header))
    h["extra.tensor"] = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}  # aliases another tensor's bytes
    files.append(("aliased-extra-tensor", join(h, body)))
    files.append(("trailing-garbage", good + b"\x00" * 64))

    # wrong tensor shapes and dtypes (a consistent safetensors file, the wrong model)
    wkeys = [k for k in keys if k.endswith("weight") or k.endswith("bias")][:6]
    for key in wkeys:
        files.append((f"shape-doubled-{key}", with_state(lambda s, k=key: s.__setitem__(k, torch.cat([s[k], s[k]])))))
        files.append((f"shape-extra-dim-{key}", with_state(lambda s, k=key: s.__setitem__(k, s[k][None]))))
        files.append((f"shape-empty-{key}", with_state(lambda s, k=key: s.__setitem__(k, s[k][:0]))))
        for dtype in (torch.float64, torch.float16, torch.int64, torch.uint8, torch.bool):
            files.append((f"dtype-{dtype}-{key}".replace("torch.", ""),
                          with_state(lambda s, k=key, d=dtype: s.__setitem__(k, s[k].to(d)))))
    files.append(("missing-tensor", with_state(lambda s: s.pop(wkeys[0]))))
    files.append(("unexpected-tensor", with_state(lambda s: s.__setitem__("evil.weight", torch.zeros(3)))))
    files.append(("no-tensors", with_state(lambda s: s.clear())))

    # NaN and inf weights
    fkeys = [k for k in keys if "num_batches" not in k]
    for key in fkeys:
        for bad in (float("nan"), float("inf"), float("-inf")):
            def poison(s: dict[str, torch.Tensor], k: str = key, v: float = bad) -> None:
                s[k].view(-1)[0] = v

            files.append((f"nonfinite-{bad}-{key}", with_state(poison)))

    # the GCCS container metadata (format, version, kind, metadata string)
    files.append(("no-metadata-block", join({k: v for k, v in header.items() if k != "__metadata__"}, body)))
    for field, value in (("format", "other"), ("format", None), ("format_version", "2"), ("format_version", None),
                         ("kind", "optimizer"), ("kind", None), ("metadata", None), ("metadata", "not json"),
                         ("metadata", "[1, 2]"), ("metadata", "\"a string\""), ("metadata", "null"), ("metadata", "NaN")):
        def edit(info: dict[str, Any], f: str = field, v: Any = value) -> None:
            if v is None:
                info.pop(f, None)
            else:
                info[f] = v

        files.append((f"info-{field}-{value}", with_info(good, edit)))
    files.append(("info-not-strings", with_info(good, lambda i: {**i, "kind": 1})))
    files.append(("metadata-without-spec", with_meta(good, lambda m: m.pop("spec"))))
    files.append(("spec-is-list", with_meta(good, lambda m: m.__setitem__("spec", [1, 2]))))
    files.append(("spec-is-string", with_meta(good, lambda m: m.__setitem__("spec", "mlp"))))

    # spec fields: missing, wrong types, impossible values, unknown loss or encoder
    spec_fields = ("encoder", "in_shape", "num_classes", "latent_dim", "loss", "loss_params", "mean", "std")
    files += [(f"spec-missing-{f}", with_spec(good, f, None, delete=True)) for f in spec_fields]
    wrong: dict[str, list[Any]] = {
        "encoder": [1, None, ["mlp"], "os.system", "__import__('os').system('id')", "transformer", ""],
        "loss": [2, None, "evil", "__reduce__", "gccs; rm -rf /", "GCCS", ""],
        "num_classes": ["10", 10.5, True, None, -1, 0, 1, 11, 9, 10**6, 10**400, [10]],
        "latent_dim": ["16", 16.0, False, 0, -16, 15, 17, 10**9, 10**400, 2, None],
        "in_shape": ["1,8,8", [1, 8], [1, 8, 8, 1], [0, 8, 8], [-1, 8, 8], [1, 8, "8"], [1, 8, 9], [3, 8, 8],
                     [1, 1024, 1024], [1024, 1024, 1024], [1, 8, 10**400], None],
        "mean": ["0.3", [], [0.3, 0.3], ["a"], [None], None, [float("nan")], [1e309], [10**400], [-(10**400)]],
        "std": ["0.38", [], [0.38, 0.38], [0.0], [-1.0], [float("nan")], [float("inf")], [True]],
        "loss_params": [[], "sigma=1", {"sigma": "1"}, {"sigma": -1.0}, {"sigma": 0.0}, {"sigma": float("nan")},
                        {"radius": float("inf")}, {"unknown": 1.0}, {"sigma": None}, {"sigma": True}, {"sigma": 10**400}],
    }
    for f, values in wrong.items():
        files += [(f"spec-{f}-{str(v)[:30]}", with_spec(good, f, v)) for v in values]
    files.append(("spec-ce-with-gccs-weights", with_spec(good, "loss", "ce")))
    files.append(("spec-cnn-with-mlp-weights", with_spec(good, "encoder", "cnn")))
    files.append(("spec-resnet-with-mlp-weights", with_spec(good, "encoder", "resnet18")))

    # the app's own checks: dataset missing, unknown, wrong type, or not matching the model
    for value in (None, 3, "imagenet", "mnist5k", "cifar10", "../../etc/passwd"):
        def set_dataset(m: dict[str, Any], v: Any = value) -> None:
            if v is None:
                m.pop("dataset", None)
            else:
                m["dataset"] = v

        files.append((f"dataset-{value}", with_meta(good, set_dataset)))

    # training checkpoints with the model part broken
    theader, tbody = split(train_file)
    mkey = next(k for k in theader if k.startswith("model/"))
    files.append(("training-missing-model-tensor", join({k: v for k, v in theader.items() if k != mkey}, tbody)))
    files.append(("training-kind-on-model-file", with_info(good, lambda i: i.update(kind="training"))))
    files.append(("model-kind-on-training-file", with_info(train_file, lambda i: i.update(kind="model"))))

    # pickle payloads, 0-byte and random files
    files += list(pickles(marker))
    rng = random.Random(0)
    files += [(f"random-{n}", rng.randbytes(n)) for n in (1, 7, 8, 9, 100, 4096)]
    files.append(("zip-file", b"PK\x03\x04" + rng.randbytes(200)))
    files.append(("numpy-npy-object", b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
                  + b" " * 50 + b"\n" + pickle.dumps(_SystemMarker(marker))))

    # random byte flips in the header and in the tensor data
    for i in range(30):
        data = bytearray(good)
        lo, hi = (8, 8 + n_header) if i % 2 == 0 else (8 + n_header, len(good))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(lo, hi)] = rng.randrange(256)
        files.append((f"flipped-{'header' if i % 2 == 0 else 'data'}-{i}", bytes(data)))
    return files


# -- the tests ------------------------------------------------------------------------------------------

ALLOWED = (CheckpointError, ValueError)
"""``CheckpointError`` is a ``ValueError``; the app also raises ``ValueError`` for its own checks."""
APP_ONLY = ("dataset-",)
"""Valid model files that only the app must refuse (their dataset is missing, unknown or does not fit the model)."""
MAY_LOAD = ("flipped-data-",)
"""Byte flips inside the float data usually give other finite weights: a valid file (no checksum exists)."""
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[tuple[str, bytes]], Path]:
    tmp = tmp_path_factory.mktemp("fuzz")
    marker = tmp / "PWNED"
    return corpus(tmp, str(marker)), marker


def _classify(fn: Callable[[], Any]) -> tuple[str, str]:
    """('ok' | 'refused' | 'CRASH', message)."""
    try:
        fn()
    except ALLOWED as err:
        return "refused", str(err)
    except Exception as err:  # noqa: BLE001 - any other exception type is what this test hunts
        return "CRASH", f"{type(err).__name__}: {err}"
    return "ok", ""


def test_corpus_is_big_and_distinct(hostile: tuple[list[tuple[str, bytes]], Path]) -> None:
    files, _ = hostile
    names = [n for n, _ in files]
    assert len(files) >= 200, len(files)
    assert len(set(names)) == len(names), "duplicate names"
    assert len({d for _, d in files}) >= 0.95 * len(files), "the files should differ"


def test_load_model_refuses_every_hostile_file_clearly(hostile: tuple[list[tuple[str, bytes]], Path], tmp_path: Path) -> None:
    files, marker = hostile
    outcomes: dict[str, tuple[str, str]] = {}
    t0 = time.perf_counter()
    for i, (name, data) in enumerate(files):
        path = tmp_path / f"{i:03d}.safetensors"
        path.write_bytes(data)
        outcomes[name] = _classify(lambda p=path: load_model(p))
        path.unlink()
    crashes = {n: m for n, (o, m) in outcomes.items() if o == "CRASH"}
    accepted = [n for n, (o, _) in outcomes.items() if o == "ok" and not n.startswith(APP_ONLY + MAY_LOAD)]
    assert not crashes, crashes
    assert not accepted, f"hostile files accepted as models: {accepted}"
    assert not marker.exists(), "a pickle payload ran"
    for name, (outcome, msg) in outcomes.items():  # each message names the file and says what is wrong
        if outcome == "refused":
            assert len(msg) > 25 and ".safetensors" in msg, (name, msg)
    FIGURES["load_model"] = {"files": len(files), "crashes": len(crashes), "refused": sum(o == "refused" for o, _ in
                             outcomes.values()), "loaded": sum(o == "ok" for o, _ in outcomes.values()),
                             "seconds": round(time.perf_counter() - t0, 1)}
    print("\nload_model fuzz:", FIGURES["load_model"])


def test_load_model_refuses_a_file_over_the_size_limit_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as fh:  # sparse: no disk used, but stat() reports the size
        fh.truncate(MAX_CHECKPOINT_BYTES + 1)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="over the .*limit"):
        load_model(path)
    assert time.perf_counter() - t0 < 1.0  # refused from the size alone
    with pytest.raises(CheckpointError, match="over the .*limit"):
        load_model_bytes(b"\x00" * (MAX_CHECKPOINT_BYTES + 1))


def test_the_clean_file_still_loads(tmp_path: Path) -> None:
    """The corpus is derived from a valid file: without the damage, it loads (so the refusals are not blanket)."""
    good_model_bytes(tmp_path)
    model = load_model(tmp_path / "good.safetensors")
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(model(x), _model()(x))


def test_the_payloads_are_live(tmp_path: Path) -> None:
    """Control: the pickle payloads really run code when unpickled, so the marker check means something."""
    marker = tmp_path / "control-marker"
    for obj in (_TouchMarker(str(marker)), _ExecMarker(str(marker)), _SystemMarker(str(marker))):
        pickle.loads(pickle.dumps(obj))  # noqa: S301 - deliberate: proves the payload works
        assert marker.exists()
        marker.unlink()
