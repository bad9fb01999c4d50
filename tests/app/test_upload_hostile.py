"""Hostile checkpoint files through the app's upload box and the whole app (the corpus of tests/test_fuzz_checkpoints.py).

Every file gets one clear message in the page, never an exception; nothing is registered; the app stays usable.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from apptest import errors, names, run_app, specs
from test_fuzz_checkpoints import MAY_LOAD, corpus, good_model_bytes

FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[tuple[str, bytes]], Path]:
    tmp = tmp_path_factory.mktemp("fuzz")
    marker = tmp / "PWNED"
    return corpus(tmp, str(marker)), marker


def _upload_script() -> None:
    """The app's real upload box, alone (AppTest runs this function as a Streamlit script)."""
    import streamlit as st

    from app.upload import upload_box

    upload_box()
    st.write("uploads: " + ",".join(sorted(st.session_state.get("uploads", {}))))


def test_app_upload_refuses_every_hostile_file(hostile: tuple[list[tuple[str, bytes]], Path]) -> None:
    """Every file through the app's uploader widget: a clear st.error, never an exception, nothing registered."""
    from streamlit.testing.v1 import AppTest

    files, marker = hostile
    files = files + [("over-the-20MB-limit", good_model_bytes_cached() + b"\x00" * (21 * 1024 * 1024))]
    at = AppTest.from_function(_upload_script, default_timeout=60)
    at.run()
    t0 = time.perf_counter()
    shown: dict[str, str] = {}
    loaded = []
    def registered() -> set[str]:
        return set(at.session_state["uploads"]) if "uploads" in at.session_state else set()

    for name, data in files:
        before = registered()
        at.file_uploader(key="upload_file").set_value((f"{name}.safetensors", data, "application/octet-stream")).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        errors = [e.value for e in at.error]
        if name.startswith(MAY_LOAD) and not errors:
            loaded.append(name)
            continue
        assert len(errors) == 1 and errors[0].startswith(f"Could not use {name}.safetensors: "), (name, errors)
        assert registered() == before, (name, registered() - before)
        shown[name] = errors[0]
    assert not marker.exists(), "a pickle payload ran"
    assert "limit is 20 MB" in shown["over-the-20MB-limit"]
    assert "NaN or inf" in shown["nonfinite-nan-encoder.1.weight"]
    assert "imagenet" in shown["dataset-imagenet"] and "has (1, 28, 28)" in shown["dataset-mnist5k"]
    # the same session still accepts a good file afterwards
    at.file_uploader(key="upload_file").set_value(("good.safetensors", good_model_bytes_cached(), "application/octet-stream"))
    at.run()
    assert not at.exception and not at.error
    assert any(m.value.startswith("uploads: upload:") for m in at.markdown)
    FIGURES["app_upload"] = {"files": len(files), "crashes": 0, "refused": len(shown), "loaded": len(loaded),
                             "seconds": round(time.perf_counter() - t0, 1)}
    print("\napp upload fuzz:", FIGURES["app_upload"])


_GOOD: dict[str, bytes] = {}


def good_model_bytes_cached() -> bytes:
    if "good" not in _GOOD:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            _GOOD["good"] = good_model_bytes(Path(d))
    return _GOOD["good"]


def test_the_whole_app_stays_usable_after_a_volley_of_hostile_uploads(
    hostile: tuple[list[tuple[str, bytes]], Path], pretrained: dict[str, Path]
) -> None:
    """The real app (AppTest of app/main.py): one file of every kind, then a good upload that is drawn."""
    files, marker = hostile
    kinds = ("empty", "truncated-at-", "header-declares-", "real-2MB-header", "deeply-nested", "offsets-", "descriptor-",
             "shape-", "dtype-", "nonfinite-", "info-", "spec-", "dataset-", "pickle-", "torch-save", "random-", "numpy")
    volley = [next((n, d) for n, d in files if n.startswith(k)) for k in kinds]
    at = run_app()
    at.toggle(key="show_upload").set_value(True).run()  # the sidebar draws the uploader on request
    for name, data in volley:
        at.file_uploader(key="upload_file").set_value((f"{name}.safetensors", data, None)).run()
        assert not at.exception, (name, at.exception)
        assert any(e.startswith(f"Could not use {name}.safetensors") for e in errors(at)), (name, errors(at))
        assert len(specs(at)) == 2, name  # both latent plots still drawn
    assert not marker.exists()
    at.file_uploader(key="upload_file").set_value(("mine.safetensors", pretrained["gccs"].read_bytes(), None)).run()
    assert not at.exception and not errors(at)
    assert at.session_state["right"].startswith("upload:")
    assert sum("simplex vertices" in names(s) for s in specs(at)) == 2
