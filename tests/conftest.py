"""Shared test fixtures. Tests run on CPU with the ``tiny`` variant unless they say otherwise."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (benchmarks + training images); tests that need it skip with the reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not found (it sits beside the repository in CI)")
    return SHARED_DATA



# PyTorch and onnx come with the torch/export extras: the device side installs without them. A test module that
# imports one (tinymodels imports torch) then cannot be collected; report it as skipped, with what to install,
# instead of as a collection error, so `pytest` on a device install (scripts/foreign_check.sh) runs the rest.
_EXTRAS = {"torch": "PyTorch (the torch extra: pip install torch==2.13.0 '.[torch]')",
           "onnx": "onnx (the export extra: pip install '.[export]')"}
_MISSING = {name: why for name, why in _EXTRAS.items() if importlib.util.find_spec(name) is None}


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if report.failed and isinstance(collector, pytest.Module):
        for name, why in _MISSING.items():
            if f"No module named '{name}'" in str(report.longrepr):
                report.outcome = "skipped"
                report.longrepr = (str(collector.path), None, f"Skipped: needs {why}")
                break


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """The same for a test or fixture that imports one of them inside (hostile.onnx_graph builds graphs with onnx)."""
    outcome = yield
    report = outcome.get_result()
    error = call.excinfo.value if call.excinfo is not None else None
    if report.failed and isinstance(error, ModuleNotFoundError) and error.name in _MISSING:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1], f"Skipped: needs {_MISSING[error.name]}")


@pytest.fixture
def needs_torch():
    """For tests that run a command needing PyTorch (it exits 2 naming the install rather than raising)."""
    if "torch" in _MISSING:
        pytest.skip(f"needs {_MISSING['torch']}")
