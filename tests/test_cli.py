import json
import os
import subprocess
import sys

import pytest

from gccs_core.cli import RIDGE_PARAM, build_parser, main, train_config_from_args
from gccs_core.losses import LOSSES, loss_parameters

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gccs_core", *args], capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=300)


def test_train_then_info_then_resume(tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--dataset", "digits", "--loss", "gccs", "--epochs", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "done: gccs on digits, test accuracy" in r.stdout
    assert "epoch 2/2" in r.stderr  # the progress bar's epoch lines
    assert {"model.safetensors", "checkpoint.safetensors", "metadata.json"} <= {p.name for p in out.iterdir()}
    info = cli("info", str(out))
    assert info.returncode == 0 and "test_accuracy" in info.stdout and "loss=gccs" in info.stdout
    again = cli("train", "--dataset", "digits", "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = cli("train", "--out", str(out), "--resume", "--quiet")  # already complete: nothing left to do
    assert resumed.returncode == 0, resumed.stderr
    more = cli("train", "--out", str(out), "--resume", "--epochs", "3")  # continue the finished run to 3 epochs
    assert more.returncode == 0, more.stderr
    assert "epoch 3/3" in more.stderr and "epoch 2/3" not in more.stderr  # only the new epoch ran
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["config"]["epochs"] == 3 and [h["epoch"] for h in meta["history"]] == [1, 2, 3]
    fewer = cli("train", "--out", str(out), "--resume", "--epochs", "1")
    assert fewer.returncode == 2 and "epochs=1 is fewer than the 3 epochs already done" in fewer.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--loss", "softmax", "--out", "x"], f"invalid choice: 'softmax' (choose from {', '.join(map(repr, LOSSES))})"),
        (["train", "--dataset", "imagenet", "--out", "x"], "invalid choice: 'imagenet'"),
        (["train", "--sigma", "0", "--out", "x"], "sigma=0.0 is invalid"),
        (["train", "--loss", "gccs", "--latent-dim", "3", "--out", "x"], "latent_dim=3 is too small"),
        (["train", "--loss", "ce", "--sigma", "2", "--out", "x"], "does not take sigma"),
        (["train", "--epochs", "0", "--out", "x"], "epochs=0 is invalid"),
        (["info", "does/not/exist.safetensors"], "does not exist"),
    ],
)
def test_bad_arguments_give_a_one_line_error(args, needle, tmp_path, monkeypatch, capsys):
    """In-process through cli.main (what `python -m gccs_core` runs); one real subprocess test is below."""
    monkeypatch.chdir(tmp_path)
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert not (tmp_path / "x").exists()  # nothing was started


def test_the_real_command_line_reports_a_corrupted_checkpoint_in_one_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    r = cli("info", str(bad))
    assert r.returncode == 2 and "header is not valid JSON" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("sub", [[], ["train"], ["info"], ["download"], ["evaluate"], ["attack"]])
def test_help_everywhere(sub, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*sub, "--help"])
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out


def _train_config(*args):
    return train_config_from_args(build_parser().parse_args(["train", "--out", "x", *args]))


def test_every_loss_parameter_is_a_train_flag():
    """The flags follow losses.loss_parameters: each parameter of each loss reaches TrainConfig.loss_params."""
    for loss in LOSSES:
        for i, name in enumerate(loss_parameters(loss)):
            value = 0.5 + i / 8  # a valid value for every parameter (shrinkage is at most 1)
            cfg = _train_config("--loss", loss, f"--{name.replace('_', '-')}", str(value))
            assert cfg.loss_params == {name: value}, (loss, name)


def test_train_eps_is_a_deprecated_alias_of_cov_eps(capsys):
    if RIDGE_PARAM == "eps":
        pytest.skip("losses.py still names the covariance ridge eps")
    new = _train_config("--cov-eps", "0.001")
    assert capsys.readouterr().err == ""
    old = _train_config("--eps", "0.001")
    warning = capsys.readouterr().err.strip().splitlines()
    assert old == new and old.loss_params == {"cov_eps": 0.001}
    assert len(warning) == 1 and "--cov-eps" in warning[0]
    assert warning[0].startswith("DeprecationWarning: train --eps is deprecated")
    with pytest.raises(ValueError, match="disagree"):
        _train_config("--eps", "0.001", "--cov-eps", "0.01")
