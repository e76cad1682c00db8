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


def _on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On CI, a test that needs the real data (when ../shared is there) or the real Siril
    and skips is a failure: CI installs Siril, so a skip there means something broke."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and _on_ci()):
        return
    fixtures = getattr(item, "fixturenames", ())
    if "real_data" in fixtures and REAL.is_dir():
        report.outcome = "failed"
        report.longrepr = f"skipped on CI although {REAL} exists: {report.longrepr}"
    elif "siril_home" in fixtures:
        report.outcome = "failed"
        report.longrepr = f"skipped on CI, where the real Siril must run: {report.longrepr}"
