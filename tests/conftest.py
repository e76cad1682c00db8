"""Shared fixtures: scenes, the real-data folder, and quiet TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture
def real_data() -> Path:
    """The read-only real images beside the checkout; skip when absent."""
    if not REAL.is_dir():
        pytest.skip("../shared/data/real is not available")
    return REAL
