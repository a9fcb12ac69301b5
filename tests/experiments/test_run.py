"""Micro studies end to end: tracking in MLflow, skipping finished cells, resuming an
interrupted one, and the Slurm path through submitit's local executor."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from dimaskdino.cli import app
from dimaskdino.experiments.driver import inspect_study, run_study
from dimaskdino.experiments.plan import plan_study
from dimaskdino.experiments.registry import Study, get_study
from dimaskdino.experiments.tracking import CellRecorder, default_tracking_uri
from tests.conftest import MICRO

runner = CliRunner()
FAST = [*MICRO, "solver.max_iter=4", "solver.checkpoint_period=2"]  # the micro run, halved
ONE_CELL = Study("one-cell", "-", "one micro cell", (get_study("gtg").cells[1],))


def _cli_args(out) -> list[str]:
    sets = [arg for item in FAST for arg in ("--set", item)]
    return ["run-ablation", "gtg", "--out", str(out), "--quiet", *sets]


@pytest.fixture(scope="module")
def gtg_run(tmp_path_factory):
    """The two-cell ``gtg`` study, run once through the CLI on the micro config."""
    root = tmp_path_factory.mktemp("gtg")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIMASK_CACHE", str(root / "cache"))
        result = runner.invoke(app, _cli_args(root / "out"))
    assert result.exit_code == 0, result.output
    out = root / "out"
    return out, result, MlflowClient(default_tracking_uri(out))


def _runs(client, role):
    experiment = client.get_experiment_by_name("gtg")
    return client.search_runs([experiment.experiment_id], f"tags.role = '{role}'")


def test_study_is_tracked_in_mlflow(gtg_run):
    out, result, client = gtg_run
    assert "[1/2] gtg/without-gtg seed 0" in result.stdout
    assert "[2/2] gtg/with-gtg seed 0" in result.stdout and "summary" in result.stdout
    (parent,) = _runs(client, "parent")
    children = _runs(client, "cell")
    assert sorted(r.data.tags["cell"] for r in children) == ["with-gtg", "without-gtg"]
    for run in children:
        tags, params = run.data.tags, run.data.params
        assert run.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert (tags["study"], tags["seed"], tags["scale"], tags["model"]) == (
            "gtg", "0", "tiny", "dimaskdino")
        assert params["model.predictor.num_queries"] == "10"
        assert params["model.predictor.guiding_token_generation"] == str(
            tags["cell"] == "with-gtg")
        cell_dir = out / "gtg" / "tiny" / tags["cell"] / "seed0"
        probe = pd.read_csv(cell_dir / "probe.csv")
        for task in ("box", "mask"):
            history = client.get_metric_history(run.info.run_id, f"ap_{task}")
            expected = probe[probe["task"] == task].sort_values("layer")
            assert [m.step for m in history] == [0, 1, 2]
            assert [m.value for m in history] == pytest.approx(expected["AP"].tolist())
        errors = pd.read_csv(cell_dir / "errors.csv")
        for row in errors[errors["error"].isin(["Loc", "Miss"])].itertuples():
            history = client.get_metric_history(
                run.info.run_id, f"tide_{row.error.lower()}_{row.task}")
            assert {m.step: m.value for m in history}[row.layer] == pytest.approx(row.dAP)
        consistency = pd.read_csv(cell_dir / "consistency.csv")
        history = client.get_metric_history(run.info.run_id, "consistency_frac_below_0_5")
        assert [m.step for m in history] == consistency["layer"].tolist()
        assert [m.value for m in history] == pytest.approx(
            consistency["frac_below_0.5"].tolist(), nan_ok=True)
        loss = client.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in loss) == list(range(1, 5))
        final = json.loads((cell_dir / "final_metrics.json").read_text())
        assert run.data.metrics["final_ap_mask"] == pytest.approx(final["segm"]["AP"])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"probe.csv", "probe.json", "errors.csv", "consistency.csv", "config.yaml",
                "final_metrics.json", "gallery"} <= artifacts
        assert run.info.artifact_uri.startswith((out / "mlartifacts" / "gtg").as_uri())


def test_rerun_skips_finished_cells(gtg_run, monkeypatch):
    out, _, client = gtg_run
    final = out / "gtg" / "tiny" / "with-gtg" / "seed0" / "model_final.pth"
    stamp = final.stat().st_mtime_ns
    monkeypatch.setenv("DIMASK_CACHE", str(out.parent / "cache"))
    result = runner.invoke(app, _cli_args(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.count("finished earlier, skipped") == 2
    assert len(_runs(client, "cell")) == 2 and len(_runs(client, "parent")) == 2
    assert final.stat().st_mtime_ns == stamp
    dry = runner.invoke(app, [*_cli_args(out), "--dry-run"])
    assert dry.exit_code == 0 and "1/1" in dry.stdout


def test_interrupted_cell_resumes_in_its_run(tmp_path, micro_overrides, monkeypatch):
    out, lines = tmp_path / "out", []
    uri = default_tracking_uri(out)
    jobs = plan_study(ONE_CELL, "tiny", 1, None, [*micro_overrides, *FAST], out)
    record = CellRecorder.training_record

    def crash_at_3(self, entry):
        record(self, entry)
        if entry["iteration"] == 3:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(CellRecorder, "training_record", crash_at_3)
    (first,) = run_study(inspect_study(jobs, uri), uri, out, "local", {}, lines.append)
    assert first.status == "failed" and first.error == "simulated crash"
    client = MlflowClient(uri)
    assert client.get_run(first.run_id).info.status == "FAILED"
    monkeypatch.setattr(CellRecorder, "training_record", record)
    (state,) = inspect_study(jobs, uri)
    assert (state.state, state.run_id) == ("resume", first.run_id)
    (second,) = run_study([state], uri, out, "local", {}, lines.append)
    assert (second.status, second.run_id) == ("done", first.run_id)
    experiment = client.get_experiment_by_name("one-cell").experiment_id
    (child,) = client.search_runs([experiment], "tags.role = 'cell'")
    assert child.info.status == "FINISHED"
    cell_dir = out / "one-cell" / "tiny" / "with-gtg" / "seed0"
    logged = [json.loads(line)["iteration"] for line in
              (cell_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged.count(1) == 1 and logged.count(3) == 2  # resumed from iteration 2
    loss = client.get_metric_history(child.info.run_id, "loss")
    assert sorted(m.step for m in loss) == list(range(1, 5))


def test_submitit_local_executor_runs_a_cell(tmp_path, micro_overrides):
    out, lines = tmp_path / "out", []
    uri = default_tracking_uri(out)
    jobs = plan_study(ONE_CELL, "tiny", 1, None, [*micro_overrides, *FAST], out)
    (outcome,) = run_study(inspect_study(jobs, uri), uri, out, "submitit-local", {},
                           lines.append)
    assert outcome.status == "done", lines
    assert any("job" in line for line in lines)
    client = MlflowClient(uri)
    assert client.get_run(outcome.run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(outcome.run_id, "ap_box")] == [0, 1, 2]
    assert (out / "submitit" / "one-cell").is_dir()


# the r50 presets' model from scratch, shrunk to the micro experiment's size
SCRATCH = [*FAST, "solver.max_iter=2", "solver.checkpoint_period=0",
           "model.backbone_weights=none", "model.backbone.depth=18",
           "model.backbone.stem_out_channels=32", "model.backbone.res2_out_channels=32",
           "model.encoder.conv_dim=64", "model.encoder.mask_dim=64",
           "model.encoder.dim_feedforward=128", "model.predictor.hidden_dim=64",
           "model.predictor.mask_dim=64", "model.predictor.dim_feedforward=128",
           "model.predictor.dn_num=10"]


def fake_bdd100k(root) -> str:
    """A BDD100K folder (prepared COCO labels, 8 categories) of a few synthetic images."""
    import shutil

    from dimaskdino.data.bdd100k import CLASSES
    from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset

    paths = write_synthetic_dataset(root / "source", SyntheticSpec(
        num_train=4, num_val=2, height=64, width=64, max_objects=3))
    for split, (labels, images) in paths.items():
        data = json.loads(labels.read_text())
        data["categories"] = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
        (root / "coco").mkdir(exist_ok=True)
        (root / "coco" / f"instances_{split}.json").write_text(json.dumps(data))
        shutil.copytree(images, root / "images" / "10k" / split)
    return f"bdd100k:{root}"


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["small", "paper"])
def test_small_and_paper_scales_train_from_scratch_on_purpose(tmp_path, micro_overrides,
                                                              scale):
    data = "synthetic" if scale == "small" else fake_bdd100k(tmp_path / "bdd100k")
    out, lines = tmp_path / "out", []
    uri = default_tracking_uri(out)
    jobs = plan_study(ONE_CELL, scale, 1, data, SCRATCH, out)
    assert jobs[0].preset == ("r50-coco-12ep" if scale == "small" else "r50-bdd100k-68ep")
    (outcome,) = run_study(inspect_study(jobs, uri), uri, out, "local", {}, lines.append)
    assert outcome.status == "done", lines
    params = MlflowClient(uri).get_run(outcome.run_id).data.params
    assert params["model.backbone_weights"] == "none"
    assert params["model.backbone.depth"] == "18"


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
@pytest.mark.parametrize("to_task", [False, True], ids=["SIGTERM-to-job", "USR2-to-task"])
def test_submitit_requeues_a_preempted_cell_which_resumes(tmp_path, micro_overrides,
                                                          to_task):
    """SIGTERM to the job (its controller forwards it, as Slurm signals a preempted job) or
    submitit's timeout signal to the task: the cell checkpoints, is requeued, resumes."""
    out, lines = tmp_path / "out", []
    uri = default_tracking_uri(out)
    jobs = plan_study(ONE_CELL, "tiny", 1, None, [*micro_overrides, *MICRO, "solver.max_iter=12",
                                                  "solver.checkpoint_period=0"], out)
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.extend(run_study(
        inspect_study(jobs, uri), uri, out, "submitit-local", {}, lines.append)))
    thread.start()
    metrics = Path(jobs[0].output_dir) / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
        assert thread.is_alive() and time.monotonic() < deadline, lines
        time.sleep(0.01)
    controller = int(next(line for line in lines if ": job " in line).rsplit(" ", 1)[1])
    if to_task:
        os.kill(_children(controller)[0], signal.SIGUSR2)
    else:
        os.kill(controller, signal.SIGTERM)
    thread.join(timeout=600)
    (result,) = outcome
    assert result.status == "done", lines
    stops = sorted(Path(jobs[0].output_dir).glob("model_00*.pth"))  # no periodic ones
    assert len(stops) == 1, stops
    stopped = int(stops[0].stem.split("_")[1])
    logged = [json.loads(line)["iteration"] for line in metrics.read_text().splitlines()
              if "loss" in json.loads(line)]
    assert logged == list(range(1, 13))  # resumed after the stop, nothing run twice
    assert 3 <= stopped < 12
    log = "".join(p.read_text() for p in (out / "submitit").rglob("*_log.*"))
    assert "Requeued job" in log
    assert MlflowClient(uri).get_run(result.run_id).info.status == "FINISHED"
