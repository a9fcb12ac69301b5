"""The experiment's typed configuration: data, solver, loss and the whole experiment, each
field with its valid range (:mod:`dimaskdino.config_ranges`); the model's is
:class:`~dimaskdino.modeling.model.ModelConfig`, beside its parts' configs.

The preset an experiment started from is one of :data:`PRESET_NAMES`, which
:mod:`dimaskdino.config.presets` fills from its table (the table builds these classes, so
this module cannot read it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dimaskdino.config_ranges import (
    Described,
    OneOf,
    above,
    at_least,
    between,
    check_ranges,
    each,
    one_of,
    range_rows,
    ranged,
    register_keys,
)
from dimaskdino.data.specs import is_dataset_spec
from dimaskdino.data.synthetic import SEED_MAX, SyntheticSpec
from dimaskdino.modeling.criterion import LossWeights
from dimaskdino.modeling.model import ModelConfig

# the names of the presets, in the table's order (dimaskdino.config.presets adds them)
PRESET_NAMES: list[str] = []


@dataclass
class DataConfig:
    """Where the images come from and how they are augmented (MaskDINO's LSJ)."""

    # a dataset spec (see dimaskdino.data.specs)
    dataset: str = ranged("synthetic", Described(
        "a dataset spec: synthetic, coco:ROOT, bdd100k:ROOT, coco-json:ANN.json:IMAGE_DIR "
        "or images:DIR", is_dataset_spec))
    image_size: tuple[int, int] = ranged((1024, 1024), each(at_least(1)))  # LSJ crop (H, W)
    min_scale: float = ranged(0.1, above(0))
    max_scale: float = ranged(2.0, at_least("min_scale"))
    flip: bool = True
    # evaluation resize: shorter side (0: the images' own size) ...
    test_short: int = ranged(800, at_least(0))
    test_max_size: int = ranged(1333, at_least(1))  # ... and the longer side's cap
    test_batch_size: int = ranged(1, at_least(1))
    workers: int = ranged(2, at_least(0))
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)

    def __post_init__(self) -> None:
        check_ranges(self)


PRECISIONS = ("auto", "fp32", "bf16")  # what they mean: dimaskdino/engine/precision.py


@dataclass
class SolverConfig:
    """AdamW with warm-up and a step schedule (detectron2's ``SOLVER``); ``batch_size`` is
    the global batch over all processes."""

    batch_size: int = ranged(16, at_least(1))
    lr: float = ranged(1e-4, at_least(0))  # 0 keeps the weights (AdamW's decay is lr x wd)
    weight_decay: float = ranged(0.05, at_least(0))
    backbone_multiplier: float = ranged(0.1, at_least(0))
    max_iter: int = ranged(88500, at_least(1))
    # step: x gamma at each of ``steps`` (detectron2's WarmupMultiStepLR); cosine: half a
    # cosine from the base rate to 0 at max_iter (WarmupCosineLR; steps, gamma unused)
    schedule: str = ranged("step", one_of("step", "cosine"))
    # iterations where the rate is multiplied by gamma
    steps: tuple[int, ...] = ranged((81125,), each(between(1, "max_iter"), increasing=True))
    gamma: float = ranged(0.1, above(0))
    warmup_iters: int = ranged(10, at_least(0))
    warmup_factor: float = ranged(1.0, between(0, 1))
    # full-model gradient clipping; 0 = off
    clip_norm: float = ranged(0.01, at_least(0))
    amp: bool = True                         # CUDA: fp16 AMP under precision auto
    # auto | fp32 | bf16 (engine/precision.py)
    precision: str = ranged("auto", one_of(*PRECISIONS))
    checkpoint_period: int = ranged(5000, at_least(0))  # 0 = only at the end
    eval_period: int = ranged(5000, at_least(0))        # 0 = only at the end
    probe_period: int = ranged(0, at_least(0))  # layer probe every N iterations; 0 = off
    probe_images: int = ranged(0, at_least(0))  # ... of the first N val images; 0 = all
    log_period: int = ranged(20, at_least(1))
    seed: int = ranged(0, between(0, SEED_MAX))

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class LossConfig(LossWeights):
    """Loss weights (see :class:`LossWeights`) and the mask loss's point sampling."""

    num_points: int = ranged(12544, at_least(1))
    oversample: float = ranged(3.0, at_least(1))     # candidates per point ...
    importance: float = ranged(0.75, between(0, 1))  # ... and the share chosen by uncertainty


@dataclass
class ExperimentConfig:
    """One training run: model, data, solver and loss."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    preset: str = ranged("", OneOf(lambda: ("", *PRESET_NAMES)))  # the preset it started from

    def __post_init__(self) -> None:
        check_ranges(self)


register_keys(ExperimentConfig)


def ranges_table() -> str:
    """The README's table of every config key and its valid values (Markdown), made from
    the ranges the fields state (``python -c 'from dimaskdino.config import ranges_table;
    print(ranges_table())'``)."""
    rows = ["| key | valid values |", "| --- | --- |"]
    rows += [f"| `{key}` | {text} |" for key, text in range_rows(ExperimentConfig)]
    return "\n".join(rows)


