"""The ``dimask`` command line: help, version, and the kernel build command."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from dimaskdino import __version__
from dimaskdino.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"dimask {__version__}"


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "build-ops" in result.output


def test_build_ops_reports_the_cached_kernel(cpu_kernel_path):
    from dimaskdino.ops.build import load_mask_extension

    result = runner.invoke(app, ["build-ops"])
    assert result.exit_code == 0
    assert cpu_kernel_path in result.output
    assert f"mask encoder: {load_mask_extension().__file__}" in result.output


def test_build_ops_without_compiler_is_one_line_and_nonzero(tmp_path):
    env = {**os.environ, "CXX": "no-such-compiler-xyz", "DIMASK_EXTENSIONS_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "dimaskdino", "build-ops"],
                            capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: no C++ compiler found ('no-such-compiler-xyz' is not on PATH): install g++ "
        "(e.g. `apt-get install g++`) or set CXX"
    ]
    assert "Traceback" not in result.stdout + result.stderr
