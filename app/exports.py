"""Downloads: a figure as offline HTML, and the numbers behind it as CSV and NPZ (``gccs_core.views`` tables).

The files are built only when a button is clicked (deferred ``data``) and a click does not rerun the page
(``on_click="ignore"``); the buttons live in a fragment so redrawing them never redraws the page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app import figures
from gccs_core.views import table_csv, table_npz


@st.fragment
def download_row(key: str, figure: go.Figure, table: Callable[[], Mapping[str, np.ndarray]], stem: str) -> None:
    """'Download HTML', 'CSV' and 'NPZ' buttons for one figure; ``table`` builds its columns when asked."""
    row = st.container(horizontal=True)  # each button as wide as its label: "Download HTML" is never cut to "D…"
    row.download_button("Download HTML", lambda: figures.figure_html(figure, stem), file_name=f"{stem}.html",
                        mime="text/html", key=f"{key}_html", on_click="ignore", icon=":material/download:",
                        help="The interactive figure as one HTML file that works offline (plotly.js inside).")
    row.download_button("CSV", lambda: table_csv(table()), file_name=f"{stem}.csv", mime="text/csv",
                        key=f"{key}_csv", on_click="ignore", help="The plotted coordinates, one row per point.")
    row.download_button("NPZ", lambda: table_npz(table()), file_name=f"{stem}.npz", mime="application/octet-stream",
                        key=f"{key}_npz", on_click="ignore", help="The same columns as numpy arrays (np.load).")


@st.fragment
def html_button(key: str, figure: go.Figure, stem: str) -> None:
    """One 'Download HTML' button for a chart (offline, interactive; plotly.js inside)."""
    st.download_button("Download HTML", lambda: figures.figure_html(figure, stem), file_name=f"{stem}.html",
                       mime="text/html", key=f"{key}_html", on_click="ignore", icon=":material/download:",
                       help="The interactive chart as one HTML file that works offline (plotly.js inside).")


@st.fragment
def file_button(key: str, label: str, data: Callable[[], bytes | str], file_name: str, mime: str, help: str) -> None:
    """One download button whose file is built only when clicked; the click does not rerun the page."""
    st.download_button(label, data, file_name=file_name, mime=mime, key=key, on_click="ignore",
                       icon=":material/download:", help=help)


png_bytes = figures.png_bytes  # the one PNG encoder (figures needs it too, and exports imports figures)
