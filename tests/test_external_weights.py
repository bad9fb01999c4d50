"""Weights by architecture name: good files load, and >= 100 malformed or malicious files each get one clear
WeightsError and never run code (a sentinel file that a payload would create must not appear)."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save
from torch import nn

from gccs_core.weights import WeightsError, build_arch, load_external_model, load_weights, read_state_dict_bytes

ARCH, K, SHAPE = "gccs:mlp", 10, (1, 8, 8)


def _state(arch: str = ARCH, k: int = K, shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {n: t.contiguous() for n, t in build_arch(arch, k, shape).state_dict().items()}


def _torch_bytes(obj: object, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


class _Payload:
    """Unpickling this would call ``func(*args)``: the classic pickle code-execution gadget."""

    def __init__(self, func: object, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(sentinel: Path) -> list[tuple[str, object]]:
    import builtins
    import subprocess

    cmd = f"touch {sentinel}"
    code = f"open({str(sentinel)!r}, 'w').write('pwned')"
    return [
        ("os.system", _Payload(os.system, (cmd,))),
        ("exec", _Payload(builtins.exec, (code,))),
        ("eval", _Payload(builtins.eval, (code,))),
        ("subprocess", _Payload(subprocess.call, (["touch", str(sentinel)],))),
        ("Path.touch", _Payload(Path.touch, (sentinel,))),
    ]


def _safetensors_raw(header: object, body: bytes = b"") -> bytes:
    h = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(h)) + h + body


def hostile_files(sentinel: Path) -> list[tuple[str, bytes, str]]:
    """(name, bytes, regex the message must match) for every malformed or malicious weights file."""
    good = _state()
    st = st_save(good)
    pt = _torch_bytes(good)
    keys = list(good)
    out: list[tuple[str, bytes, str]] = []
    # truncated files
    (n_header,) = struct.unpack("<Q", st[:8])
    for cut in sorted({0, 1, 4, 7, 8, 9, 16, n_header, n_header + 7, n_header + 8, n_header + 9, len(st) // 2,
                       len(st) - 100, len(st) - 1}):
        out.append((f"st_trunc_{cut}.safetensors", st[:cut], "too short|truncated|malformed|neither"))
    for cut in sorted({8, 64, 200, 1000, len(pt) // 3, len(pt) // 2, len(pt) - 200, len(pt) - 22, len(pt) - 1}):
        out.append((f"pt_trunc_{cut}.pt", pt[:cut], "truncated|corrupt|not a readable"))
    legacy = _torch_bytes(good, legacy=True)
    for cut in (10, len(legacy) // 2, len(legacy) - 5):
        out.append((f"legacy_trunc_{cut}.pt", legacy[:cut], "not a readable|refused|truncated"))
    # safetensors headers that lie
    out += [
        ("huge_header.safetensors", struct.pack("<Q", 2**62) + b"{}" + b"\0" * 64, "header declares"),
        ("header_past_end.safetensors", struct.pack("<Q", 500) + b"{" + b" " * 20, "header declares"),
        ("header_not_utf8.safetensors", _safetensors_raw(b"{\xff\xfe}"), "not valid JSON"),
        ("header_not_json.safetensors", _safetensors_raw(b"{not json"), "not valid JSON"),
        ("header_list.safetensors", struct.pack("<Q", 2) + b"[]", "neither"),
        ("header_deep.safetensors", _safetensors_raw(b"{\"a\":" + b"[" * 100000 + b"]" * 100000 + b"}"), "not valid JSON"),
        ("bad_dtype.safetensors", _safetensors_raw({"w": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
         "malformed"),
        ("offsets_past_end.safetensors",
         _safetensors_raw({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8), "malformed"),
        ("offsets_overlap.safetensors", _safetensors_raw(
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12), "malformed"),
        ("shape_vs_bytes.safetensors",
         _safetensors_raw({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8), "malformed"),
        ("negative_shape.safetensors",
         _safetensors_raw({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8), "malformed"),
        ("too_many_entries.safetensors", _safetensors_raw({f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
                                                           for i in range(10_001)}), "at most 10000"),
        ("empty_state.safetensors", st_save({}), "missing key"),
    ]
    # a state_dict of the right architecture with one bad tensor
    for key in keys[:12]:
        t = good[key]
        if t.dim() >= 1 and t.shape[0] > 1:
            out.append((f"shape_{key}.safetensors", st_save({**good, key: t[:-1].contiguous()}), f"'{key}' has shape"))
        if t.is_floating_point():
            for dtype in (torch.float64, torch.float16):
                out.append((f"dtype_{dtype}_{key}.safetensors", st_save({**good, key: t.to(dtype)}), f"'{key}' is torch"))
            for bad in (float("nan"), float("inf"), float("-inf")):
                v = t.clone()
                v.view(-1)[0] = bad
                out.append((f"nonfinite_{bad}_{key}.pt", _torch_bytes({**good, key: v}), f"'{key}' contains NaN or inf"))
        else:
            out.append((f"dtype_int32_{key}.safetensors", st_save({**good, key: t.to(torch.int32)}), f"'{key}' is torch"))
    for key in keys[:4]:
        out.append((f"missing_{key}.safetensors", st_save({k: v for k, v in good.items() if k != key}),
                    rf"1 missing key\(s\) \[{key}\]"))
    out.append(("extra_key.safetensors", st_save({**good, "zz.extra": torch.zeros(1)}), r"1 unexpected key\(s\) \[zz.extra\]"))
    out.append(("renamed.safetensors", st_save({f"net.{k}": v for k, v in good.items()}), "missing key"))
    # state_dicts of other architectures (the message names the first mismatching keys)
    others = [("cnn", _state("gccs:cnn")), ("mlp_5_classes", _state(ARCH, 5)), ("mlp_28px", _state(ARCH, K, (1, 28, 28))),
              ("tiny_seq", nn.Sequential(nn.Linear(3, 2)).state_dict())]
    for name, state in others:
        pattern = "not a state_dict of gccs:mlp|has shape"
        out.append((f"other_arch_{name}.safetensors", st_save({k: v.contiguous() for k, v in state.items()}), pattern))
        out.append((f"other_arch_{name}.pt", _torch_bytes(state), pattern))
    # code-execution payloads, raw pickles and inside torch.save archives
    for label, payload in _payloads(sentinel):
        for proto in (2, 4, 5):
            out.append((f"pickle_{label}_p{proto}.pt", pickle.dumps(payload, protocol=proto), "refused by torch.load"))
        out.append((f"torchsave_{label}.pt", _torch_bytes(payload), "refused by torch.load"))
        out.append((f"torchsave_in_dict_{label}.pt", _torch_bytes({**good, "x": payload}), "refused by torch.load"))
        out.append((f"disguised_{label}.safetensors", pickle.dumps(payload, protocol=4), "refused by torch.load"))
    # things that are not a state_dict
    torch.manual_seed(0)
    out += [
        ("whole_module.pt", _torch_bytes(build_arch(ARCH, K, SHAPE)), "refused by torch.load"),
        ("tensor.pt", _torch_bytes(torch.zeros(3)), "holds a Tensor, not a state_dict"),
        ("list.pt", _torch_bytes([torch.zeros(3)]), "holds a list, not a state_dict"),
        ("int_values.pt", _torch_bytes({"a": 3}), "entry 'a' is a int, not a tensor"),
        ("nested.pt", _torch_bytes({"a": {"b": torch.zeros(1)}, "c": torch.zeros(1)}), "entry 'a' is a dict"),
        ("int_keys.pt", _torch_bytes({1: torch.zeros(1)}), "key 1 is a int"),
        ("random.bin", os.urandom(4096), "neither a safetensors|not a readable|refused|header declares"),
        ("text.safetensors", b"this is not a weights file at all\n" * 10, "neither a safetensors"),
        ("zeros.pt", b"\0" * 1000, "neither a safetensors"),
        ("empty.pt", b"", "too short"),
        ("foreign_zip.pt", _zip({"hello.txt": b"hi"}), "not a readable"),
        ("zip_bad_crc.pt", _corrupt_crc(pt), "corrupt|not a readable"),
    ]
    return out


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _corrupt_crc(pt: bytes) -> bytes:
    data = bytearray(pt)
    i = data.find(b"data/0")
    j = data.find(b"PK\x03\x04", i + 1) if i >= 0 else -1
    pos = (j - 40) if j > 0 else len(data) // 2
    data[pos] ^= 0xFF
    return bytes(data)


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sentinel") / "pwned"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, sentinel) -> list[tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("hostile_weights")
    files = []
    for name, data, pattern in hostile_files(sentinel):
        path = folder / name.replace(" ", "_")
        path.write_bytes(data)
        files.append((path, pattern))
    return files


def test_there_are_at_least_100_hostile_files(hostile):
    assert len(hostile) >= 100


def test_every_hostile_file_gets_one_clear_error_and_runs_no_code(hostile, sentinel):
    wrong = []
    for path, pattern in hostile:
        try:
            load_weights(ARCH, path, K, SHAPE)
        except WeightsError as err:
            msg = str(err)
            if "\n" in msg or str(path) not in msg or not re.search(pattern, msg):
                wrong.append((path.name, msg[:300]))
        except Exception as err:  # any other type is a crash
            wrong.append((path.name, f"CRASH {type(err).__name__}: {err}"[:300]))
        else:
            wrong.append((path.name, "loaded"))
    assert not sentinel.exists(), "a pickle payload ran"
    assert wrong == []


def test_bytes_api_matches_the_file_api(hostile, sentinel):
    for path, _ in hostile[::7]:
        with pytest.raises(WeightsError):
            load_weights(ARCH, path.read_bytes(), K, SHAPE, source=path.name)
    assert not sentinel.exists()


def test_good_files_load_in_both_formats_and_wrappers(tmp_path):
    good = _state()
    net = build_arch(ARCH, K, SHAPE)
    net.load_state_dict(good)
    net.eval()
    x = torch.rand(4, *SHAPE)
    ref = net(x)
    variants = {
        "w.safetensors": st_save(good),
        "w.pt": _torch_bytes(good),
        "legacy.pth": _torch_bytes(good, legacy=True),
        "wrapped.pt": _torch_bytes({"state_dict": good}),
        "dataparallel.pt": _torch_bytes({f"module.{k}": v for k, v in good.items()}),
        "no_extension": st_save(good),
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        loaded = load_weights(ARCH, tmp_path / name, K, SHAPE)
        assert not loaded.training and torch.allclose(loaded(x), ref), name
    model = load_external_model(ARCH, tmp_path / "w.safetensors", K, SHAPE)
    assert model.spec.encoder == "external:gccs:mlp" and torch.allclose(model(x), ref, atol=1e-6)
    assert read_state_dict_bytes(st_save(good)).keys() == good.keys()


def test_torchvision_names_build_with_adapted_channels():
    net = build_arch("torchvision:resnet18", 10, (1, 28, 28))
    assert net.conv1.in_channels == 1 and net.fc.out_features == 10
    vgg = build_arch("torchvision:vgg11", 4, (2, 32, 32))
    assert vgg.features[0].in_channels == 2 and vgg.classifier[-1].out_features == 4


@pytest.mark.parametrize("arch,match", [
    ("resnet18", "arch='resnet18' is unknown; use torchvision:<model>"),
    ("torchvision:resnet81", "not a torchvision classification model; e.g. torchvision:resnet18"),
    ("torchvision:fasterrcnn_resnet50_fpn", "not a torchvision classification model"),
    ("gccs:transformer", "the library's encoders are gccs:mlp, gccs:cnn, gccs:resnet18"),
    ("timm:resnet18", "unknown family 'timm'"),
    (None, "arch=None is unknown"),
])
def test_unknown_architectures_are_named(arch, match):
    with pytest.raises(WeightsError, match=match):
        build_arch(arch, 10, SHAPE)


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights(ARCH, tmp_path / "nope.safetensors", K, SHAPE)


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from gccs_core.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def test_every_hostile_file_through_the_cli_is_one_line_and_exit_2(hostile, sentinel, capsys):
    """The same files through ``python -m gccs_core evaluate --arch ... --weights FILE`` (its main(), in process)."""
    wrong = []
    for path, pattern in hostile:
        try:
            code, err = _cli(["evaluate", "--arch", ARCH, "--weights", str(path), "--dataset", "digits", "--n", "5",
                              "--eps", "0.1", "--attacks", "fgsm", "--min-l2", "none", "--device", "cpu", "--quiet"], capsys)
        except BaseException as exc:  # noqa: BLE001 - a crash or SystemExit is what this test looks for
            wrong.append((path.name, f"CRASH {type(exc).__name__}: {exc}"[:300]))
            continue
        lines = err.strip().splitlines()
        if code != 2 or len(lines) != 1 or str(path) not in lines[0] or not re.search(pattern, lines[0]):
            wrong.append((path.name, code, err[:300]))
    assert not sentinel.exists(), "a pickle payload ran"
    assert wrong == []


def test_cli_payload_in_a_real_process_runs_no_code(tmp_path):
    import subprocess
    import sys

    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(_torch_bytes(_payloads(sentinel)[0][1]))
    run = subprocess.run([sys.executable, "-m", "gccs_core", "evaluate", "--arch", "torchvision:resnet18", "--weights",
                          str(path), "--latent-layer", "avgpool", "--dataset", "digits"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2 and "refused by torch.load(weights_only=True)" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not sentinel.exists()


def test_cli_argument_combinations_are_clear(capsys, tmp_path):
    (tmp_path / "w.safetensors").write_bytes(st_save(_state()))
    for argv, match in [
        (["evaluate", "--arch", ARCH, "--dataset", "digits"], "--arch and --weights go together"),
        (["evaluate", "--arch", ARCH, "--weights", str(tmp_path / "w.safetensors")], "with --dataset"),
        (["evaluate", "--dataset", "digits"], "give --checkpoint, or --arch with --weights"),
        (["evaluate", "--arch", ARCH, "--weights", str(tmp_path / "w.safetensors"), "--dataset", "digits",
          "--value-range", "1,0"], "--value-range='1,0' is invalid"),
        (["evaluate", "--arch", ARCH, "--weights", str(tmp_path / "w.safetensors"), "--dataset", "digits",
          "--latent-layer", "nope"], "latent_layer='nope' is not a submodule"),
        (["evaluate", "--arch", "torchvision:resnet18", "--weights", str(tmp_path / "w.safetensors"), "--dataset", "digits"],
         "not a state_dict of torchvision:resnet18: .* missing key"),
    ]:
        code, err = _cli(argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(match, err), (argv, err)
