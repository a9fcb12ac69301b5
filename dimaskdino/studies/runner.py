"""One cell: train (resuming from the cell directory's last checkpoint, if any), probe
every decoder layer of the final model, record it all in the cell's MLflow child run.

:func:`run_cell_job` is a top-level function of plain arguments, so Slurm (submitit)
pickles it into a job array. In a Slurm job of several tasks it joins them into one
``torch.distributed`` group; only the main process writes to MLflow.
"""

from __future__ import annotations

from pathlib import Path

from dimaskdino.studies.plan import CellJob


def _join_submitit_tasks() -> None:
    """Export ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``... in a multi-task submitit job."""
    import submitit

    try:
        tasks = submitit.JobEnvironment().num_tasks
    except RuntimeError:  # not in a submitit job
        return
    if tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def _probe(checkpoint: Path, progress: bool):
    """The layer probe of a training checkpoint on its own validation split."""
    from dimaskdino.analysis.probe import probe_layers
    from dimaskdino.checkpoint import load_model
    from dimaskdino.data.loader import validation_images
    from dimaskdino.engine import distributed

    model, config = load_model(checkpoint)
    model.to(distributed.init_from_environment())
    dataset, _ = validation_images(config.data)
    return probe_layers(model, dataset, None, config.data.test_batch_size, "faster",
                        progress=progress)


def run_cell_job(job: CellJob, tracking_uri: str, run_id: str, progress: bool = False) -> dict:
    """Train and probe ``job`` into ``job.output_dir``, recording into the child run
    ``run_id``. Returns ``{"label", "run_id", "iteration"}``; on an error the run is marked
    FAILED (KILLED on Ctrl-C or SIGTERM) and the error propagates."""
    from dimaskdino.analysis.probe import save_probe
    from dimaskdino.config import config_to_dict
    from dimaskdino.engine import distributed
    from dimaskdino.engine.interrupt import Interrupted
    from dimaskdino.engine.trainer import Trainer
    from dimaskdino.studies.tracking import CellRecorder

    _join_submitit_tasks()
    config, out_dir = job.config(), Path(job.output_dir)
    main = distributed.is_main_process()
    recorder = CellRecorder(tracking_uri, run_id) if main else None
    try:
        if recorder:
            recorder.started(config_to_dict(config))
        result = Trainer(config, out_dir, resume=True, progress=progress,
                         callbacks=[recorder.training_record] if recorder else []).run()
        probe = _probe(result.checkpoint, progress)
        if recorder:
            save_probe(probe, out_dir, {"checkpoint": str(result.checkpoint)},
                       detections=False)
            recorder.probe(probe.table)
            recorder.final(result.metrics, [out_dir / name for name in (
                "probe.csv", "probe.json", "config.yaml", "final_metrics.json")])
    except BaseException as exc:
        if recorder:
            killed = isinstance(exc, (KeyboardInterrupt, Interrupted))
            recorder.ended("KILLED" if killed else "FAILED")
        raise
    finally:
        distributed.shutdown()
    return {"label": job.label, "run_id": run_id, "iteration": result.iteration}
