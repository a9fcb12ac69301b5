"""``dimask demo``: trains and probes both models into one MLflow store, prints Figure 1."""

from __future__ import annotations

from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from dimaskdino.cli import app
from dimaskdino.cli import demo as demo_cli
from dimaskdino.experiments.tracking import default_tracking_uri

runner = CliRunner()


def test_demo_trains_probes_and_prints_figure_1(tmp_path, monkeypatch):
    monkeypatch.setenv("DIMASK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo_cli.console, "width", 200)
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--iterations", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Figure 1" in result.output
    assert "maskdino" in result.output and "dimaskdino" in result.output
    assert f"report: {out / 'report.html'}" in result.output.replace("\n", "")
    assert "Figure 1" in (out / "report.html").read_text()
    client = MlflowClient(default_tracking_uri(out))
    experiment = client.get_experiment_by_name("modules")
    runs = client.search_runs([experiment.experiment_id], "tags.role = 'cell'")
    assert sorted(r.data.tags["cell"] for r in runs) == ["baseline", "di+bato"]
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:   # one AP per layer: 0..3 for the tiny preset's 3 decoder layers
        assert [m.step for m in client.get_metric_history(run.info.run_id, "ap_box")] == [
            0, 1, 2, 3]
    # a second demo reuses the finished runs
    again = runner.invoke(app, ["demo", "--out", str(out), "--iterations", "2", "--quiet"])
    assert again.exit_code == 0 and again.output.count("finished earlier, skipped") == 2
    assert len(client.search_runs([experiment.experiment_id], "tags.role = 'cell'")) == 2


def test_demo_rejects_a_non_positive_budget(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--iterations", "0"])
    assert result.exit_code == 1 and "--iterations must be positive" in result.output
