"""gccs_core: the Gaussian class-conditional simplex (GCCS) loss, its peers, models, training,
checkpoints, attacks and robustness evaluation, in PyTorch.

The package face is lazy (PEP 562): ``import gccs_core`` loads no torch, so the torch-free modules
(``gccs_core.files``, ``gccs_core.validation``, ``gccs_core.report``) can be imported alone; ``gccs_core.load_model`` and the
other names below are imported from their module the first time they are used.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from ._version import __version__

_EXPORTS: dict[str, str] = {
    "CheckpointError": "checkpoint", "load_metadata": "checkpoint", "load_model": "checkpoint",
    "load_model_with_metadata": "checkpoint", "save_model": "checkpoint",
    "DATASETS": "data", "Dataset": "data", "load_dataset": "data",
    "LOSSES": "losses", "CenterLoss": "losses", "CrossEntropyLoss": "losses", "GCCSLoss": "losses",
    "LatentLoss": "losses", "MMCLoss": "losses", "build_loss": "losses",
    "LatentClassifier": "models", "ModelSpec": "models", "build_model": "models",
    "edge_length": "simplex", "pairwise_bayes_error": "simplex", "simplex_vertices": "simplex",
    "Callback": "train", "StopRequest": "train", "TrainConfig": "train", "TrainingDiverged": "train",
    "TrainResult": "train", "train": "train",
}

__all__ = ["__version__", *_EXPORTS]

def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gccs_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Face(types.ModuleType):
    """Keeps ``gccs_core.train`` the function: importing the submodule of the same name must not rebind it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return  # the submodule stays reachable as sys.modules["gccs_core.<name>"]
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Face
