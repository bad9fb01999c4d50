"""The dependency declarations agree: requirements.txt (what `make run` installs) and pyproject.toml (what
`pip install .[app]` installs) give the same bounds, test tools stay out of the runtime, and the Streamlit
floor is the one `make floor-test` checks."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _reqs(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            name = re.match(r"[A-Za-z0-9_.\-]+", line).group(0).lower()
            out[name] = line[len(name):].replace(" ", "")
    return out


def test_requirements_and_pyproject_give_the_same_bounds():
    runtime = _reqs((ROOT / "requirements.txt").read_text().splitlines())
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _reqs(meta["dependencies"] + [d for extra in meta["optional-dependencies"].values() for d in extra])
    for name in ("torch", "torchvision", "numpy", "streamlit", "plotly", "pandas", "safetensors", "umap-learn",
                 "streamlit-drawable-canvas", "adversarial-robustness-toolbox"):
        assert runtime[name] == declared[name], (name, runtime[name], declared[name])
    assert runtime["plotly"] == ">=7.0,<8"  # one major version: app/figures.py uses two private attributes


def test_test_tools_are_not_runtime_requirements():
    runtime = _reqs((ROOT / "requirements.txt").read_text().splitlines())
    dev = _reqs((ROOT / "requirements-dev.txt").read_text().splitlines())
    for tool in ("pytest", "hypothesis", "playwright", "ruff"):
        assert tool not in runtime and tool in dev
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()


def test_the_streamlit_floor_is_the_one_make_floor_test_installs():
    floor = _reqs((ROOT / "requirements.txt").read_text().splitlines())["streamlit"]
    assert re.fullmatch(r">=\d+\.\d+(\.\d+)?", floor), floor
    makefile = (ROOT / "Makefile").read_text()
    assert "floor-test:" in makefile and "streamlit==$(STREAMLIT_FLOOR)" in makefile
    assert "sed -n 's/^streamlit>=" in makefile  # the floor is read from requirements.txt, not typed twice
