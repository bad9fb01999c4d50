"""The GCCS study: every reading of GCCS and CE on one recipe, two scales, three seeds, an AT arm, and two
evaluation protocols (2020-style weak, adaptive strong) with paired intervals.

``python -m gccs_core.study run [--quick] [--out DIR] [--ray ADDRESS] [--workers K]`` reproduces it; the
runner is resumable (see runner.py). Modules: config (grid, recipe, keys), plan (jobs and their order),
protocols and autoattack (the evaluations), jobs (one job), store (result files), runner (scheduling),
results and report (results.json, per_example.json, study.md).
"""

from .config import StudyConfig
from .main import run_study

__all__ = ["StudyConfig", "run_study"]
