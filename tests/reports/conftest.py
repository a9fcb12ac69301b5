"""A real MLflow store of short synthetic runs, built once for all report tests: the
``modules`` study restricted to its MaskDINO and DI-MaskDINO cells, two seeds each (the
tests that use it are marked slow)."""

from __future__ import annotations

import dataclasses

import pytest

from dimaskdino.experiments.driver import inspect_study, run_study
from dimaskdino.experiments.plan import plan_study
from dimaskdino.experiments.registry import get_study
from dimaskdino.experiments.tracking import default_tracking_uri
from tests.conftest import MICRO

CELLS = ("baseline", "di+bato")
FAST = [*MICRO, "solver.max_iter=4", "solver.checkpoint_period=2",  # seconds per cell
        "solver.probe_period=2"]
SEEDS = 2


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> str:
    """The tracking URI of a store holding ``modules`` x :data:`CELLS` x :data:`SEEDS`."""
    root = tmp_path_factory.mktemp("report-store")
    modules = get_study("modules")
    study = dataclasses.replace(modules, cells=tuple(modules.cell(c) for c in CELLS))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIMASK_CACHE", str(root / "cache"))
        uri = default_tracking_uri(root / "out")
        jobs = plan_study(study, "tiny", SEEDS, None, FAST, root / "out")
        outcomes = run_study(inspect_study(jobs, uri), uri, root / "out", "local", {},
                             lambda _: None)
    assert [o.status for o in outcomes] == ["done"] * len(CELLS) * SEEDS
    return uri


@pytest.fixture(scope="session")
def report(store, tmp_path_factory):
    """The report of the store: (html path, its files folder)."""
    from dimaskdino.reports import write_report

    out = tmp_path_factory.mktemp("report") / "report.html"
    assert write_report(store, ["modules"], out) == out
    return out, out.parent / "report_files"
