"""One study, one writer: the --out lock, stale locks, concurrent and interrupted
``run-ablation`` invocations."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from dimaskdino.experiments.lock import LOCK_NAME, LockedError, exclusive
from dimaskdino.experiments.tracking import sqlite_uri
from tests.engine.test_trainer import dimask
from tests.experiments.test_run import _cli_args


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with exclusive(tmp_path, print) as path:
        record = json.loads(path.read_text())
        with pytest.raises(LockedError, match=f"in use by PID {record['pid']} on "
                                              f"{socket.gethostname()}"), \
                exclusive(tmp_path, print):
            pass
    assert path.read_text() == ""  # released: empty, never deleted
    with exclusive(tmp_path, print):  # free again
        pass


def test_the_stale_lock_of_a_dead_process_is_taken_over_with_one_line(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps(
        {"host": "elsewhere", "pid": dead.pid, "since": "2026-01-01 00:00:00 UTC"}))
    lines: list[str] = []
    with exclusive(tmp_path, lines.append) as path:
        assert json.loads(path.read_text())["pid"] != dead.pid
    assert len(lines) == 1 and f"PID {dead.pid} on elsewhere" in lines[0]
    assert "stale" in lines[0]


def _runs(out, role):
    client = MlflowClient(sqlite_uri(out))
    experiment = client.get_experiment_by_name("gtg").experiment_id
    return client.search_runs([experiment], f"tags.role = '{role}'")


@pytest.mark.slow
def test_two_concurrent_invocations_one_proceeds(tmp_path, micro_overrides):
    out = tmp_path / "out"
    first, second = (dimask(*_cli_args(out)) for _ in range(2))
    results = [(p.wait(timeout=600), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    _, _, refused = next(r for r in results if r[0] == 1)
    assert len(refused.strip().splitlines()) == 1 and "is in use by PID" in refused, refused
    children = _runs(out, "cell")
    assert sorted(r.data.tags["cell"] for r in children) == ["with-gtg", "without-gtg"]
    assert {r.info.status for r in children} == {"FINISHED"}
    assert [r.info.status for r in _runs(out, "parent")] == ["FINISHED"]


@pytest.mark.slow
def test_sigterm_marks_the_runs_killed_and_a_rerun_resumes(tmp_path, micro_overrides):
    out = tmp_path / "out"
    process = dimask(*_cli_args(out))
    metrics = out / "gtg" / "tiny" / "without-gtg" / "seed0" / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 143, err
    assert err.strip().startswith("interrupted: SIGTERM") and "rerun" in err, err
    (parent,) = _runs(out, "parent")
    killed = _runs(out, "cell")  # the interrupted cell, and the one it never reached
    assert [parent.info.status, *(r.info.status for r in killed)] == ["KILLED"] * 3
    assert (out / LOCK_NAME).read_text() == ""

    rerun = dimask(*_cli_args(out))
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read()
    children = _runs(out, "cell")
    assert sorted(r.data.tags["cell"] for r in children) == ["with-gtg", "without-gtg"]
    assert {r.info.run_id for r in children} == {r.info.run_id for r in killed}  # resumed
    assert {r.info.status for r in children} == {"FINISHED"}
    assert sorted(r.info.status for r in _runs(out, "parent")) == ["FINISHED", "KILLED"]
