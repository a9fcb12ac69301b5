"""MLflow tracking of studies: one experiment per study, one parent run per invocation, one
child run per (cell, seed).

Child runs carry the tags ``role=cell``, ``study``, ``cell``, ``seed``, ``scale``,
``model`` and ``config_hash``; the flattened config as params; training curves (every
numeric entry of the trainer's records, ``step=iteration``); per-layer probe metrics
(``ap_box``, ``ap50_mask``, ... and ``ap_gap`` = AP mask - AP box, ``step=layer``); the
per-layer diagnostics (TIDE delta AP ``tide_loc_box``, ``tide_miss_mask``, ... and the
box-mask consistency ``consistency_mean_iou``, ``consistency_frac_below_0_5``,
``consistency_detections``, ``step=layer``); with ``solver.probe_period``, the probe
history (``probe_l0_ap_box``, ``probe_l0_ap_mask_box``, ``probe_l2_loc_mask``, ...,
``step=iteration``: :func:`~dimaskdino.analysis.probe_history.history_metric`); the final
metrics (``final_ap_box``, ...); and
the artifacts ``probe.csv``, ``probe.json``, ``errors.csv``, ``consistency.csv``,
``config.yaml``, ``final_metrics.json`` (and ``probe_history.csv`` / ``.json`` where
probed during training) and the folder ``gallery/`` (what the report's
pictures show, :mod:`dimaskdino.analysis.layer_detections`). Parent runs carry
``role=parent``, ``study``, ``scale``. By default the store is ``sqlite:///OUT/mlflow.db``
with artifacts in ``OUT/mlartifacts/STUDY``.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from dimaskdino.analysis.probe import TASKS
from dimaskdino.config import ConfigError
from dimaskdino.engine.evaluator import METRICS

# creating a store logs its schema migrations at INFO, which is noise on a terminal
for _name in ("mlflow.store.db.utils", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)

CELL_TAGS = ("study", "cell", "seed", "scale", "model")
PARAMS_PER_BATCH = 100
SQLITE_HEADER = b"SQLite format 3\x00"
LOCK_WAIT_S = 5.0  # how long a store another process writes to may stay locked


class StoreError(ConfigError):
    """An existing tracking store dimask cannot use (one line: the store, what to do)."""


def sqlite_uri(out: Path) -> str:
    """``sqlite:////abs/OUT/mlflow.db``, the default store of runs under ``out``."""
    return f"sqlite:///{(out / 'mlflow.db').resolve()}"


def default_tracking_uri(out: Path) -> str:
    """:func:`sqlite_uri` of ``out``, which is created."""
    out.mkdir(parents=True, exist_ok=True)
    return sqlite_uri(out)


def store_exists(tracking_uri: str) -> bool:
    """False for a SQLite file or a local store folder that does not exist."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).is_file()
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "file":
        return Path(parsed.path).exists()
    return parsed.scheme != "" or Path(tracking_uri).exists()


def check_store(tracking_uri: str, write: bool = False) -> None:
    """StoreError, before anything touches it, if the store at ``tracking_uri`` exists and
    cannot be used: a SQLite path that is a folder or not a SQLite database, a database
    without MLflow's tables or of another MLflow schema version, one locked by another
    process for over :data:`LOCK_WAIT_S` (for reading; for writing too when ``write``),
    or a local store path that is a file. A store that does not exist yet is fine."""
    if tracking_uri.startswith("sqlite:///"):
        _check_sqlite(Path(tracking_uri.removeprefix("sqlite:///")), tracking_uri, write)
        return
    parsed = urlparse(tracking_uri)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme else tracking_uri)
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path} is a file, not an MLflow store folder; give a folder "
                             "or a sqlite:///PATH.db URI as --tracking-uri")


def _check_sqlite(path: Path, uri: str, write: bool) -> None:
    if not path.exists():
        return
    elsewhere = "move it away or give another --tracking-uri"
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not an MLflow SQLite store; give the .db file "
                         "as --tracking-uri sqlite:///PATH.db")
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"cannot read the MLflow store {path}: {exc.strerror}") from None
    if header and header != SQLITE_HEADER:  # an empty file is an empty database
        raise StoreError(f"{path} is not an MLflow store (not a SQLite database); {elsewhere}")
    mode = "rw" if write else "ro"
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}",
                                                uri=True, timeout=LOCK_WAIT_S)) as db:
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = db.execute("SELECT version_num FROM alembic_version").fetchone() \
                if "alembic_version" in tables else None
            if write:
                db.execute("BEGIN IMMEDIATE")  # the writer's lock, given back at once
                db.rollback()
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise StoreError(f"cannot open the MLflow store {path}: {exc}") from None
        raise StoreError(f"the MLflow store {path} is locked by another process (a study, "
                         "`mlflow ui` or a report writing to it); rerun when it has "
                         "finished, or stop it") from None
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a readable MLflow store ({exc}); {elsewhere}"
                         ) from None
    if not tables:
        return  # an empty database: MLflow creates its tables
    _check_schema(path, uri, version[0] if version else None)


def _check_schema(path: Path, uri: str, version: str | None) -> None:
    import mlflow
    from mlflow.store.db.utils import _get_latest_schema_revision

    if version is None:
        raise StoreError(f"{path} is a SQLite database without MLflow's tables; move it away "
                         "or give another --tracking-uri")
    expected = _get_latest_schema_revision()
    if version != expected:
        raise StoreError(f"the MLflow store {path} has schema version {version}, MLflow "
                         f"{mlflow.__version__} reads {expected}: back it up and run `mlflow "
                         f"db upgrade {uri}`, or use the MLflow that wrote it")


def metric_name(metric: str, task: str) -> str:
    """``("AP50", "box")`` -> ``ap50_box``, ``("AP", "mask-box")`` -> ``ap_mask_box``."""
    return f"{metric.lower()}_{task.replace('-', '_')}"


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """Nested dicts -> ``{"model.predictor.num_queries": "300", ...}``."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


def experiment_id(client: MlflowClient, study: str, out: Path) -> str:
    """The experiment named after ``study``, created if missing (artifacts under
    ``OUT/mlartifacts/STUDY`` for a local store)."""
    found = client.get_experiment_by_name(study)
    if found is not None:
        return found.experiment_id
    uri = client.tracking_uri
    local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
    location = (out / "mlartifacts" / study).resolve().as_uri() if local else None
    return client.create_experiment(study, artifact_location=location)


def cell_runs(client: MlflowClient, experiment: str, scale: str) -> dict[tuple[str, int], object]:
    """The child runs of ``experiment`` at ``scale`` by (cell, seed): the finished one if
    any, else the newest."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment], f"tags.role = 'cell' and tags.scale = '{scale}'",
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    chosen: dict[tuple[str, int], object] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        key = (run.data.tags["cell"], int(run.data.tags["seed"]))
        if chosen.get(key) is None or chosen[key].info.status != "FINISHED":
            chosen[key] = run
    return chosen


def start_parent(client: MlflowClient, experiment: str, study: str, scale: str,
                 params: dict[str, str], out: Path | None = None) -> str:
    """A new parent run for this invocation (tagged ``out``: the resolved ``--out``);
    returns its id."""
    tags = {"role": "parent", "study": study, "scale": scale}
    if out is not None:
        tags["out"] = str(out.resolve())
    run = client.create_run(experiment, run_name=f"{study} {scale}", tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    return run.info.run_id


def close_stale_runs(client: MlflowClient, experiment: str, out: Path) -> list[str]:
    """Mark KILLED the parent runs of invocations on ``out`` still RUNNING, and their
    unfinished child runs: their invocation died without ending them (SIGKILL, a lost
    node). Call it holding the study lock (:mod:`dimaskdino.experiments.lock`), so that none
    of them is alive. Returns the parent run ids."""
    where = str(out.resolve())
    stale = [run for run in client.search_runs(
        [experiment], "tags.role = 'parent' and attributes.status = 'RUNNING'")
        if run.data.tags.get("out") == where]
    for parent in stale:
        end_invocation(client, experiment, parent.info.run_id, "KILLED")
    return [run.info.run_id for run in stale]


def end_invocation(client: MlflowClient, experiment: str, parent: str, status: str) -> None:
    """End the parent run ``parent`` with ``status``, and its child runs still RUNNING or
    SCHEDULED (cells an interruption stopped or never reached) as KILLED."""
    for child in client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'"):
        if child.info.status in ("RUNNING", "SCHEDULED"):
            client.set_terminated(child.info.run_id, "KILLED")
    client.set_terminated(parent, status)


def create_cell_run(client: MlflowClient, experiment: str, parent: str, job,
                    fingerprint: str) -> str:
    """A child run of ``parent`` for ``job`` (a :class:`~dimaskdino.experiments.plan.CellJob`),
    status SCHEDULED; returns its id."""
    tags = {"role": "cell", "mlflow.parentRunId": parent, "config_hash": fingerprint,
            **{name: str(getattr(job, name)) for name in CELL_TAGS}}
    run = client.create_run(experiment, run_name=f"{job.cell} seed {job.seed}", tags=tags)
    client.update_run(run.info.run_id, status="SCHEDULED")
    return run.info.run_id


def tide_metric(error: str, task: str) -> str:
    """``("Loc", "box")`` -> ``tide_loc_box``."""
    return f"tide_{error.lower()}_{task}"


def consistency_metric(measure: str) -> str:
    """``frac_below_0.5`` -> ``consistency_frac_below_0_5`` (MLflow keys have no dots)."""
    return f"consistency_{measure.replace('.', '_')}"


def layer_ap(client: MlflowClient, run_id: str) -> pd.DataFrame:
    """A finished cell's per-layer AP: columns layer, ap_box, ap_mask, ap_mask_box (NaN
    for runs probed before the ``mask-box`` task)."""
    series = {name: {m.step: m.value for m in client.get_metric_history(run_id, name)}
              for name in ("ap_box", "ap_mask", "ap_mask_box")}
    frame = pd.DataFrame(series).rename_axis("layer").sort_index()
    return frame.reset_index()


class CellRecorder:
    """Writes one cell's run: params, curves (no step logged twice, so a resumed training
    does not duplicate what the interrupted one logged), probe, artifacts, status."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client, self.run_id = MlflowClient(tracking_uri), run_id
        self.last_step: dict[str, int] = {}

    def started(self, config: dict) -> None:
        """Status RUNNING; the flattened config as params (the same values on a resume)."""
        self.client.update_run(self.run_id, status="RUNNING")
        params = [Param(k, v) for k, v in flatten(config).items()]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + PARAMS_PER_BATCH])

    def _seen(self, key: str) -> int:
        if key not in self.last_step:
            history = self.client.get_metric_history(self.run_id, key)
            self.last_step[key] = max((m.step for m in history), default=-1)
        return self.last_step[key]

    def log(self, values: dict[str, float], step: int) -> None:
        """Log ``values`` at ``step``, skipping keys already logged at or after it."""
        now = int(time.time() * 1000)
        fresh = [Metric(k, float(v), now, step) for k, v in values.items()
                 if step > self._seen(k)]
        if fresh:
            self.client.log_batch(self.run_id, metrics=fresh)
            self.last_step.update({m.key: step for m in fresh})

    def training_record(self, record: dict) -> None:
        """A trainer callback: every numeric entry of ``record`` at its iteration."""
        values = {k: v for k, v in record.items()
                  if k != "iteration" and isinstance(v, (int, float))}
        self.log(values, int(record["iteration"]))

    def probe(self, table: pd.DataFrame) -> None:
        """Per-layer metrics from the probe's table (rows: layer, task, AP, AP50, ...)."""
        for layer, rows in table.groupby("layer"):
            values = {metric_name(m, row["task"]): row[m] for _, row in rows.iterrows()
                      for m in METRICS}
            values["ap_gap"] = values["ap_mask"] - values["ap_box"]
            self.log(values, int(layer))

    def diagnostics(self, errors: pd.DataFrame, consistency: pd.DataFrame) -> None:
        """Per-layer TIDE errors (rows: layer, task, error, dAP) and box-mask consistency
        (rows: layer, detections, mean_iou, frac_below_0.5), ``step=layer``."""
        values: dict[int, dict[str, float]] = {}
        for row in errors.itertuples():
            values.setdefault(int(row.layer), {})[tide_metric(row.error, row.task)] = row.dAP
        for row in consistency.to_dict(orient="records"):
            values.setdefault(int(row["layer"]), {}).update(
                {consistency_metric(k): row[k] for k in ("detections", "mean_iou",
                                                         "frac_below_0.5")})
        for layer, found in sorted(values.items()):
            self.log(found, layer)

    def final(self, metrics: dict[str, dict[str, float]], artifacts: list[Path]) -> None:
        """Final metrics (``{"bbox": {"AP": ..}, "segm": ..}``), artifacts, FINISHED."""
        self.log({f"final_{metric_name(m, TASKS[iou])}": v
                  for iou, values in metrics.items() for m, v in values.items()}, 0)
        for path in artifacts:  # a folder keeps its name in the run's artifacts
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), path.name)
            else:
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")

    def ended(self, status: str) -> None:
        """Mark the run ``FAILED`` or ``KILLED``."""
        self.client.set_terminated(self.run_id, status)
