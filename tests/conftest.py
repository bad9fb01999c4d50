"""Shared fixtures: small models trained once per test session on real digits (seconds on a CPU)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".numba_cache"))
# One thread: small models gain nothing from more, and OpenMP spin-waits make oversubscribed runs crawl.
torch.set_num_threads(1)


def _train_digits(loss: str, epochs: int = 8):
    from gccs_core import TrainConfig, train

    return train(TrainConfig(dataset="digits", loss=loss, epochs=epochs, seed=0, device="cpu")).model


@pytest.fixture(scope="session")
def digits_gccs_model():
    """MLP + GCCS on scikit-learn digits, eval mode."""
    return _train_digits("gccs")


@pytest.fixture(scope="session")
def digits_ce_model():
    """MLP + cross-entropy on scikit-learn digits, eval mode."""
    return _train_digits("ce")


@pytest.fixture(scope="session")
def digits_test():
    from gccs_core import load_dataset

    return load_dataset("digits", "test")
