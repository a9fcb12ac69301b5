"""The trainer: bitwise resume after a kill, DDP equivalence, non-finite losses."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dimaskdino.checkpoint import load_model
from dimaskdino.config import apply_overrides, preset
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset
from dimaskdino.engine.checkpointer import last_checkpoint, read_checkpoint
from dimaskdino.engine.trainer import Trainer, TrainingError
from dimaskdino.modeling.backbone import SwinConfig, SwinTransformer


def dimask(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dimaskdino", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run / "model_final.pth")["model"]


def losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_killed_run_resumes_to_bitwise_the_same_weights(tmp_path, micro_overrides, precision):
    overrides = [*micro_overrides, "solver.max_iter=16", "solver.checkpoint_period=8",
                 f"solver.precision={precision}"]
    straight = dimask("train", "--out", str(tmp_path / "straight"), *overrides)  # not quiet
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err
    assert f"precision: {precision} (requested)" in err
    assert all(math.isfinite(loss) for loss in losses(tmp_path / "straight"))

    killed_dir = tmp_path / "killed"
    killed = dimask("train", "--quiet", "--out", str(killed_dir), *overrides)
    deadline = time.monotonic() + 600
    while last_checkpoint(killed_dir) is None and killed.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed_dir / "model_final.pth").exists()
    assert read_checkpoint(last_checkpoint(killed_dir))["iteration"] == 8

    resumed = dimask("train", "--quiet", "--resume", "--out", str(killed_dir), *overrides)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    a, b = final_weights(tmp_path / "straight"), final_weights(killed_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def one_image_dataset(root: Path, copies: int) -> str:
    """A dataset spec whose images are all one synthetic image: every image has the same
    number of objects, so the denoising groups (sized by the largest count in a process's
    batch) are the same in one process and in two."""
    paths = write_synthetic_dataset(root, SyntheticSpec(num_train=1, num_val=1, height=64,
                                                        width=64, max_objects=3, seed=2))
    annotations, images = paths["train"]
    data = json.loads(annotations.read_text())
    image, anns = data["images"][0], data["annotations"]
    data["images"] = [{**image, "id": k + 1} for k in range(copies)]
    data["annotations"] = [{**a, "id": k * len(anns) + j + 1, "image_id": k + 1}
                           for k in range(copies) for j, a in enumerate(anns)]
    path = root / "copies.json"
    path.write_text(json.dumps(data))
    return f"coco-json:{path}:{images}"


@pytest.mark.slow
def test_two_gloo_processes_follow_the_single_process_losses(tmp_path, micro_overrides):
    overrides = [*micro_overrides, "solver.max_iter=4", "solver.checkpoint_period=0",
                 "data.min_scale=1.0", "data.max_scale=1.0",  # no crop: no object lost
                 f"data.dataset={one_image_dataset(tmp_path / 'data', 4)}"]
    single = dimask("train", "--quiet", "--out", str(tmp_path / "single"), *overrides)
    assert single.wait(timeout=600) == 0, single.stderr.read()
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", "29517", "-m", "dimaskdino", "train", "--quiet",
         "--out", str(tmp_path / "ddp"), *overrides],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr
    one, two = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert len(one) == len(two) == 4
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-4, atol=0)
    # flips differ between the two images of a batch, so the check has teeth
    assert len(set(one)) == 4


def test_a_non_finite_loss_stops_with_the_last_good_checkpoint(tmp_path, micro_overrides,
                                                               monkeypatch):
    config = apply_overrides(preset("tiny"), [*micro_overrides, "solver.checkpoint_period=2"])
    from dimaskdino.modeling import criterion

    real = criterion.SetCriterion.forward
    calls = {"n": 0}

    def poisoned(self, outputs, targets, num_objects=None):
        out = real(self, outputs, targets, num_objects)
        calls["n"] += 1
        if calls["n"] == 4:  # iteration 3 (0-based)
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(criterion.SetCriterion, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"loss became nan at iteration 3.*model_0000002"):
        Trainer(config, tmp_path / "run", progress=False).run()
    assert last_checkpoint(tmp_path / "run").name == "model_0000002.pth"
    assert not (tmp_path / "run" / "model_final.pth").exists()


@pytest.mark.slow
def test_dimaskdino_with_a_swin_backbone_trains_and_reloads(tmp_path, micro_overrides):
    config = apply_overrides(preset("tiny"), [*micro_overrides, "solver.max_iter=4",
                                              "solver.checkpoint_period=4"])
    swin = SwinConfig(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                      window_size=7, drop_path_rate=0.1)
    config.model = dataclasses.replace(config.model, backbone=swin)
    assert config.model.name == "DI-MaskDINO"
    result = Trainer(config, tmp_path / "run", progress=False).run()
    assert result.iteration == 4
    recorded = losses(tmp_path / "run")
    assert len(recorded) == 4 and all(math.isfinite(x) for x in recorded)
    assert set(result.metrics) == {"bbox", "segm"}
    model, reloaded = load_model(tmp_path / "run" / "model_final.pth")
    assert isinstance(model.backbone, SwinTransformer) and reloaded.model.backbone == swin
