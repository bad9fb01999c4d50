"""Session and URL state of the app, and the layout switches that depend on it (teacher mode).

``URL_STATE`` is the one table of the settings a link carries: key -> type. ``state_from_url`` seeds
session state from the query string with those types, ``state_to_url`` writes them back, so a teacher
can share exactly the view on screen.
"""

from __future__ import annotations

import os
from typing import Any

import streamlit as st

FAST = os.environ.get("GCCS_APP_FAST", "") == "1"
"""Tiny sizes for tests (fewer samples, no UMAP warm-up)."""

URL_STATE: dict[str, type] = {
    "dataset": str, "left": str, "right": str, "method": str, "dim": int, "teacher": bool, "attack": str,
    "eps": float, "steps": int, "objective": str, "target": int, "samples": str, "sample_class": int,
    "n_samples": int, "plane_y": int, "plane_t": int, "norm": str, "transfer": str, "protocol": str,
}
"""Session-state keys mirrored in the URL query string, with their types."""
PERSISTENT_PREFIXES = ("tr_",)
"""Widget keys kept across pages besides ``URL_STATE`` (the Train form)."""
TRUE_TEXTS = ("1", "true", "True")


def _parse(kind: type, text: str) -> Any:
    """``text`` from the URL as a ``kind`` value; raises ``ValueError`` for a malformed number."""
    if kind is bool:
        return text in TRUE_TEXTS
    return kind(text)


def state_from_url() -> None:
    """Seed session state from the query string (only keys not set yet in this session; bad numbers ignored)."""
    if st.session_state.get("_url_loaded"):
        return
    st.session_state["_url_loaded"] = True
    for key, kind in URL_STATE.items():
        if key in st.query_params and key not in st.session_state:
            try:
                st.session_state[key] = _parse(kind, st.query_params[key])
            except ValueError:
                continue


def state_to_url() -> None:
    """Write the current values of ``URL_STATE`` into the query string."""
    for key in URL_STATE:
        if key in st.session_state and st.session_state[key] is not None:
            value = st.session_state[key]
            text = ("1" if value else "0") if isinstance(value, bool) else str(value)
            if st.query_params.get(key) != text:
                st.query_params[key] = text


ATTACK_PRESET_DEFAULTS: dict[str, Any] = {"norm": "linf", "transfer": "none"}
"""What an attack preset (``autorun_attack``) runs in unless it says otherwise: the L-inf ball, white-box (a
preset's eps is an L-inf radius; the user's last L2 or transfer choice must not change its meaning)."""


def set_pending(**values: Any) -> None:
    """Change widget-backed state on the next run (a widget's key cannot change after it is drawn)."""
    if values.get("autorun_attack"):
        values = {**ATTACK_PRESET_DEFAULTS, **values}
    st.session_state.setdefault("_pending", {}).update(values)


def apply_pending() -> None:
    """Apply ``set_pending`` values; call before any widget is drawn."""
    for key, value in st.session_state.pop("_pending", {}).items():
        st.session_state[key] = value


def keep_state() -> None:
    """Keep widget values across pages: Streamlit drops the state of a widget that a run does not draw
    (another page, or the hidden sidebar in teacher mode); re-assigning detaches it from that clean-up."""
    for key in list(st.session_state.keys()):
        if key in URL_STATE or key.startswith(PERSISTENT_PREFIXES):
            st.session_state[key] = st.session_state[key]


def plane_pair() -> tuple[int, int]:
    """The decision plane's classes (true class y, other class t) chosen in the sidebar."""
    return int(st.session_state.get("plane_y", 3)), int(st.session_state.get("plane_t", 8))


def busy() -> bool:
    """True while this session trains a model: the controls that would disturb it are locked."""
    return bool(st.session_state.get("training", False))


def teacher() -> bool:
    return bool(st.session_state.get("teacher", False))


def plot_height() -> int:
    return 720 if teacher() else 520


def controls(label: str = "Controls") -> Any:
    """Container for a page's controls: folded away in teacher mode."""
    return st.expander(label, expanded=False) if teacher() else st.container()


def show_error(err: BaseException, what: str) -> None:
    """A clear one-line message instead of a traceback."""
    st.error(f"{what}: {err}")
