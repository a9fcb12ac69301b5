"""The layer probe during training: it leaves training bitwise unchanged (also across an
interrupt and ``--resume``), its history matches ``dimask layer-probe`` of the run's
checkpoints, one by one and with ``--checkpoints all``."""

from __future__ import annotations

import json
import os
import random
import signal

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from dimaskdino.analysis.probe_history import HISTORY_COLUMNS, history_metric
from dimaskdino.cli import app
from dimaskdino.config import ExperimentConfig, apply_overrides, config_from_dict, preset
from dimaskdino.data.specs import resolve_dataset
from dimaskdino.engine.interrupt import Interrupted
from dimaskdino.engine.trainer import Trainer, preserved_random_state
from tests.conftest import MICRO
from tests.engine.test_trainer import final_weights

runner = CliRunner()
TASKS = {"box", "mask", "mask-box"}
# dropout draws from the global generator: a probe that consumed it would change training
RUN = [*MICRO, "model.predictor.dropout=0.1", "solver.max_iter=9",
       "solver.checkpoint_period=3", "data.synthetic.num_val=3"]
PROBE = ["solver.probe_period=3", "solver.probe_images=2"]


def train(out, overrides, resume=False, callbacks=None):
    config = apply_overrides(preset("tiny"), [*RUN, *overrides])
    return Trainer(config, out, resume=resume, progress=False, callbacks=callbacks).run()


def interrupt_at(iteration):
    """A trainer callback that sends this process SIGINT when ``iteration`` is logged."""
    def callback(record):
        if record["iteration"] == iteration and "loss" in record:
            os.kill(os.getpid(), signal.SIGINT)
    return callback


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same micro run without probing, with it, and with it interrupted after
    iteration 5 and resumed."""
    root = tmp_path_factory.mktemp("probe-training")
    mp = pytest.MonkeyPatch()
    mp.setenv("DIMASK_CACHE", str(root / "cache"))
    logged = []
    train(root / "off", ["solver.probe_period=0"])
    train(root / "on", PROBE, callbacks=[logged.append])
    with pytest.raises(Interrupted):
        train(root / "resumed", PROBE, callbacks=[interrupt_at(5)])
    train(root / "resumed", PROBE, resume=True)
    yield root, logged
    mp.undo()


def test_probing_leaves_training_bitwise_unchanged(runs):
    root, _ = runs
    off = final_weights(root / "off")
    for name in ("on", "resumed"):
        on = final_weights(root / name)
        assert on.keys() == off.keys()
        assert all(torch.equal(on[k], off[k]) for k in off), name
    assert not (root / "off" / "probe_history.csv").exists()


def test_history_rows_and_resume_without_duplicates(runs):
    root, logged = runs
    history = pd.read_csv(root / "on" / "probe_history.csv")
    assert list(history.columns) == HISTORY_COLUMNS
    assert sorted(set(history["iteration"])) == [3, 6, 9]
    assert set(history["task"]) == TASKS and sorted(set(history["layer"])) == [0, 1, 2]
    assert len(history) == 3 * 3 * 3  # iterations x layers x tasks, no duplicate
    resumed = pd.read_csv(root / "resumed" / "probe_history.csv")
    pd.testing.assert_frame_equal(resumed, history)
    # the same values went to the callbacks (MLflow) at step = iteration
    records = {r["iteration"]: r for r in logged if any(k.startswith("probe_") for k in r)}
    assert sorted(records) == [3, 6, 9]
    for row in history.itertuples():
        assert records[row.iteration][history_metric(row.layer, "AP", row.task)] == row.AP


def _probe_cli(*args):
    result = runner.invoke(app, ["layer-probe", *map(str, args), "--quiet",
                                 "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    return result


def test_history_equals_layer_probe_of_the_checkpoints(runs, tmp_path):
    root, _ = runs
    run = root / "on"
    history = pd.read_csv(run / "probe_history.csv").set_index(["iteration", "layer", "task"])
    # the in-training probe looks at the first two val images only
    assert len(pd.read_json(run / "probe_history.json", typ="series")["iterations"]) == 3
    # the last row group is what `dimask layer-probe` gives of model_final.pth on them
    _probe_cli(run / "model_final.pth", "--out", tmp_path / "final",
               "--data", _two_image_spec(run, tmp_path))
    final = pd.read_csv(tmp_path / "final" / "probe.csv")
    assert set(final["task"]) == TASKS
    for row in final.itertuples():
        for metric in ("AP", "AP50", "AP75"):
            assert abs(history.loc[(9, row.layer, row.task), metric]
                       - getattr(row, metric)) <= 0.01
    # --checkpoints all: 3 checkpoints (3, 6, final = 9) -> 3 iterations per (layer, task)
    _probe_cli(run, "--checkpoints", "all", "--out", tmp_path / "all",
               "--data", _two_image_spec(run, tmp_path))
    after = pd.read_csv(tmp_path / "all" / "probe_history.csv")
    assert list(after.columns) == HISTORY_COLUMNS
    assert after.groupby(["layer", "task"])["iteration"].apply(list).map(
        lambda found: found == [3, 6, 9]).all()
    for row in after.itertuples():
        expected = history.loc[(row.iteration, row.layer, row.task)]
        for metric in ("AP", "AP50", "AP75"):
            assert abs(expected[metric] - getattr(row, metric)) <= 0.01
    assert (tmp_path / "all" / "probe_history.json").is_file()
    assert (tmp_path / "all" / "probe.csv").is_file()
    for args, message in (([run], "add --checkpoints all"),
                          ([run / "model_final.pth", "--checkpoints", "all"],
                           "takes a run directory"),
                          ([run, "--checkpoints", "some"], "takes 'all'"),
                          ([tmp_path, "--checkpoints", "all"], "no model_*.pth")):
        result = runner.invoke(app, ["layer-probe", *map(str, args), "--out",
                                     str(tmp_path / "bad")])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], lines


def _two_image_spec(run, tmp_path) -> str:
    """A dataset spec of the run's val split cut to its first two images by id (what
    ``solver.probe_images=2`` probes), written independently of the trainer's cut."""
    config = config_from_dict(ExperimentConfig, yaml.safe_load((run / "config.yaml").read_text()))
    source = resolve_dataset(config.data.dataset, "val", synthetic_spec=config.data.synthetic)
    data = json.loads(source.annotation_file.read_text())
    kept = sorted(image["id"] for image in data["images"])[:2]
    data["images"] = [i for i in data["images"] if i["id"] in kept]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]
    path = tmp_path / "val2.json"
    path.write_text(json.dumps(data))
    return f"coco-json:{path}:{source.image_dir}"


def test_preserved_random_state_restores_every_generator():
    """What the probe runs under: draws inside leave the next draws outside unchanged."""
    def draws():
        return torch.rand(3).tolist(), random.random(), np.random.rand()

    state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    expected = draws()
    torch.set_rng_state(state[0]), random.setstate(state[1]), np.random.set_state(state[2])
    with preserved_random_state(torch.device("cpu")):
        draws()
        torch.utils.data.DataLoader(range(4), shuffle=True).__iter__()  # draws a seed
    assert draws() == expected
