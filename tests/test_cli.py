import os
import subprocess
import sys

import pytest

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


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--loss", "softmax", "--out", "x"], "invalid choice: 'softmax' (choose from 'gccs', 'ce', 'mmc', 'center')"),
        (["train", "--dataset", "imagenet", "--out", "x"], "invalid choice: 'imagenet'"),
        (["train", "--sigma", "0", "--out", "x"], "sigma=0.0 is invalid"),
        (["train", "--loss", "gccs", "--latent-dim", "3", "--out", "x"], "latent_dim=3 is too small"),
        (["train", "--loss", "ce", "--sigma", "2", "--out", "x"], "does not take sigma"),
        (["train", "--epochs", "0", "--out", "x"], "epochs=0 is invalid"),
        (["info", "does/not/exist.safetensors"], "does not exist"),
    ],
)
def test_bad_arguments_give_a_one_line_error(args, needle, tmp_path):
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0]


def test_corrupted_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    r = cli("info", str(bad))
    assert r.returncode == 2 and "header is not valid JSON" in r.stderr


@pytest.mark.parametrize("sub", [[], ["train"], ["info"], ["download"]])
def test_help_everywhere(sub):
    r = cli(*sub, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout
