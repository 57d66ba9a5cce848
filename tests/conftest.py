"""Shared test fixtures. Tests run on CPU with the ``tiny`` variant unless they say otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (benchmarks + training images); tests that need it skip with the reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not found (it sits beside the repository in CI)")
    return SHARED_DATA
