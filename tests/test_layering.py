"""Imports point one way: every library module imports on its own (no cycle), nothing imports the package
face, and the torch-free modules (and ``import gccs_core`` itself) leave torch out of ``sys.modules``."""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import gccs_core

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gccs_core"
TORCH_FREE = ("gccs_core", "gccs_core._version", "gccs_core.files", "gccs_core.validation", "gccs_core.report",
              # what the app's first paint and sidebar use (torch comes only when a model or dataset is loaded)
              "gccs_core.views", "gccs_core.study_table", "gccs_core.projection", "gccs_core.data", "gccs_core.npz",
              "gccs_core.images", "gccs_core.lesson", "gccs_core.transfer", "gccs_core.stats")


def _modules() -> list[str]:
    names = ["gccs_core"]
    for info in pkgutil.walk_packages(gccs_core.__path__, "gccs_core."):
        names.append(info.name)
    return sorted(names)


def _run(code: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_torch_free_modules_import_no_torch() -> None:
    out = _run(f"import sys, json\nfor m in {TORCH_FREE!r}: __import__(m)\n"
               "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))))")
    assert json.loads(out) == [], "importing the package face or a torch-free module loaded torch"


def test_package_face_still_gives_the_public_names() -> None:
    out = _run("import sys, gccs_core\nassert 'torch' not in sys.modules\n"
               "import gccs_core.train\n"  # the submodule of the same name must not replace the function
               "from gccs_core import TrainConfig, load_model, CheckpointError, simplex_vertices, train\n"
               "print(TrainConfig.__module__, load_model.__module__, callable(train), type(train).__name__)")
    assert out.split() == ["gccs_core.train", "gccs_core.checkpoint", "True", "function"]


def test_every_module_imports_first_and_alone() -> None:
    """Each module is imported first in a clean gccs_core namespace: an import cycle fails whichever module
    starts it, so trying every module as the first one finds any cycle."""
    modules = _modules()
    assert "gccs_core.report" in modules and "gccs_core.attacks.native" in modules
    code = ("import importlib, sys, json\nfailed = {}\n"
            f"for name in {modules!r}:\n"
            "    for m in [m for m in sys.modules if m == 'gccs_core' or m.startswith('gccs_core.')]:\n"
            "        del sys.modules[m]\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except Exception as err:\n        failed[name] = repr(err)\n"
            "print(json.dumps(failed))")
    assert json.loads(_run(code)) == {}


def test_no_module_imports_a_package_face() -> None:
    """``from . import X`` (or ``from .. import X``) inside gccs_core must name a submodule, never a name defined
    in a package's ``__init__``: that would be a reach up to the face, which imports everything below it."""
    bad = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level >= 1 and not node.module:
                package = path.parents[node.level - 1]
            elif node.level == 0 and node.module == "gccs_core":
                package = PACKAGE
            else:
                continue
            children = {p.stem for p in package.glob("*.py")} | {p.name for p in package.iterdir() if p.is_dir()}
            bad += [f"{path.relative_to(ROOT)}: {a.name}" for a in node.names if a.name not in children]
    assert bad == []


def test_app_imports_no_torch_and_no_numerics_libraries_directly() -> None:
    """The app hands arrays from the library to figures: no file in app/ imports torch (or torchvision) itself."""
    bad = []
    for path in (ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("torch", "torchvision")]
    assert bad == []


def test_set_torch_threads_reads_the_environment_and_refuses_bad_values() -> None:
    out = _run("import os, torch\nfrom gccs_core.models import set_torch_threads\n"
               "os.environ['GCCS_TORCH_THREADS'] = '1'\nprint(set_torch_threads(), torch.get_num_threads())\n"
               "print(set_torch_threads(2), torch.get_num_threads())\n"
               "os.environ['GCCS_TORCH_THREADS'] = 'many'\n"
               "try:\n    set_torch_threads()\nexcept ValueError as e:\n    print('refused', 'many' in str(e))\n"
               "try:\n    set_torch_threads(0)\nexcept ValueError as e:\n    print('refused', 'threads=0' in str(e))\n")
    assert out.split() == ["1", "1", "2", "2", "refused", "True", "refused", "True"]
