"""``dimask report``: a written page, and one-line errors that write nothing."""

from __future__ import annotations

import pytest
import typer
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from dimaskdino.cli.report import report

runner = CliRunner()
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command("report")(report)


@app.callback()
def _root() -> None:
    """The report command alone, as ``dimask`` registers it."""


def _invoke(*args: str):
    return runner.invoke(app, ["report", *args])


@pytest.mark.slow
def test_report_command_writes_the_page(store, tmp_path):
    out = tmp_path / "site" / "ablations.html"
    result = _invoke("--all", "--tracking-uri", store, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"report: {out}" in result.stdout
    assert out.is_file() and (tmp_path / "site" / "ablations_files" / "figure-1.png").is_file()
    assert _invoke("--study", "modules", "--tracking-uri", store, "--out", str(out),
                   "--quiet").stdout == ""


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> str:
    """A store with no experiment but MLflow's default one."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('empty') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


def _modules_store(case: tuple):
    return pytest.param("modules store", *case, marks=pytest.mark.slow)


@pytest.mark.parametrize("case, args, message", [
    ("empty store", ["--all"], "no finished runs of any study in"),
    ("empty store", ["--study", "gtg"], "no finished runs of study gtg in"),
    ("empty store", ["--study", "nope"], "unknown study 'nope'"),
    ("empty store", [], "give --study NAME or --all"),
    ("empty store", ["--study", "gtg", "--all"], "not both"),
    ("missing store", ["--all"], "no MLflow store at"),
    _modules_store((["--study", "gtg"], "(finished studies there: modules)")),
    _modules_store((["--study", "gtg"], "no finished runs of study gtg")),
])
def test_nothing_to_report_is_one_line(request, tmp_path, case, args, message):
    uri = {"empty store": lambda: request.getfixturevalue("empty_store"),
           "modules store": lambda: request.getfixturevalue("store"),
           "missing store": lambda: f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"}[case]()
    out = tmp_path / "report.html"
    result = _invoke(*args, "--tracking-uri", uri, "--out", str(out))
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists() and not (tmp_path / "report_files").exists()
    assert not (tmp_path / "none").exists()


def test_default_store_is_not_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke("--all")
    assert result.exit_code == 1 and "no MLflow store at" in result.stderr
    assert list(tmp_path.iterdir()) == []
