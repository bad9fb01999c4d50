"""A network of your own trained on *normalised* inputs: ``mean``/``std`` are folded in front of it (Python API and
``--mean/--std`` on the CLI), so attacks still work in [0, 1] pixel space; ``attack --arch --weights`` runs one
attack on it like ``evaluate``; bad values get one clear line."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from gccs_core.attacks import run_attack
from gccs_core.data import load_dataset
from gccs_core.external import ExternalModelError
from gccs_core.models import LatentClassifier
from gccs_core.weights import build_arch, load_external_model, parse_channels

ARCH, SHAPE = "gccs:mlp", (1, 8, 8)
MEAN, STD = 0.3, 0.38  # what the user's own loop normalised digits with
N, EPS, STEPS = 60, 0.2, 10


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits", "train"), load_dataset("digits", "test", limit=N)


@pytest.fixture(scope="module")
def normalised(data, tmp_path_factory):
    """gccs:mlp trained by a plain CE loop on (x - MEAN) / STD; its state_dict as safetensors, and the network."""
    train = data[0]
    torch.manual_seed(0)
    net = build_arch(ARCH, 10, SHAPE)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(4):
        net.train()
        for i in range(0, len(train), 64):
            opt.zero_grad()
            F.cross_entropy(net((train.x[i : i + 64] - MEAN) / STD), train.y[i : i + 64]).backward()
            opt.step()
    path = tmp_path_factory.mktemp("norm") / "mlp_norm.safetensors"
    save_file({k: v.contiguous() for k, v in net.eval().state_dict().items()}, str(path))
    return path, net


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from gccs_core.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_normalisation_is_folded_in_front_and_attacks_stay_in_pixel_space(normalised, data):
    path, net = normalised
    x, y = data[1].x, data[1].y
    model = load_external_model(ARCH, path, 10, SHAPE, mean=MEAN, std=STD)
    assert torch.allclose(model(x), net((x - MEAN) / STD), atol=1e-5)
    acc = float((model.predict(x) == y).float().mean())
    raw = load_external_model(ARCH, path, 10, SHAPE)  # the same weights fed unnormalised pixels
    assert acc > 0.85 and acc > float((raw.predict(x) == y).float().mean()) + 0.1
    res = run_attack(model, x, y, "pgd", eps=EPS, steps=STEPS, seed=0)
    delta = res.x_adv - x
    assert float(delta.abs().max()) <= EPS + 1e-6  # the budget is in [0, 1] pixels, not normalised units
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert float(res.success.float().mean()) > 0.5  # the gradient flows through the folded normalisation


def test_from_module_takes_per_channel_mean_and_std():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).eval()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    model = LatentClassifier.from_module(net, input_shape=(3, 8, 8), mean=mean, std=std)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(model(x), net((x - m) / s), atol=1e-5)
    # value_range first, then mean/std in that range (torchvision's recipe on 0..255 inputs)
    model255 = LatentClassifier.from_module(net, input_shape=(3, 8, 8), value_range=(0, 255), mean=(120.0,), std=(60.0,))
    assert torch.allclose(model255(x), net((x * 255 - 120) / 60), atol=1e-4)


@pytest.mark.parametrize("kwargs,match", [
    ({"mean": (0.1, 0.2)}, r"mean=\(0.1, 0.2\) is invalid: give one finite number or one per channel \(3\)"),
    ({"std": (0.2, 0.0, 0.2)}, r"std=\(0.2, 0.0, 0.2\) is invalid: every value must be > 0"),
    ({"std": -1.0}, "std=-1.0 is invalid: every value must be > 0"),
    ({"mean": float("nan")}, "mean=nan is invalid"),
    ({"std": "0.2"}, "std='0.2' is invalid"),
])
def test_bad_mean_or_std_in_the_api_is_one_clear_line(kwargs, match):
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    with pytest.raises(ExternalModelError, match=match) as info:
        LatentClassifier.from_module(net, input_shape=(3, 8, 8), **kwargs)
    assert "\n" not in str(info.value)


def test_cli_attack_on_own_weights_matches_the_api(normalised, data, capsys, tmp_path):
    path, _ = normalised
    x, y = data[1].x, data[1].y
    out = tmp_path / "adv.safetensors"
    code, text, err = _cli(["attack", "--arch", ARCH, "--weights", str(path), "--dataset", "digits", "--mean", str(MEAN),
                            "--std", str(STD), "--attack", "pgd", "--eps", str(EPS), "--steps", str(STEPS), "--n", str(N),
                            "--seed", "0", "--device", "cpu", "--save", str(out)], capsys)
    assert code == 0, err
    model = load_external_model(ARCH, path, 10, SHAPE, mean=MEAN, std=STD)
    res = run_attack(model, x, y, "pgd", eps=EPS, steps=STEPS, seed=0)
    clean = float((model.predict(x) == y).float().mean())
    adv = float((res.pred == y).float().mean())
    assert f"clean accuracy {clean:.4f}  adversarial accuracy {adv:.4f}" in text, text
    assert adv < clean - 0.3  # a real attack, not a no-op
    saved = load_file(str(out))
    assert torch.equal(saved["x_adv"], res.x_adv) and torch.equal(saved["y"], y)


def test_cli_evaluate_with_mean_and_std_records_them(normalised, data, capsys, tmp_path):
    import json

    path, _ = normalised
    report = tmp_path / "r.json"
    base = ["evaluate", "--arch", ARCH, "--weights", str(path), "--dataset", "digits", "--n", str(N), "--eps", "0.1",
            "--attacks", "fgsm", "--min-l2", "none", "--device", "cpu", "--quiet"]
    assert _cli([*base, "--mean", str(MEAN), "--std", str(STD), "--json", str(report)], capsys)[0] == 0
    got = json.loads(report.read_text())
    model = load_external_model(ARCH, path, 10, SHAPE, mean=MEAN, std=STD)
    assert got["clean_accuracy"] == pytest.approx(float((model.predict(data[1].x) == data[1].y).float().mean()))
    assert got["model"]["input_mean"] == [MEAN] and got["model"]["input_std"] == [STD]
    assert _cli([*base, "--json", str(report)], capsys)[0] == 0  # unnormalised: a different (worse) network
    assert json.loads(report.read_text())["clean_accuracy"] < got["clean_accuracy"] - 0.1


@pytest.mark.parametrize("extra,match", [
    (["--mean", "0.1,0.2"], r"--mean='0.1,0.2' has 2 values but the inputs have 1 channel: give one number or 1"),
    (["--std", "0"], r"--std='0' is invalid: every std must be > 0"),
    (["--std", "0.3,-1"], r"--std='0.3,-1' has 2 values"),
    (["--std", "nan"], r"--std='nan' is invalid: .*finite"),
    (["--mean", "abc"], r"--mean='abc' is invalid"),
    (["--mean", ""], r"--mean='' is invalid"),
])
@pytest.mark.parametrize("command", ["attack", "evaluate"])
def test_bad_mean_or_std_on_the_cli_is_one_line(normalised, capsys, command, extra, match):
    path, _ = normalised
    code, _, err = _cli([command, "--arch", ARCH, "--weights", str(path), "--dataset", "digits", "--n", "5", *extra], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(match, err), err


@pytest.mark.parametrize("argv,match", [
    (["attack", "--checkpoint", "x.safetensors", "--mean", "0.5"], "--mean go with --arch and --weights"),
    (["attack", "--n", "5"], "give --checkpoint, or --arch with --weights"),
    (["attack", "--arch", ARCH, "--dataset", "digits"], "--arch and --weights go together"),
    (["evaluate", "--checkpoint", "x.safetensors", "--latent-layer", "1", "--std", "2"],
     "--latent-layer, --std go with --arch and --weights"),
])
def test_flag_combinations_are_clear(capsys, argv, match):
    code, _, err = _cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and match in err, err


def test_attack_on_a_checkpoint_with_another_datasets_shape_is_refused(capsys):
    from pathlib import Path

    ckpt = Path(__file__).resolve().parent.parent / "pretrained" / "digits-ce.safetensors"
    if not ckpt.exists():
        pytest.skip("pretrained/digits-ce.safetensors is not in this checkout")
    code, _, err = _cli(["attack", "--checkpoint", str(ckpt), "--dataset", "mnist5k", "--n", "5"], capsys)
    assert code == 2 and "--dataset='mnist5k' has inputs (1, 28, 28) and 10 classes; the checkpoint takes (1, 8, 8)" in err


def test_parse_channels_keeps_none_and_repeats_nothing():
    assert parse_channels(None, "--mean", 3) is None
    assert parse_channels("0.5", "--mean", 3) == (0.5,)
    assert parse_channels(" 0.1, 0.2 ,0.3", "--std", 3) == (0.1, 0.2, 0.3)


def test_cli_attack_early_exit_breaks_the_same_examples(normalised, capsys):
    path, _ = normalised
    base = ["attack", "--arch", ARCH, "--weights", str(path), "--dataset", "digits", "--mean", str(MEAN), "--std", str(STD),
            "--eps", "0.1", "--steps", "10", "--n", str(N), "--device", "cpu"]
    lines = []
    for extra in ([], ["--early-exit"]):
        code, text, err = _cli([*base, *extra], capsys)
        assert code == 0, err
        lines.append(re.search(r"adversarial accuracy (\S+)", text).group(1))
    assert lines[0] == lines[1] and float(lines[0]) < 0.9
