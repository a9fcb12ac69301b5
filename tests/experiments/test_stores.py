"""Tracking stores dimask cannot use (not a store, another schema, locked): one line naming
the store and what to do, exit 1, nothing written, from ``report`` and ``run-ablation``."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from dimaskdino.cli import app
from dimaskdino.experiments import tracking

runner = CliRunner()


@pytest.fixture(scope="module")
def fresh_store(tmp_path_factory) -> Path:
    """An empty MLflow store of this MLflow's schema (made once: migrations take seconds)."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def _text_file(folder: Path, fresh: Path) -> Path:
    path = folder / "mlflow.db"
    path.write_text("these are my notes, not a database\n")
    return path


def _foreign_database(folder: Path, fresh: Path) -> Path:
    path = folder / "mlflow.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes (line TEXT)")
        db.commit()
    return path


def _other_schema(folder: Path, fresh: Path) -> Path:
    """An MLflow store whose recorded schema version is not this MLflow's."""
    path = Path(shutil.copy(fresh, folder / "mlflow.db"))
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE alembic_version SET version_num = 'a0b1c2d3e4f5'")
        db.commit()
    return path


CASES = {
    "text file": (_text_file, "is not an MLflow store (not a SQLite database); move it away "
                              "or give another --tracking-uri"),
    "foreign database": (_foreign_database, "is a SQLite database without MLflow's tables"),
    "other schema": (_other_schema, "has schema version a0b1c2d3e4f5, MLflow"),
}
COMMANDS = {
    "report": lambda folder, uri: ["report", "--all", "--tracking-uri", uri, "--out",
                                   str(folder / "report.html")],
    "run-ablation": lambda folder, uri: ["run-ablation", "gtg", "--tracking-uri", uri,
                                         "--out", str(folder / "out"), "--quiet"],
    "run-ablation default store": lambda folder, uri: ["run-ablation", "gtg", "--quiet", "--out",
                                                       str(folder)],
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"/"
            for p in folder.rglob("*")}


def _refused(folder: Path, args: list[str], store: Path) -> str:
    """Run ``args``; the one error line (checked: exit 1, nothing written anywhere)."""
    before = _snapshot(folder)
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(store) in lines[0]
    assert _snapshot(folder) == before
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", CASES)
def test_unusable_store_is_one_line_and_nothing_written(tmp_path, fresh_store, case, command):
    make, message = CASES[case]
    store = make(tmp_path, fresh_store)
    line = _refused(tmp_path, COMMANDS[command](tmp_path, f"sqlite:///{store}"), store)
    assert message in line
    if case == "other schema":
        assert f"run `mlflow db upgrade sqlite:///{store}`" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_locked_store_is_one_line_and_nothing_written(tmp_path, fresh_store, monkeypatch,
                                                      command):
    monkeypatch.setattr(tracking, "LOCK_WAIT_S", 0.2)
    store = Path(shutil.copy(fresh_store, tmp_path / "mlflow.db"))
    with contextlib.closing(sqlite3.connect(store, isolation_level=None)) as holder:
        holder.execute("BEGIN EXCLUSIVE")  # another process mid-write, for longer than 0.2 s
        line = _refused(tmp_path, COMMANDS[command](tmp_path, f"sqlite:///{store}"), store)
        holder.execute("ROLLBACK")
    assert "is locked by another process" in line and "rerun when it has finished" in line


def test_a_file_where_a_store_folder_belongs(tmp_path):
    store = tmp_path / "mlruns"
    store.write_text("not a folder")
    line = _refused(tmp_path, COMMANDS["report"](tmp_path, str(store)), store)
    assert "is a file, not an MLflow store folder" in line


def test_a_usable_store_passes(tmp_path, fresh_store):
    store = tmp_path / "mlflow.db"
    uri = f"sqlite:///{store}"
    tracking.check_store(uri, write=True)  # missing: fine, MLflow creates it
    shutil.copy(fresh_store, store)
    before = store.read_bytes()
    tracking.check_store(uri, write=True)
    assert store.read_bytes() == before
    (tmp_path / "empty.db").touch()  # an empty file is an empty SQLite database
    tracking.check_store(f"sqlite:///{tmp_path / 'empty.db'}", write=True)
