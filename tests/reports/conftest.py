"""The report of the shared MLflow store of short synthetic runs (``store``,
:mod:`tests.conftest`; the tests that use it are marked slow)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def report(store, tmp_path_factory):
    """The report of the store: (html path, its files folder)."""
    from dimaskdino.reports import write_report

    out = tmp_path_factory.mktemp("report") / "report.html"
    assert write_report(store, ["modules"], out) == out
    return out, out.parent / "report_files"
