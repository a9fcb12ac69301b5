"""The three scales a study runs at: the preset and the overrides every cell starts from.

* ``tiny``: the ``tiny`` preset on the built-in synthetic data, from its pretrained
  backbone, on a CPU in minutes: batch 4 (at a fixed time it learns more than batch 8:
  benchmarks/RESULTS.md, "The tiny scale from a pretrained backbone"), 500 iterations,
  learning rate dropped at 416, so that every cell, the 9-decoder-layer one included, ends
  within 3 minutes on two cores. At that budget the models are far from the preset's
  (AP box about 15 on the synthetic val split, where the preset reaches about 30);
  ``--set solver.max_iter=900 --set 'solver.steps=[750]' --set solver.batch_size=8``
  gives a cell the preset's schedule. Its
  model is 10x smaller in queries (``num_queries`` 30, k1 60, 10 guiding tokens), so the
  cells' numbers of selected tokens (``first_selected_queries``, ``extra_selected_queries``,
  ``num_queries``) are scaled by 30 / 300: (600, 450, 300) becomes (60, 45, 30). Decoder
  depths (3, 6, 9) are kept.
* ``small``: a user's dataset (``--data``, any spec) with the paper's R50 model and data
  pipeline on a short schedule: batch 8, 5000 iterations, learning rate 1e-4 dropped x0.1
  at iteration 4000, a checkpoint every 1000 iterations, evaluation at the end only. The
  paper's BDD100K preset is the base for ``bdd100k:`` specs, the COCO one otherwise;
  ``model.predictor.num_classes`` follows the dataset.
* ``paper``: the paper's schedules, ``r50-coco-12ep`` for ``--data coco:ROOT`` and
  ``r50-bdd100k-68ep`` for ``--data bdd100k:ROOT``, limited to the datasets the paper ran
  the study on (the imbalance-tolerance test: BDD100K only).

The ``small`` and ``paper`` scales run on the R50 (``--backbone r50``) or on Swin-L
(``--backbone swinl``: the ``swinl-*`` presets, same schedules); ``tiny`` is R18-sized.
They start from the paper's ImageNet backbone: ``--set model.backbone_weights=PATH``
(``none``: from scratch on purpose), checked before any data is read or anything written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import yaml

from dimaskdino.config import ConfigError, apply_overrides, check_starting_weights, preset
from dimaskdino.data.specs import num_categories, resolve_dataset
from dimaskdino.experiments.registry import Study

SCALES = ("tiny", "small", "paper")
BACKBONES = ("r50", "swinl")
PAPER_PRESETS = {"coco": "r50-coco-12ep", "bdd100k": "r50-bdd100k-68ep"}
TINY_ITERATIONS = 500
SMALL_SCHEDULE = ("solver.batch_size=8", "solver.max_iter=5000", "solver.steps=[4000]",
                  "solver.checkpoint_period=1000", "solver.eval_period=0")
SELECTION_KEYS = ("model.predictor.first_selected_queries",
                  "model.predictor.extra_selected_queries", "model.predictor.num_queries")


@dataclass(frozen=True)
class ScaleBase:
    """What every cell of a study starts from at one scale: the preset's name and the
    overrides applied to it first."""

    preset: str
    overrides: tuple[str, ...]


def tiny_schedule(iterations: int) -> tuple[str, ...]:
    """The tiny scale's schedule over ``iterations`` of batch 4: the learning rate dropped
    x0.1 at 5/6 of it (as the ``tiny`` preset's), four checkpoints."""
    return ("solver.batch_size=4", f"solver.max_iter={iterations}",
            f"solver.steps=[{max(1, iterations * 5 // 6)}]",
            f"solver.checkpoint_period={max(1, iterations // 4)}")


TINY_SCHEDULE = tiny_schedule(TINY_ITERATIONS)


def tiny_factor() -> float:
    """The tiny model's queries over the paper model's (30 / 300)."""
    tiny = preset("tiny").model.predictor.num_queries
    return tiny / preset("r50-coco-12ep").model.predictor.num_queries


def scale_selection(overrides: tuple[str, ...], factor: float) -> tuple[str, ...]:
    """``overrides`` with the numbers of selected tokens (:data:`SELECTION_KEYS`) times
    ``factor`` (rounded, at least 1); other overrides unchanged."""
    def scaled(k: int) -> int:
        return max(1, round(k * factor))

    out = []
    for item in overrides:
        key, _, text = item.partition("=")
        value = yaml.safe_load(text)
        if key in SELECTION_KEYS and value is not None:
            value = [scaled(k) for k in value] if isinstance(value, list) else scaled(value)
            out.append(f"{key}={json.dumps(value)}")
        else:
            out.append(item)
    return tuple(out)


def _kind(data: str) -> str:
    return data.partition(":")[0]


def _check_weights(name: str, sets: tuple[str, ...]) -> None:
    """The starting weights the paper's presets need, checked before any data is read."""
    check_starting_weights(apply_overrides(preset(name), list(sets)), option="--set ")


def _on_backbone(name: str, backbone: str) -> str:
    """The preset ``name`` (an ``r50-*`` one) for ``backbone``."""
    return f"{backbone}-{name.removeprefix('r50-')}"


def scale_base(scale: str, study: Study, data: str | None, *, backbone: str = "r50",
               sets: tuple[str, ...] = ()) -> ScaleBase:
    """The preset and first overrides of ``study`` at ``scale`` on dataset spec ``data``
    with ``backbone`` (:data:`BACKBONES`, small and paper scales); ConfigError (or
    DatasetError for a spec that does not resolve) on bad input, and on missing starting
    weights (:func:`check_starting_weights` of the user's ``sets``)."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {backbone!r}; choose one of "
                          f"{', '.join(BACKBONES)}")
    if scale == "tiny" and backbone != "r50":
        raise ConfigError(f"--backbone {backbone} runs at the small and paper scales; the "
                          "tiny scale has its own small backbone")
    if scale == "tiny":
        if data not in (None, "synthetic"):
            raise ConfigError("the tiny scale trains on the synthetic data; drop --data or "
                              "use --scale small / paper")
        return ScaleBase("tiny", TINY_SCHEDULE)
    if data is None:
        raise ConfigError(f"the {scale} scale needs --data (e.g. coco:datasets/coco or "
                          "bdd100k:datasets/bdd100k)")
    dataset = f"data.dataset={json.dumps(data)}"
    if scale == "small":
        name = PAPER_PRESETS["bdd100k" if _kind(data) == "bdd100k" else "coco"]
        name = _on_backbone(name, backbone)
        _check_weights(name, sets)
        classes = f"model.predictor.num_classes={num_categories(data)}"
        return ScaleBase(name, (dataset, classes, *SMALL_SCHEDULE))
    if _kind(data) not in PAPER_PRESETS or not data.partition(":")[2]:
        raise ConfigError("the paper scale runs on coco:ROOT or bdd100k:ROOT, not "
                          f"{data!r} (use --scale small for other datasets)")
    if _kind(data) not in study.datasets:
        raise ConfigError(f"the paper ran {study.name} ({study.table}) on "
                          f"{' and '.join(study.datasets)} only; give --data "
                          f"{study.datasets[0]}:ROOT or use --scale small")
    name = _on_backbone(PAPER_PRESETS[_kind(data)], backbone)
    _check_weights(name, sets)
    resolve_dataset(data, "val")
    return ScaleBase(name, (dataset,))
