"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture
def cpu_kernel_path() -> str:
    """Path of the compiled CPU kernel (built on first use)."""
    from dimaskdino.ops.build import load_cpu_extension

    return load_cpu_extension().__file__
