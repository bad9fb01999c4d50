"""Helpers for the app tests (tests/app/, tests/system/): tiny pretrained models (GCCS + cross-entropy on
digits) with their shipped projections and a robustness report, made with the real library; running the
app in AppTest; reading plotly specs out of it. The fixtures are in tests/app/conftest.py."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app" / "main.py")
TIMEOUT = 90


def make_pretrained(folder: Path) -> dict[str, Path]:
    """Train ``digits-gccs`` and ``digits-ce`` for 2 epochs on 300 digits; write projections and one report."""
    from gccs_core import TrainConfig, load_dataset, train
    from gccs_core.checkpoint import MODEL_FILE
    from gccs_core.evaluate import evaluate_robustness, save_report
    from scripts.make_projections import make_projection

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for loss in ("gccs", "ce"):
        cfg = TrainConfig(dataset="digits", loss=loss, epochs=2, limit_train=300, batch_size=100, seed=0, device="cpu")
        res = train(cfg, out_dir=folder / f"run-{loss}")
        path = folder / f"digits-{loss}.safetensors"
        (folder / f"run-{loss}" / MODEL_FILE).rename(path)
        make_projection(path, folder / "projections", umap=False)
        paths[loss] = path
        if loss == "gccs":
            data = load_dataset("digits", "test", limit=40)
            rep = evaluate_robustness(res.model.eval(), data.x, data.y, [0.0, 0.1], steps=3, attacks=["fgsm", "pgd-ce"],
                                      min_l2=None)
            save_report(rep, folder / "robustness" / "digits-gccs.json")
    return paths


def set_env(pretrained: Path, user_models: Path) -> None:
    os.environ["GCCS_PRETRAINED_DIR"] = str(pretrained)
    os.environ["GCCS_USER_MODELS"] = str(user_models)
    os.environ["GCCS_APP_FAST"] = "1"
    os.environ["GCCS_APP_WARM"] = "0"
    os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))


def specs(at: Any) -> list[dict[str, Any]]:
    """Every plotly figure on the page, as parsed JSON."""
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def spec_by_trace(at: Any, name: str) -> dict[str, Any]:
    """The first figure holding a trace called ``name``."""
    for s in specs(at):
        if any(d.get("name") == name for d in s["data"]):
            return s
    raise AssertionError(f"no figure with a trace named {name!r}; figures: {[names(s) for s in specs(at)]}")


def names(spec: dict[str, Any]) -> list[str]:
    return [d.get("name") for d in spec["data"]]


def trace(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in spec["data"] if d.get("name") == name)


def arr(value: Any) -> np.ndarray:
    """A plotly array: a list, or a typed-array spec ``{"dtype": "f4", "bdata": ...}``."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return out.reshape(value["shape"]) if "shape" in value and isinstance(value["shape"], list) else out
    return np.asarray([np.nan if v is None else v for v in value], dtype=float)


def wait_training(at: Any, timeout: float = 120.0) -> Any:
    """Wait for the Train page's worker thread to end, then rerun the Train page (what its fragment does once a
    second; AppTest reruns the page it was told, not one the app switched to)."""
    job = at.session_state["train_job"] if "train_job" in at.session_state else None
    if job is not None:
        job.thread.join(timeout)
        assert not job.thread.is_alive(), f"training did not end within {timeout:.0f} s"
    return at.switch_page("app_pages/train.py").run()


def url(at: Any, key: str) -> str:
    """The app's URL parameter ``key`` as the browser sees it (AppTest before Streamlit 1.6x gives a list)."""
    value = at.query_params[key]
    return value[-1] if isinstance(value, list) else value


def errors(at: Any) -> list[str]:
    return [e.value for e in at.error]


def run_app(query: dict[str, str] | None = None, page: str | None = None) -> Any:
    """Run the app (optionally with a query string, then switch to ``page``) and return the AppTest."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    return at
