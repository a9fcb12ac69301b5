"""Signals: SIGINT / SIGTERM end training after the current iteration with a checkpoint at
it, ``--resume`` continues bitwise, a second signal aborts at once, every rank agrees."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dimaskdino.engine.checkpointer import last_checkpoint, read_checkpoint
from dimaskdino.engine.interrupt import Interrupted, StopRequest, abort_on_signals
from tests.engine.test_trainer import dimask, final_weights


def test_first_signal_is_recorded_a_second_one_raises():
    previous = signal.getsignal(signal.SIGUSR1)
    with StopRequest((signal.SIGUSR1,)) as stop:
        assert stop.agreed() == 0
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.agreed() == signal.SIGUSR1
        with pytest.raises(Interrupted) as raised:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(1)  # the handler runs before this returns
    assert raised.value.checkpoint is None and raised.value.exit_code == 128 + signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is previous


def test_abort_on_signals_turns_sigterm_into_an_exception():
    with pytest.raises(Interrupted) as raised, abort_on_signals((signal.SIGUSR1,)):
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(1)
    assert raised.value.signum == signal.SIGUSR1


def iterations_logged(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    text = path.read_text() if path.is_file() else ""
    return [json.loads(line)["iteration"] for line in text.splitlines()
            if "loss" in json.loads(line)]


def wait_for_iteration(run: Path, process, iteration: int) -> None:
    deadline = time.monotonic() + 600
    while len(iterations_logged(run)) < iteration:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.slow
def test_signal_at_a_random_iteration_then_resume_equals_the_straight_run(
        tmp_path, micro_overrides):
    overrides = [*micro_overrides, "solver.max_iter=10", "solver.checkpoint_period=0"]
    straight = dimask("train", "--quiet", "--out", str(tmp_path / "straight"), *overrides)
    assert straight.wait(timeout=600) == 0, straight.stderr.read()
    expected = final_weights(tmp_path / "straight")
    for signum in (signal.SIGINT, signal.SIGTERM):
        at = random.randint(1, 7)
        run = tmp_path / signal.Signals(signum).name
        process = dimask("train", "--quiet", "--out", str(run), *overrides)
        wait_for_iteration(run, process, at)
        process.send_signal(signum)
        _, err = process.communicate(timeout=600)
        context = f"{signal.Signals(signum).name} after iteration {at}: {err}"
        assert process.returncode == 128 + signum, context
        state = read_checkpoint(last_checkpoint(run))
        stopped = state["iteration"]
        # the iteration under way when the signal came was finished, logged and saved
        assert at <= stopped < 10 and iterations_logged(run)[-1] == stopped, context
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("interrupted:"), context
        assert f"model_{stopped:07d}.pth" in lines[0] and "--resume" in lines[0], context
        assert not (run / "model_final.pth").exists()

        resumed = dimask("train", "--quiet", "--resume", "--out", str(run), *overrides)
        assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
        weights = final_weights(run)
        assert weights.keys() == expected.keys()
        assert all(torch.equal(weights[k], expected[k]) for k in expected), context


@pytest.mark.slow
def test_a_second_signal_aborts_at_once_and_keeps_the_written_checkpoints(
        tmp_path, micro_overrides):
    run = tmp_path / "run"
    process = dimask("train", "--quiet", "--out", str(run), *micro_overrides,
                     "solver.max_iter=40", "solver.checkpoint_period=2")
    wait_for_iteration(run, process, 3)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130, err
    assert err.strip().startswith("interrupted:") and len(err.strip().splitlines()) == 1, err
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temp file
    assert read_checkpoint(last_checkpoint(run))["iteration"] >= 2
    for path in run.glob("model_*.pth"):
        read_checkpoint(path)


def _agree(rank: int, port: int, results: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2")
    dist.init_process_group("gloo")
    with StopRequest((signal.SIGUSR1,)) as stop:
        for iteration in range(1, 100):
            if rank == 1 and iteration == 3:  # only rank 1 is signalled
                os.kill(os.getpid(), signal.SIGUSR1)
            if stop.agreed():
                break
    (results / str(rank)).write_text(f"{iteration} {stop.signum}")
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_every_rank_stops_after_the_same_iteration(tmp_path):
    mp.spawn(_agree, args=(free_port(), tmp_path), nprocs=2)
    assert (tmp_path / "0").read_text() == "3 0"
    assert (tmp_path / "1").read_text() == f"3 {int(signal.SIGUSR1)}"


def test_in_a_torchrun_worker_the_launchers_forward_is_not_a_second_signal(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    with StopRequest((signal.SIGUSR1,)) as stop:
        stop.forward_window_s = 0.5
        os.kill(os.getpid(), signal.SIGUSR1)  # the terminal's Ctrl-C
        os.kill(os.getpid(), signal.SIGUSR1)  # torchrun forwarding the one it got
        assert stop.agreed() == signal.SIGUSR1
        time.sleep(0.6)
        with pytest.raises(Interrupted):  # the user asking again: abort
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(1)
