"""Stopping on a signal: an interruption costs at most the current iteration.

Inside :class:`StopRequest` (the trainer's loop) the first SIGINT or SIGTERM (and, in a
submitit job, submitit's preemption / timeout signal) only records the signal: the loop
finishes the iteration, writes a checkpoint at it and raises :class:`Interrupted`, which the
command line turns into one line and exit code ``128 + signal`` (130 for SIGINT, 143 for
SIGTERM). A second signal raises :class:`Interrupted` at once (in a torchrun worker: one
arriving more than 2 s after the first, as torchrun forwards the signal it got to workers
the terminal or Slurm signalled already); every file dimask writes is
written to a temporary name and renamed (:mod:`dimaskdino.fileio`), so aborting anywhere
leaves the files already written intact.

Under ``torchrun`` the processes may see a signal at different iterations (a terminal's
Ctrl-C reaches them all, torchrun forwards SIGTERM to each rank one after the other).
:meth:`StopRequest.agreed` all-reduces the largest signal number every iteration, so every
rank stops after the same iteration and rank 0's checkpoint holds the same weights as every
other rank's. That is one 8-byte all-reduce per iteration, next to the loss all-reduce the
trainer already does and a forward/backward pass of a second or so: nothing measurable.
(Checking only at logging steps would save that collective but cost up to ``log_period``
iterations, and torchrun kills its workers 30 s after forwarding SIGTERM.)

Outside the loop :func:`abort_on_signals` makes SIGTERM raise :class:`Interrupted` at once,
like Ctrl-C's KeyboardInterrupt, so that ``finally`` blocks (MLflow run statuses, the study
lock) run where SIGTERM's default action would end the process without them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from dimaskdino.engine import distributed

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A run stopped on a signal; ``checkpoint`` is the one written at ``iteration`` (None
    when a second signal aborted at once). A BaseException, as KeyboardInterrupt, so that
    a study's ``except Exception`` per cell does not swallow it."""

    def __init__(self, signum: int, iteration: int | None = None,
                 checkpoint: Path | None = None) -> None:
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        super().__init__(signum, iteration, checkpoint)

    @property
    def exit_code(self) -> int:
        """``128 + signal``, as a shell reports a process ended by the signal."""
        return 128 + self.signum

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        if self.checkpoint is None:
            return f"{name}: aborted at once (the files already written are intact)"
        return (f"{name}: stopped after iteration {self.iteration}; checkpoint "
                f"{self.checkpoint} (named by last_checkpoint)")


def in_submitit_job() -> bool:
    """Whether this process runs a submitit job (submitit sets ``SUBMITIT_FOLDER``)."""
    return "SUBMITIT_FOLDER" in os.environ


def preemption_signal() -> int:
    """The signal submitit's jobs get before a timeout or a preemption (SIGUSR2 unless
    ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise)."""
    import submitit

    return int(submitit.JobEnvironment._usr_sig())


def stop_signals() -> tuple[int, ...]:
    """SIGINT, SIGTERM and, in a submitit job, its preemption signal."""
    return (*STOP_SIGNALS, preemption_signal()) if in_submitit_job() else STOP_SIGNALS


def _install(signals: tuple[int, ...], handler) -> dict[int, object]:
    """Install ``handler`` for ``signals`` (main thread only; elsewhere Python cannot) and
    return the handlers it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in signals}


def _restore(previous: dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


class StopRequest:
    """``with StopRequest() as stop:`` records the first stop signal in ``stop.signum``;
    a second one raises :class:`Interrupted` at once. The previous handlers come back on
    exit."""

    # torchrun forwards the signal it gets to every worker, which a terminal's Ctrl-C or
    # Slurm has already signalled: within this many seconds of the first, a second signal
    # to a torchrun worker is that forward, not a request to abort
    forward_window_s = 2.0

    def __init__(self, signals: tuple[int, ...] | None = None) -> None:
        self.signals = signals if signals is not None else stop_signals()
        self.signum = 0
        self._first = 0.0
        self._forwarded = "TORCHELASTIC_RUN_ID" in os.environ  # set by torchrun
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        self._previous = _install(self.signals, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        _restore(self._previous)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        now = time.monotonic()
        if not self.signum:
            self.signum, self._first = signum, now
        elif not (self._forwarded and now - self._first < self.forward_window_s):
            raise Interrupted(signum)

    def agreed(self) -> int:
        """The signal to stop on now, 0 to go on: the largest signal number any process has
        received (a collective: every rank calls it once per iteration)."""
        if not distributed.is_distributed():
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


def _raise(signum: int, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def abort_on_signals(signals: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`Interrupted` at once (SIGINT already
    raises KeyboardInterrupt)."""
    previous = _install(signals, _raise)
    try:
        yield
    finally:
        _restore(previous)


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """For DataLoader workers (a ``worker_init_fn``): SIGINT / SIGTERM sent to the whole
    process group (Ctrl-C, Slurm) must not kill a worker under the main process, which
    stops at the end of its iteration and then shuts its workers down."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
