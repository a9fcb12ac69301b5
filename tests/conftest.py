"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cpu_kernel_path() -> str:
    """Path of the compiled CPU kernel (built on first use)."""
    from dimaskdino.ops.build import load_cpu_extension

    return load_cpu_extension().__file__


@pytest.fixture(scope="session")
def golden_fixtures() -> Path:
    """The official implementation's golden outputs: ``$DIMASK_FIXTURES`` or ../shared/fixtures."""
    candidates = [os.environ.get("DIMASK_FIXTURES"), REPO.parent / "shared" / "fixtures"]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "README.md").exists():
            return Path(candidate)
    pytest.skip("golden fixtures not found: set DIMASK_FIXTURES to the shared fixtures folder "
                "(expected at ../shared/fixtures)")
