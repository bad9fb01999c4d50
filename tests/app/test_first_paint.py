"""The first paint imports no torch: app/ imports none at all, and the latent page of the shipped models is drawn
from the shipped numpy views (each check in a fresh interpreter, where sys.modules tells the truth)."""

from __future__ import annotations

import os
import subprocess
import sys

from apptest import ROOT

APP_MODULES = ("app.state", "app.registry", "app.loaders", "app.figures", "app.attacking", "app.training",
               "app.comparing", "app.upload")


def _run(code: str) -> str:
    env = {**os.environ, "GCCS_APP_WARM": "0", "GCCS_PRETRAINED_DIR": str(ROOT / "pretrained")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_every_app_module_imports_without_torch():
    code = ("import importlib, sys\n"
            f"for m in {APP_MODULES!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    assert _run(code) == "[]"


def test_the_latent_page_paints_the_shipped_models_without_torch():
    code = ("import sys\n"
            "from streamlit.testing.v1 import AppTest\n"
            "at = AppTest.from_file('app/main.py', default_timeout=240)\n"
            "at.run()\n"
            "assert not at.exception, [e.value for e in at.exception]\n"
            "print(len(at.get('plotly_chart')), 'torch' in sys.modules)")
    assert _run(code) == "2 False"
