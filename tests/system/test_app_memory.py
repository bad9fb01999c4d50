"""The app's attack-page paths stay light: no ART (and so no numba) import for native attacks and their robust curve."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from apptest import ROOT


def test_native_attack_and_robust_curve_do_not_import_art():
    code = textwrap.dedent("""
        import sys
        import torch
        from gccs_core import ModelSpec, build_model
        from gccs_core.attacks import run_attack
        from gccs_core.evaluate import evaluate_robustness
        model = build_model(ModelSpec("mlp", (1, 8, 8), 10, 16, "gccs")).eval()
        x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
        run_attack(model, x, y, attack="pgd", eps=0.1, steps=2, record=True)
        rep = evaluate_robustness(model, x, y, [0.0, 0.1], steps=2, attacks=["pgd-ce"], min_l2=None)
        assert rep.versions["adversarial-robustness-toolbox"], rep.versions
        heavy = sorted(m for m in ("art", "numba", "umap") if m in sys.modules)
        print("heavy:", heavy)
        assert not heavy, heavy
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
