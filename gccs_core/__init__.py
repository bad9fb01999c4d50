"""gccs_core: the Gaussian class-conditional simplex (GCCS) loss, its peers, models, training,
checkpoints, attacks and robustness evaluation, in PyTorch."""

__version__ = "0.1.0"

from .checkpoint import CheckpointError, load_metadata, load_model, save_model  # noqa: E402
from .data import DATASETS, Dataset, load_dataset  # noqa: E402
from .losses import LOSSES, CenterLoss, CrossEntropyLoss, GCCSLoss, LatentLoss, MMCLoss, build_loss  # noqa: E402
from .models import LatentClassifier, ModelSpec, build_model  # noqa: E402
from .simplex import edge_length, pairwise_bayes_error, simplex_vertices  # noqa: E402
from .train import Callback, TrainConfig, TrainingDiverged, TrainResult, train  # noqa: E402

__all__ = [
    "__version__", "CheckpointError", "load_metadata", "load_model", "save_model", "DATASETS", "Dataset",
    "load_dataset", "LOSSES", "CenterLoss", "CrossEntropyLoss", "GCCSLoss", "LatentLoss", "MMCLoss", "build_loss",
    "LatentClassifier", "ModelSpec", "build_model", "edge_length", "pairwise_bayes_error", "simplex_vertices",
    "Callback", "TrainConfig", "TrainingDiverged", "TrainResult", "train",
]
