"""Run a planned study: find what earlier invocations finished, open the parent run, start
or resume the other cells through an executor, and collect the outcome of each.

A (cell, seed) whose child run is FINISHED is skipped; one with an unfinished child run
(interrupted, failed, killed) resumes in that run from its directory's last checkpoint;
the others get a new child run under this invocation's parent run. A finished run or a
cell directory holding another configuration stops the study before anything runs (the
study or ``--set`` changed: use another ``--out``).

Executors: ``local`` runs the cells one after the other in this process;
``slurm`` submits one Slurm job array through submitit and waits for it;
``submitit-local`` runs that same job array as local processes (no Slurm needed). A
preempted or timed-out cell is requeued and resumes from a checkpoint at the iteration it
was stopped at (:class:`~dimaskdino.experiments.runner.CellTask`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from dimaskdino.config import ConfigError, config_to_dict
from dimaskdino.errors import one_line
from dimaskdino.experiments.plan import CellJob, config_hash

EXECUTORS = ("local", "slurm", "submitit-local")


@dataclass(frozen=True)
class SlurmResources:
    """Per-cell Slurm resources: one task per GPU (one process group per cell)."""

    partition: str | None = None
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    time_min: int = 2880
    mem_gb: int | None = None
    account: str | None = None


@dataclass
class CellState:
    """A job and what the store knows of it: ``state`` is ``finished``, ``resume`` (an
    unfinished child run ``run_id``) or ``new``."""

    job: CellJob
    state: str
    run_id: str | None = None


@dataclass
class Outcome:
    """How a cell ended in this invocation: ``skipped`` (finished earlier), ``done`` or
    ``failed`` (with the error's last line)."""

    job: CellJob
    status: str
    run_id: str
    error: str = ""


def check_executor(executor: str) -> None:
    """ConfigError for an unknown executor, or ``slurm`` where Slurm's sbatch is missing."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("the slurm executor needs Slurm's sbatch on PATH; use --executor "
                          "local (or submitit-local)")


def _check_directory(job: CellJob) -> None:
    written = Path(job.output_dir) / "config.yaml"
    if written.is_file() and yaml.safe_load(written.read_text()) != config_to_dict(job.config()):
        raise ConfigError(f"{job.output_dir} holds a run with another configuration than "
                          f"{job.label}; use another --out")


def inspect_study(jobs: list[CellJob], tracking_uri: str) -> list[CellState]:
    """The state of every job (nothing is written; a missing SQLite store is empty; one
    that cannot be used is a StoreError)."""
    from mlflow.tracking import MlflowClient

    from dimaskdino.experiments.tracking import cell_runs, check_store, store_exists

    runs: dict = {}
    if jobs and store_exists(tracking_uri):
        check_store(tracking_uri)
        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(jobs[0].study)
        if experiment is not None:
            runs = cell_runs(client, experiment.experiment_id, jobs[0].scale)
    states = []
    for job in jobs:
        _check_directory(job)
        run = runs.get((job.cell, job.seed))
        if run is None:
            states.append(CellState(job, "new"))
            continue
        if run.data.tags.get("config_hash") != config_hash(job.config()):
            raise ConfigError(f"{job.label} ran with another configuration in this store "
                              f"({tracking_uri}); use another --out or --tracking-uri")
        states.append(CellState(job, "finished" if run.info.status == "FINISHED" else "resume",
                                run.info.run_id))
    return states


def _run_local(pending: list[tuple[int, CellJob, str]], total: int, tracking_uri: str,
               progress: bool, echo: Callable[[str], None]) -> dict[str, str]:
    """Run ``pending`` (index, job, run id) here, in order; returns errors by run id."""
    from dimaskdino.experiments.runner import run_cell_job

    errors = {}
    for index, job, run_id in pending:
        echo(f"[{index}/{total}] {job.label}")
        try:
            run_cell_job(job, tracking_uri, run_id, progress)
        except Exception as exc:  # one failed cell does not stop the study
            errors[run_id] = one_line(exc)
            echo(f"[{index}/{total}] {job.label} failed: {errors[run_id]}")
    return errors


def _run_submitit(pending: list[tuple[int, CellJob, str]], total: int, tracking_uri: str,
                  cluster: str, folder: Path, resources: SlurmResources,
                  echo: Callable[[str], None]) -> dict[str, str]:
    """Submit ``pending`` as one job array and wait; returns errors by run id."""
    import submitit

    from dimaskdino.experiments.runner import CellTask

    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    parameters: dict = {"name": f"dimask-{pending[0][1].study}",
                        "timeout_min": resources.time_min}
    if cluster == "slurm":
        parameters.update(gpus_per_node=resources.gpus_per_node,
                          tasks_per_node=max(1, resources.gpus_per_node),
                          cpus_per_task=resources.cpus_per_task)
        extra = {"slurm_partition": resources.partition, "mem_gb": resources.mem_gb,
                 "slurm_account": resources.account}
        parameters.update({k: v for k, v in extra.items() if v is not None})
    executor.update_parameters(**parameters)
    n = len(pending)
    handles = executor.map_array(CellTask(), [job for _, job, _ in pending],
                                 [tracking_uri] * n, [run_id for _, _, run_id in pending],
                                 [False] * n)
    by_job = {handle.job_id: entry for handle, entry in zip(handles, pending)}
    for handle, (index, job, _) in zip(handles, pending):
        echo(f"[{index}/{total}] {job.label}: job {handle.job_id}")
    errors = {}
    for handle in submitit.helpers.as_completed(handles):
        index, job, run_id = by_job[handle.job_id]
        try:
            handle.result()
            echo(f"[{index}/{total}] {job.label} done")
        except Exception as exc:
            errors[run_id] = one_line(exc)
            echo(f"[{index}/{total}] {job.label} failed: {errors[run_id]} "
                 f"(log: {handle.paths.stderr})")
    return errors


def _prepare_backbones(jobs: list[CellJob], echo: Callable[[str], None]) -> None:
    """Build the built-in pretrained backbones (``pretrained:NAME``) the cells start from
    before the first cell, so that no cell's time includes it."""
    from dimaskdino.engine.pretrain import resolve_backbone_weights

    for weights in sorted({job.config().model.backbone_weights or "" for job in jobs}):
        resolve_backbone_weights(weights, echo)


def run_study(states: list[CellState], tracking_uri: str, out: Path, executor: str,
              params: dict[str, str], echo: Callable[[str], None], progress: bool = False,
              resources: SlurmResources | None = None) -> list[Outcome]:
    """Run the unfinished cells of ``states`` under a new parent run (``params`` on it)
    with ``executor`` (checked by :func:`check_executor`); returns one :class:`Outcome`
    per state, in order. Hold the lock on ``out`` (:func:`~dimaskdino.experiments.lock.exclusive`):
    parent runs an earlier invocation on ``out`` left RUNNING are marked KILLED first. An
    interruption (Ctrl-C, SIGTERM) marks this invocation's parent run KILLED."""
    from mlflow.tracking import MlflowClient

    from dimaskdino.experiments.tracking import (
        close_stale_runs,
        create_cell_run,
        end_invocation,
        experiment_id,
        start_parent,
    )

    first = states[0].job
    client = MlflowClient(tracking_uri)
    experiment = experiment_id(client, first.study, out)
    for run_id in close_stale_runs(client, experiment, out):
        echo(f"parent run {run_id} of an invocation that died without ending it: marked "
             "KILLED")
    parent = start_parent(client, experiment, first.study, first.scale, params, out)
    total, pending, outcomes = len(states), [], []
    for index, state in enumerate(states, 1):
        job = state.job
        if state.state == "finished":
            echo(f"[{index}/{total}] {job.label}: finished earlier, skipped")
            outcomes.append(Outcome(job, "skipped", state.run_id))
            continue
        run_id = state.run_id or create_cell_run(client, experiment, parent, job,
                                                 config_hash(job.config()))
        pending.append((index, job, run_id))
        outcomes.append(Outcome(job, "done", run_id))
    errors: dict[str, str] = {}
    try:
        _prepare_backbones([job for _, job, _ in pending], echo)
        if pending and executor == "local":
            errors = _run_local(pending, total, tracking_uri, progress, echo)
        elif pending:
            errors = _run_submitit(pending, total, tracking_uri,
                                   "local" if executor == "submitit-local" else "slurm",
                                   out / "submitit" / first.study, resources or SlurmResources(),
                                   echo)
    except BaseException:
        end_invocation(client, experiment, parent, "KILLED")
        raise
    for outcome in outcomes:
        if outcome.run_id in errors:
            outcome.status, outcome.error = "failed", errors[outcome.run_id]
    client.set_terminated(parent, "FAILED" if errors else "FINISHED")
    return outcomes
