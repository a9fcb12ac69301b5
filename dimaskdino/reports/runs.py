"""Finished study runs read back from an MLflow store into pandas, one :class:`Section` per
(study, scale, dataset).

The store is only read: a SQLite file or a local folder that does not exist is reported
as a :class:`ReportError` instead of being created.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd

from dimaskdino.experiments.registry import STUDIES, Study, get_study
from dimaskdino.experiments.scales import SCALES

CELL_FILTER = "tags.role = 'cell' and attributes.status = 'FINISHED'"
RUN_COLUMNS = {"run_id": "run_id", "tags.cell": "cell", "tags.seed": "seed",
               "tags.model": "model", "tags.scale": "scale", "params.data.dataset": "dataset",
               "metrics.final_ap_box": "final_ap_box", "metrics.final_ap_mask": "final_ap_mask"}


DIAGNOSTIC_COLUMNS = ["cell", "seed", "layer", "metric", "value"]
DIAGNOSTIC_PREFIXES = ("tide_", "consistency_")
HISTORY_COLUMNS = ["cell", "seed", "iteration", "layer", "task", "AP"]
# the probe history's AP metrics (analysis.probe_history.history_metric)
HISTORY_AP = re.compile(r"probe_l(\d+)_ap_(box|mask|mask_box)")


class ReportError(Exception):
    """Nothing to report (no store, no finished runs of a requested study)."""


@dataclass
class Section:
    """One study at one scale and dataset.

    ``runs``: one row per finished (cell, seed), columns run_id, cell, seed (int), model,
    scale, dataset, final_ap_box, final_ap_mask; ``params``: the flattened configs, one row
    per run (index run_id, columns ``data.dataset``, ...); ``layers``: cell, seed, layer,
    ap_box, ap_mask; ``losses``: cell, seed, iteration, loss; ``diagnostics``: the per-layer
    TIDE errors and box-mask consistency, long form: cell, seed, layer, metric (``tide_loc_box``,
    ``consistency_mean_iou``, ...), value (empty for runs that did not log them);
    ``history``: the layer probe during training, cell, seed, iteration, layer, task
    (``box``, ``mask``, ``mask-box``), AP (empty for runs trained without probing).
    """

    study: Study
    scale: str
    dataset: str
    runs: pd.DataFrame
    params: pd.DataFrame
    layers: pd.DataFrame
    losses: pd.DataFrame
    diagnostics: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=DIAGNOSTIC_COLUMNS))
    history: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=HISTORY_COLUMNS))

    @property
    def key(self) -> str:
        """A file-name stem: ``modules-tiny-synthetic``."""
        slug = "".join(c if c.isalnum() else "-" for c in self.dataset).strip("-")
        return f"{self.study.name}-{self.scale}-{slug}"

    @property
    def seeds(self) -> list[int]:
        """The seeds that ran, sorted."""
        return sorted(set(self.runs["seed"]))


@contextlib.contextmanager
def _tracking(tracking_uri: str) -> Iterator[None]:
    """Point ``mlflow``'s fluent API at ``tracking_uri``, then restore what was set."""
    import mlflow
    from mlflow.tracking import is_tracking_uri_set

    previous = mlflow.get_tracking_uri() if is_tracking_uri_set() else None
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _histories(client, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-layer AP and loss curves of ``runs`` (see :class:`Section`)."""
    from dimaskdino.experiments.tracking import layer_ap

    layers, losses = [], []
    for run in runs.itertuples():
        layer = layer_ap(client, run.run_id).assign(cell=run.cell, seed=run.seed)
        layers.append(layer)
        loss = [(m.step, m.value) for m in client.get_metric_history(run.run_id, "loss")]
        losses.append(pd.DataFrame(loss, columns=["iteration", "loss"])
                      .assign(cell=run.cell, seed=run.seed))
    order = ["cell", "seed"]
    return (pd.concat(layers, ignore_index=True)[[*order, "layer", "ap_box", "ap_mask",
                                                  "ap_mask_box"]],
            pd.concat(losses, ignore_index=True)[[*order, "iteration", "loss"]])


def _diagnostics(client, runs: pd.DataFrame) -> pd.DataFrame:
    """The per-layer diagnostics of ``runs`` (see :class:`Section`)."""
    rows = []
    for run in runs.itertuples():
        keys = [k for k in client.get_run(run.run_id).data.metrics
                if k.startswith(DIAGNOSTIC_PREFIXES)]
        rows += [(run.cell, run.seed, m.step, key, m.value) for key in sorted(keys)
                 for m in client.get_metric_history(run.run_id, key)]
    return pd.DataFrame(rows, columns=DIAGNOSTIC_COLUMNS)


def _probe_histories(client, runs: pd.DataFrame) -> pd.DataFrame:
    """The probe histories of ``runs`` (see :class:`Section`)."""
    rows = []
    for run in runs.itertuples():
        for key in sorted(client.get_run(run.run_id).data.metrics):
            if found := HISTORY_AP.fullmatch(key):
                task = found[2].replace("_", "-")
                rows += [(run.cell, run.seed, m.step, int(found[1]), task, m.value)
                         for m in client.get_metric_history(run.run_id, key)]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def _finished_runs(client, study: Study) -> pd.DataFrame:
    """The newest finished run of each (cell, seed, scale, dataset) of the study's cells,
    with the columns of :data:`RUN_COLUMNS` plus ``params.*``; empty if none."""
    import mlflow

    if client.get_experiment_by_name(study.name) is None:
        return pd.DataFrame(columns=list(RUN_COLUMNS.values()))
    found = mlflow.search_runs(experiment_names=[study.name], filter_string=CELL_FILTER,
                               order_by=["attributes.start_time ASC"])
    missing = [c for c in RUN_COLUMNS if c not in found.columns]
    if found.empty or missing:
        return pd.DataFrame(columns=list(RUN_COLUMNS.values()))
    found = found.rename(columns=RUN_COLUMNS)
    found = found[found["cell"].isin([cell.name for cell in study.cells])]
    found = found.assign(seed=found["seed"].astype(int))
    return found.drop_duplicates(["cell", "seed", "scale", "dataset"], keep="last")


def _sections(client, study: Study, found: pd.DataFrame) -> list[Section]:
    """``found`` (from :func:`_finished_runs`) split by scale and dataset, runs in the
    study's cell order, with their params and metric histories."""
    order = {name: i for i, name in enumerate(SCALES)}
    sections = []
    position = {cell.name: i for i, cell in enumerate(study.cells)}
    groups = sorted(found.groupby(["scale", "dataset"]),
                    key=lambda item: (order.get(item[0][0], len(order)), item[0]))
    for (scale, dataset), group in groups:
        runs = group.assign(order=group["cell"].map(position)).sort_values(["order", "seed"])
        params = runs.set_index("run_id").filter(like="params.")
        params.columns = [c.removeprefix("params.") for c in params.columns]
        layers, losses = _histories(client, runs)
        sections.append(Section(study, scale, dataset,
                                 runs[list(RUN_COLUMNS.values())].reset_index(drop=True),
                                 params, layers, losses, _diagnostics(client, runs),
                                 _probe_histories(client, runs)))
    return sections


def load_sections(tracking_uri: str, studies: list[str] | None) -> list[Section]:
    """The finished runs of ``studies`` (all registry studies with runs when None), in the
    registry's order; ConfigError for an unknown study, ReportError when there is no store,
    no finished run at all, or none of a requested study."""
    from mlflow.tracking import MlflowClient

    from dimaskdino.experiments.tracking import check_store, store_exists

    wanted = [get_study(name) for name in studies] if studies else list(STUDIES.values())
    if not store_exists(tracking_uri):
        raise ReportError(f"no MLflow store at {tracking_uri}; run `dimask run-ablation "
                          "STUDY` first or give --tracking-uri")
    check_store(tracking_uri)
    with _tracking(tracking_uri):
        client = MlflowClient(tracking_uri)
        found = {study.name: _finished_runs(client, study) for study in wanted}
        empty = [name for name, runs in found.items() if runs.empty]
        if len(empty) == len(found) or (studies and empty):
            held = sorted(name for name, study in STUDIES.items() if not (
                found[name] if name in found else _finished_runs(client, study)).empty)
            what = f"study {', '.join(empty)}" if studies else "any study"
            raise ReportError(f"no finished runs of {what} in {tracking_uri} (finished "
                              f"studies there: {', '.join(held) or 'none'})")
        return [section for study in wanted if not found[study.name].empty
                for section in _sections(client, study, found[study.name])]
