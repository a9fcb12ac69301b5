"""The training loop: AdamW, warm-up + steps, full-model clipping, fp16 AMP on CUDA or bf16,
checkpoints and bitwise resume, periodic COCO evaluation, DDP.

A run lives in one directory: ``config.yaml``, ``metrics.jsonl`` (one line per logged
iteration, per evaluation and per layer probe), checkpoints (see
:mod:`dimaskdino.engine.checkpointer`) and, at the end, ``model_final.pth`` and
``final_metrics.json``. The starting weights (``model.backbone_weights``,
``model.weights``: :mod:`dimaskdino.engine.initialization`) are loaded before any data is
read. With ``solver.probe_period`` the layer probe of the current weights runs every that
many iterations and at the end, into ``probe_history.csv``
(:mod:`dimaskdino.analysis.probe_history`); it draws no random number that training would,
so a run ends with the same weights with probing on or off.

Bitwise resume on CPU follows from three facts: the data of iteration ``i`` is a function
of ``i`` (:class:`~dimaskdino.data.loader.TrainingStream`), every random draw of the model
and the criterion comes from per-image generators seeded by the stream, and checkpoints
hold the optimizer state and the global random state. SIGINT / SIGTERM end the current
iteration with a checkpoint at it (:mod:`dimaskdino.engine.interrupt`), so ``--resume``
after Ctrl-C or a preemption loses nothing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from dimaskdino.analysis.probe import probe_layers
from dimaskdino.analysis.probe_history import (
    append_history,
    first_images,
    history_metrics,
    history_rows,
    truncate_history,
)
from dimaskdino.checkpoint import load_weights
from dimaskdino.config import (
    ConfigError,
    ExperimentConfig,
    check_starting_weights,
    config_to_dict,
)
from dimaskdino.config_check import check_runnable
from dimaskdino.data.coco import CocoInstances, DatasetError
from dimaskdino.data.loader import (
    EvaluationImages,
    TrainingStream,
    open_dataset,
    training_loader,
    validation_images,
)
from dimaskdino.data.specs import resolve_dataset
from dimaskdino.data.transforms import LargeScaleJitter
from dimaskdino.engine import distributed, interrupt
from dimaskdino.engine.checkpointer import last_checkpoint, read_checkpoint, save_checkpoint
from dimaskdino.engine.evaluator import evaluate_model
from dimaskdino.engine.initialization import initialize_model
from dimaskdino.engine.precision import Precision, announced, resolve_precision
from dimaskdino.engine.solver import build_optimizer, set_learning_rate
from dimaskdino.fileio import append_line, atomic_write_text
from dimaskdino.modeling.criterion import SetCriterion
from dimaskdino.modeling.matcher import HungarianMatcher
from dimaskdino.modeling.model import DIMaskDINO
from dimaskdino.progress import progress_bar


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); one-line message."""


@dataclass
class TrainResult:
    """Where the run is and what it reached."""

    output_dir: Path
    iteration: int
    checkpoint: Path | None
    metrics: dict = field(default_factory=dict)  # {"bbox": {...}, "segm": {...}}


def load_datasets(config: ExperimentConfig) -> tuple[CocoInstances, EvaluationImages]:
    """The training split of ``config.data.dataset`` and its val split resized for testing;
    the synthetic data is generated (once, by the first process) on first use."""
    def read_train() -> CocoInstances:
        source = resolve_dataset(config.data.dataset, "train",
                                 synthetic_spec=config.data.synthetic)
        if source.annotation_file is None:
            raise DatasetError(f"dataset {source.spec} has no annotations: it can be "
                               "predicted, probed and drawn, not trained on")
        return open_dataset(source)

    if distributed.is_main_process():
        train = read_train()
    distributed.barrier()
    if not distributed.is_main_process():
        train = read_train()
    val, _ = validation_images(config.data)
    classes = config.model.predictor.num_classes
    if len(train.category_ids) != classes:
        raise ConfigError(f"the dataset has {len(train.category_ids)} categories but the "
                          f"model predicts {classes}; set model.predictor.num_classes="
                          f"{len(train.category_ids)}")
    return train, val


def build_criterion(config: ExperimentConfig) -> SetCriterion:
    loss = config.loss
    return SetCriterion(config.model.predictor.num_classes,
                        HungarianMatcher(loss.classification, loss.l1, loss.giou, loss.mask,
                                         loss.dice, num_points=loss.num_points),
                        loss, num_points=loss.num_points, oversample=loss.oversample,
                        importance=loss.importance)


@contextlib.contextmanager
def preserved_random_state(device: torch.device) -> Iterator[None]:
    """Run the body without consuming the random state training draws from: torch's (CPU
    and ``device``'s), Python's and numpy's are restored after it."""
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield
    random.setstate(python)
    np.random.set_state(numpy)


class Trainer:
    """Train ``config`` into ``output_dir``; :meth:`run` returns a :class:`TrainResult`.

    ``callbacks`` receive every logged record (``{"iteration", "lr", "loss", ...}`` and the
    evaluation records ``{"iteration", "bbox/AP", ...}``), e.g. for experiment tracking.
    """

    def __init__(self, config: ExperimentConfig, output_dir: str | Path, resume: bool = False,
                 progress: bool = True,
                 callbacks: list[Callable[[dict], None]] | None = None) -> None:
        check_runnable(config)
        self.config, self.output_dir = config, Path(output_dir)
        self.resume, self.progress = resume, progress
        self.callbacks = callbacks or []
        self.device = distributed.init_from_environment()
        self.main = distributed.is_main_process()
        world = distributed.world_size()
        if config.solver.batch_size % world:
            raise ConfigError(f"solver.batch_size={config.solver.batch_size} is not divisible "
                              f"by the {world} processes")
        self.local_batch = config.solver.batch_size // world

    def _log(self, record: dict) -> None:
        if not self.main:
            return
        append_line(self.output_dir / "metrics.jsonl", json.dumps(record))
        for callback in self.callbacks:
            callback(record)

    def _checkpoint(self, name: str, iteration: int, extra: dict | None = None) -> Path:
        path = self.output_dir / name
        if self.main:
            save_checkpoint(self.output_dir, name, model=self.model, optimizer=self.optimizer,
                            iteration=iteration, config=config_to_dict(self.config),
                            extra=extra)
        distributed.barrier()
        return path

    def _evaluate(self, iteration: int) -> dict:
        metrics = evaluate_model(self.model, self.val, self.config.data.test_batch_size,
                                 progress=self.progress)
        self._log({"iteration": iteration, **{f"{iou}/{k}": v for iou, values in
                                               metrics.items() for k, v in values.items()}})
        return metrics

    def _probe(self, iteration: int) -> None:
        """The layer probe of the current weights (``solver.probe_period``), shared out over
        the processes, in eval mode and without touching the random state; the main
        process appends it to ``probe_history.csv`` and logs it."""
        with preserved_random_state(self.device):
            result = probe_layers(self.model, self.probe_set, None,
                                  self.config.data.test_batch_size, progress=self.progress)
        if self.main:
            rows = history_rows(result, iteration)
            append_history(self.output_dir, rows)
            self._log({"iteration": iteration, **history_metrics(rows)})
        distributed.barrier()

    def _setup(self) -> tuple[int, Path | None]:
        """Build everything; returns the first iteration to run and the checkpoint it
        resumes from."""
        config = self.config
        check_starting_weights(config)
        torch.manual_seed(config.solver.seed)
        self.model = DIMaskDINO(config.model).to(self.device).train()
        start, path = 0, last_checkpoint(self.output_dir) if self.resume else None
        if path is None:  # starting weights before any data is read
            note = initialize_model(self.model)
            if note and self.main:
                print(note, file=sys.stderr)
        self.train_set, self.val = load_datasets(config)
        self.optimizer = build_optimizer(self.model, config.solver)
        self.criterion = build_criterion(config)
        if path is not None:
            state = read_checkpoint(path)
            load_weights(self.model, state["model"], f"{path} holds another model than "
                         "this config's (resume with the config it was trained with)")
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            start = int(state["iteration"])
        self.probe_set = first_images(self.val, config.solver.probe_images)
        if self.main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if config.solver.probe_period:  # a resumed run redoes the probes after start
                truncate_history(self.output_dir, start)
            atomic_write_text(self.output_dir / "config.yaml",
                              yaml.safe_dump(config_to_dict(config), sort_keys=False))
        return start, path

    def _end_iteration(self, done: int, stop: interrupt.StopRequest) -> None:
        """Periodic probe, checkpoint and evaluation after ``done`` iterations; on a stop
        signal (agreed by every rank) a checkpoint at ``done`` and :class:`Interrupted`.
        :attr:`newest_checkpoint` is the newest one written."""
        solver, name = self.config.solver, f"model_{done:07d}.pth"
        if solver.probe_period and done % solver.probe_period == 0 and done < solver.max_iter:
            self._probe(done)  # before the checkpoint: a run killed between redoes it
        if solver.checkpoint_period and done % solver.checkpoint_period == 0 \
                and done < solver.max_iter:
            self.newest_checkpoint = self._checkpoint(name, done)
        if solver.eval_period and done % solver.eval_period == 0 and done < solver.max_iter:
            self._evaluate(done)
        if signum := stop.agreed():
            if self.newest_checkpoint is None or self.newest_checkpoint.name != name:
                self.newest_checkpoint = self._checkpoint(name, done)
            raise interrupt.Interrupted(signum, done, self.newest_checkpoint)

    def _step(self, model: torch.nn.Module, precision: Precision,
              scaler: torch.amp.GradScaler, iteration: int, images: list[torch.Tensor],
              targets: list[dict]) -> dict[str, float]:
        """One optimisation step of ``model`` (the DDP wrapper under torchrun) on a batch:
        forward in ``precision``, losses, backward, clipping, the optimizer's step. Returns
        the losses averaged over the processes; a non-finite total is a
        :class:`TrainingError` before any weight changes."""
        solver = self.config.solver
        batch, prepared = self.model.prepare_training_batch(images, targets)
        objects = distributed.all_reduce_mean(
            {"objects": float(sum(len(t["labels"]) for t in prepared))})["objects"]
        outputs = precision.run(model, batch, targets=prepared)  # losses in fp32
        losses = self.criterion(outputs, prepared, objects)
        values = torch.stack([v.detach().double() for v in losses.values()])
        averaged = distributed.all_reduce_mean(dict(zip(losses, values.tolist())))
        if not math.isfinite(averaged["loss"]):
            last = self.newest_checkpoint
            where = f"the last good checkpoint is {last}" if last else \
                "no checkpoint was written yet"
            raise TrainingError(f"the loss became {averaged['loss']} at iteration "
                                f"{iteration}; training stopped ({where})")
        self.optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        if solver.clip_norm > 0:
            scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), solver.clip_norm)
        scaler.step(self.optimizer)
        scaler.update()
        return averaged

    def _finish(self, start: int) -> TrainResult:
        """The final evaluation, probe and ``model_final.pth`` (or, for a run that had
        already finished, what it wrote)."""
        solver = self.config.solver
        final = self.output_dir / "model_final.pth"
        if start >= solver.max_iter and final.is_file():
            metrics = json.loads((self.output_dir / "final_metrics.json").read_text())
            return TrainResult(self.output_dir, solver.max_iter, final, metrics)
        metrics = self._evaluate(solver.max_iter)
        if solver.probe_period:
            self._probe(solver.max_iter)
        self.newest_checkpoint = self._checkpoint(final.name, solver.max_iter,
                                                  {"metrics": metrics})
        if self.main:
            atomic_write_text(self.output_dir / "final_metrics.json",
                              json.dumps(metrics, indent=2))
        return TrainResult(self.output_dir, solver.max_iter, self.newest_checkpoint, metrics)

    def run(self) -> TrainResult:
        config, solver = self.config, self.config.solver
        start, self.newest_checkpoint = self._setup()
        model = self.model
        if distributed.is_distributed():
            model = DistributedDataParallel(
                model, device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        precision = resolve_precision(solver.precision, self.device, config.model, solver.amp)
        scaler = torch.amp.GradScaler("cuda", enabled=precision.name == "fp16")
        stream = TrainingStream(self.train_set, LargeScaleJitter(
            config.data.image_size, config.data.min_scale, config.data.max_scale,
            config.data.flip), solver.seed)
        loader = training_loader(stream, self.local_batch, start, solver.max_iter,
                                 distributed.rank(), distributed.world_size(),
                                 config.data.workers, interrupt.ignore_stop_signals)
        announce = functools.partial(print, file=sys.stderr) \
            if self.progress and self.main else None
        with interrupt.StopRequest() as stop, \
                progress_bar(disable=not (self.progress and self.main)) as bar:
            task = bar.add_task(f"train {config.model.name}", total=solver.max_iter,
                                completed=start, status="")
            started = time.perf_counter()
            for iteration, (images, targets) in enumerate(
                    announced(loader, precision, announce), start):
                lr = set_learning_rate(self.optimizer, iteration, solver)
                losses = self._step(model, precision, scaler, iteration, images, targets)
                done = iteration + 1
                if done % solver.log_period == 0 or done == solver.max_iter:
                    self._log({"iteration": done, "lr": lr, "time": time.perf_counter()
                               - started, **losses})
                bar.update(task, completed=done, status=f"loss {losses['loss']:.3f}")
                self._end_iteration(done, stop)
        return self._finish(start)
