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


def _ci_with_real_data() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") and REAL.is_dir()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On CI with the real data present, a real-data test that skips is a failure."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and "real_data" in getattr(item, "fixturenames", ()) and _ci_with_real_data():
        report.outcome = "failed"
        report.longrepr = f"skipped on CI although {REAL} exists: {report.longrepr}"
