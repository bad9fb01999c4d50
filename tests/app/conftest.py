"""Fixtures of the app tests: tiny pretrained models made once per test session, empty Streamlit caches per test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from apptest import make_pretrained, set_env


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``digits-gccs`` and ``digits-ce`` (2 epochs, 300 digits) with projections and a report; the app's env points at them."""
    folder = tmp_path_factory.mktemp("pretrained")
    set_env(folder, tmp_path_factory.mktemp("user_models"))
    return make_pretrained(folder)


@pytest.fixture(autouse=True)
def clear_caches() -> Any:
    """Streamlit caches are process-global: start every test from empty caches."""
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    yield
