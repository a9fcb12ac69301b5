"""One cell: train (resuming from the cell directory's last checkpoint, if any), probe
every decoder layer of the final model, record it all in the cell's MLflow child run.

:func:`run_cell_job` is a top-level function of plain arguments, so Slurm (submitit)
pickles it into a job array. In a Slurm job of several tasks it joins them into one
``torch.distributed`` group; only the main process writes to MLflow.
"""

from __future__ import annotations

import signal
from pathlib import Path

import submitit

from dimaskdino.engine.interrupt import Interrupted, preemption_signal
from dimaskdino.experiments.plan import CellJob


def _join_submitit_tasks() -> None:
    """Export ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``... in a multi-task submitit job."""
    try:
        tasks = submitit.JobEnvironment().num_tasks
    except RuntimeError:  # not in a submitit job
        return
    if tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def _trained(checkpoint: Path):
    """The model of a training checkpoint, on this process's device, and its own validation
    split: what the cell's probe and gallery read (the checkpoint is loaded once)."""
    from dimaskdino.checkpoint import load_model
    from dimaskdino.data.loader import validation_images
    from dimaskdino.engine import distributed

    model, config = load_model(checkpoint)
    model.to(distributed.init_from_environment())
    dataset, _ = validation_images(config.data)
    return model, dataset, config.data.test_batch_size


def _gallery(model, dataset, out_dir: Path, precision: str) -> Path:
    """The report's gallery data of the trained cell (first and last layer of a few val
    images, :func:`~dimaskdino.analysis.layer_detections.gallery_views`) in
    ``out_dir/gallery``; logged with the cell so that the report needs only the store."""
    from dimaskdino.analysis.layer_detections import gallery_views, save_views

    folder = out_dir / "gallery"
    folder.mkdir(parents=True, exist_ok=True)
    save_views(gallery_views(model, dataset, precision), folder)
    return folder


def run_cell_job(job: CellJob, tracking_uri: str, run_id: str, progress: bool = False) -> dict:
    """Train and probe ``job`` into ``job.output_dir``, recording into the child run
    ``run_id``. Returns ``{"label", "run_id", "iteration"}``; on an error the run is marked
    FAILED (KILLED on Ctrl-C or SIGTERM) and the error propagates."""
    from dimaskdino.analysis.probe import probe_layers, save_probe
    from dimaskdino.config import config_to_dict
    from dimaskdino.engine import distributed
    from dimaskdino.engine.trainer import Trainer
    from dimaskdino.experiments.tracking import CellRecorder

    _join_submitit_tasks()
    config, out_dir = job.config(), Path(job.output_dir)
    main = distributed.is_main_process()
    recorder = CellRecorder(tracking_uri, run_id) if main else None
    try:
        if recorder:
            recorder.started(config_to_dict(config))
        result = Trainer(config, out_dir, resume=True, progress=progress,
                         callbacks=[recorder.training_record] if recorder else []).run()
        model, dataset, batch_size = _trained(result.checkpoint)
        probe = probe_layers(model, dataset, None, batch_size, "hotcoco", progress=progress,
                             precision=job.precision)
        if recorder:
            save_probe(probe, out_dir, {"checkpoint": str(result.checkpoint)},
                       detections=False)
            recorder.probe(probe.table)
            recorder.diagnostics(probe.errors, probe.consistency)
            gallery = _gallery(model, dataset, out_dir, job.precision)
            history = [out_dir / name for name in ("probe_history.csv", "probe_history.json")
                       if (out_dir / name).is_file()]
            recorder.final(result.metrics, [*(out_dir / name for name in (
                "probe.csv", "probe.json", "errors.csv", "consistency.csv", "config.yaml",
                "final_metrics.json")), *history, gallery])
    except BaseException as exc:
        if recorder:
            killed = isinstance(exc, (KeyboardInterrupt, Interrupted))
            recorder.ended("KILLED" if killed else "FAILED")
        raise
    finally:
        distributed.shutdown()
    return {"label": job.label, "run_id": run_id, "iteration": result.iteration}


class CellTask(submitit.helpers.Checkpointable):
    """:func:`run_cell_job` as a submitit job that survives preemption and timeouts.

    In a submitit job the trainer also stops on submitit's preemption / timeout signal
    (SIGUSR2) and on SIGTERM (:func:`~dimaskdino.engine.interrupt.stop_signals`): it ends
    the iteration with a checkpoint and raises :class:`Interrupted`. This task then runs
    submitit's own handler for the preemption signal, which calls :meth:`checkpoint` (the
    same task, the same arguments), requeues the job (Slurm: ``scontrol requeue``; the
    local executor: exit code 144, which its controller restarts) and exits; the requeued
    task resumes the cell's run from that checkpoint. Rank 0 requeues; the other ranks'
    handlers return and the job ends with the requeue.
    """

    def __call__(self, job: CellJob, tracking_uri: str, run_id: str,
                 progress: bool = False) -> dict:
        requeue = signal.getsignal(preemption_signal())
        try:
            return run_cell_job(job, tracking_uri, run_id, progress)
        except Interrupted as stop:
            if stop.checkpoint is None or not callable(requeue):
                raise
            requeue(stop.signum, None)
            raise
