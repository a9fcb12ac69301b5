"""Typed configuration: the model, the experiment (data, solver, loss), presets,
``key=value`` overrides, and the reader of official detectron2-style YAML configs.

An official config is either a full ``cfg.dump()`` or a config file whose ``_BASE_`` chain
sets only some keys; the others take detectron2's and MaskDINO's defaults
(:data:`OFFICIAL_DEFAULTS`, the ones the model reads).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dimaskdino.config_ranges import (
    NON_EMPTY_TEXT,
    ConfigError,
    Described,
    OneOf,
    RangeError,
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
from dimaskdino.modeling.backbone import ResNetConfig, SwinConfig, backbone_from_official
from dimaskdino.modeling.criterion import LossWeights
from dimaskdino.modeling.encoder import EncoderConfig
from dimaskdino.modeling.predictor import PredictorConfig

# detectron2's defaults overridden by add_maskdino_config / add_dimaskdino_config, limited
# to the keys dimask reads.
OFFICIAL_DEFAULTS: dict = {
    "MODEL": {
        "BACKBONE": {"NAME": "build_resnet_backbone", "FREEZE_AT": 2},
        "RESNETS": {
            "DEPTH": 50, "NUM_GROUPS": 1, "WIDTH_PER_GROUP": 64, "STEM_OUT_CHANNELS": 64,
            "RES2_OUT_CHANNELS": 256, "STRIDE_IN_1X1": True, "RES5_DILATION": 1,
            "OUT_FEATURES": ["res4"], "NORM": "FrozenBN",
            "DEFORM_ON_PER_STAGE": [False, False, False, False],
        },
        "PIXEL_MEAN": [103.530, 116.280, 123.675],
        "PIXEL_STD": [1.0, 1.0, 1.0],
        "SEM_SEG_HEAD": {
            "NUM_CLASSES": 54, "CONVS_DIM": 128, "MASK_DIM": 256, "NORM": "GN",
            "IN_FEATURES": ["p2", "p3", "p4", "p5"], "COMMON_STRIDE": 4,
            "PIXEL_DECODER_NAME": "MaskDINOEncoder",
            "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
            "DIM_FEEDFORWARD": 1024, "TOTAL_NUM_FEATURE_LEVELS": 4,
            "FEATURE_ORDER": "high2low", "TRANSFORMER_ENC_LAYERS": 0,
        },
        "MaskDINO": {
            "TRANSFORMER_DECODER_NAME": "MaskDINODecoder", "HIDDEN_DIM": 256,
            "NUM_OBJECT_QUERIES": 100, "NHEADS": 8, "DROPOUT": 0.1, "DIM_FEEDFORWARD": 2048,
            "DEC_LAYERS": 6, "TI_LAYERS": 2, "FIRST_SELECTED_QUERIES": 600,
            "NUM_GUIDING_TOKENS": 50, "ENFORCE_INPUT_PROJ": False, "TWO_STAGE": True,
            "INITIALIZE_BOX_TYPE": "no", "INITIAL_PRED": True, "LEARN_TGT": False,
            "SIZE_DIVISIBILITY": 32,
        },
    },
    "INPUT": {"FORMAT": "BGR"},
    "TEST": {"DETECTIONS_PER_IMAGE": 100},
}


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_chain(path: Path, seen: tuple[Path, ...]) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"_BASE_ cycle through {path}")
    if not path.is_file():
        raise ConfigError(f"config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a mapping of config keys")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    return _merge(_read_chain(path.parent / base, (*seen, path)), data)


def load_official_config(path: str | Path) -> dict:
    """Read an official YAML (a full dump, or a file with a ``_BASE_`` chain, relative to
    each file) over :data:`OFFICIAL_DEFAULTS`."""
    return _merge(OFFICIAL_DEFAULTS, _read_chain(Path(path), ()))


@dataclass
class ModelConfig:
    """Everything needed to build a MaskDINO / DI-MaskDINO model."""

    # a ResNet or a Swin Transformer, told apart by their fields
    backbone: ResNetConfig | SwinConfig = field(
        default_factory=lambda: ResNetConfig(stride_in_1x1=False))
    encoder: EncoderConfig | None = None  # None: derived from the backbone's shapes
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    pixel_mean: tuple[float, float, float] = ranged((123.675, 116.28, 103.53),
                                                    each(between(0, 255)))
    pixel_std: tuple[float, float, float] = ranged((58.395, 57.12, 57.375), each(above(0)))
    input_format: str = ranged("RGB", one_of("RGB", "BGR"))
    size_divisibility: int = ranged(32, at_least(1))
    detections_per_image: int = ranged(100, at_least(1))
    # starting weights, loaded by the trainer before the first iteration (see
    # dimaskdino.engine.initialization): ImageNet weights of the backbone (a torchvision
    # .pth or detectron2 .pkl; "none": from scratch on purpose), or the whole model from a
    # dimask checkpoint or an official one (with its YAML, weights_config)
    backbone_weights: str | None = ranged(None, NON_EMPTY_TEXT)
    weights: str | None = ranged(None, NON_EMPTY_TEXT)
    weights_config: str | None = ranged(None, NON_EMPTY_TEXT)

    def __post_init__(self) -> None:
        check_ranges(self)
        channels, strides = self.backbone.output_shapes()
        if self.encoder is None:
            self.encoder = EncoderConfig(in_channels=channels, in_strides=strides)
            self._check_parts_agree()
            return
        # the encoder's inputs always follow the backbone (an override may change it)
        missing = set(self.encoder.in_channels) - set(channels)
        if missing:
            raise ConfigError(f"the encoder reads {sorted(missing)}, which the backbone does "
                              f"not output ({sorted(channels)})")
        self.encoder.in_channels = {f: channels[f] for f in self.encoder.in_channels}
        self.encoder.in_strides = {f: strides[f] for f in self.encoder.in_channels}
        self._check_parts_agree()

    def _check_parts_agree(self) -> None:
        """The predictor reads the encoder's tokens, levels and mask features as they are;
        the encoder's transformer reads backbone features it has."""
        encoder, predictor = self.encoder, self.predictor
        unread = sorted(set(encoder.transformer_in_features) - set(encoder.in_channels))
        if unread:
            raise RangeError(EncoderConfig, "transformer_in_features",
                             encoder.transformer_in_features,
                             f"some of the backbone's outputs {sorted(encoder.in_channels)}")
        for ours, theirs in (("hidden_dim", "conv_dim"), ("mask_dim", "mask_dim"),
                             ("levels", "total_levels")):
            if getattr(predictor, ours) != getattr(encoder, theirs):
                raise RangeError(PredictorConfig, ours, getattr(predictor, ours),
                                 f"equal to model.encoder.{theirs} ({getattr(encoder, theirs)})")

    @property
    def name(self) -> str:
        """``DI-MaskDINO`` when DI or BATO is on, else ``MaskDINO``."""
        p = self.predictor
        on = p.first_selected_queries is not None or p.num_guiding_tokens is not None
        return "DI-MaskDINO" if on else "MaskDINO"

    @classmethod
    def from_official(cls, cfg: dict) -> ModelConfig:
        """From a config read by :func:`load_official_config`."""
        model = cfg["MODEL"]
        try:
            backbone = backbone_from_official(model)
            channels, strides = backbone.output_shapes()
            encoder = EncoderConfig.from_official(model, channels, strides)
            predictor = PredictorConfig.from_official(model)
        except RangeError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"unsupported official config: {exc}") from None
        return cls(
            backbone=backbone, encoder=encoder, predictor=predictor,
            pixel_mean=tuple(model["PIXEL_MEAN"]), pixel_std=tuple(model["PIXEL_STD"]),
            input_format=cfg["INPUT"]["FORMAT"],
            size_divisibility=model["MaskDINO"]["SIZE_DIVISIBILITY"],
            detections_per_image=cfg["TEST"]["DETECTIONS_PER_IMAGE"],
        )


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
    preset: str = ranged("", OneOf(lambda: ("", *PRESETS)))  # the preset it started from

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


def config_to_dict(config) -> dict:
    """A dataclass config -> plain nested dicts and lists (YAML/JSON-ready)."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(dataclasses.asdict(config))


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value, hint, path: str):
    """``value`` checked against (and converted to) the type ``hint``, or ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(hint), path)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return config_from_dict(hint, value, path)
    if origin in (tuple, dict):
        return _coerce_container(value, origin, typing.get_args(hint), path)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"{path}: expected {_type_name(hint)}, got {value!r}")


def _coerce_union(value, args: tuple, path: str):
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    classes = [a for a in options if dataclasses.is_dataclass(a)]
    if isinstance(value, dict) and classes:
        # a union of dataclasses (the backbones): the one whose fields fit the keys best,
        # so that errors are reported against it
        best = min(classes, key=lambda a: len(set(value) - {f.name for f in
                                                             dataclasses.fields(a)}))
        return _coerce(value, best, path)
    for arg in options[:-1]:
        try:
            return _coerce(value, arg, path)
        except ConfigError:
            continue
    return _coerce(value, options[-1], path)


def _coerce_container(value, origin, args: tuple, path: str):
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {_coerce(k, args[0], path): _coerce(v, args[1], f"{path}.{k}")
                for k, v in value.items()}
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path}: expected a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
    return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))


def config_from_dict(cls, data: dict, path: str = ""):
    """Build the dataclass ``cls`` from nested dicts (as :func:`config_to_dict` writes);
    unknown keys and wrongly typed values raise ConfigError naming the key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        key = f"{path}.{sorted(unknown)[0]}".lstrip(".")
        raise ConfigError(f"unknown config key {key!r}")
    kwargs = {name: _coerce(value, hints[name], f"{path}.{name}".lstrip("."))
              for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or cls.__name__}: {exc}") from None


def apply_overrides(config, overrides: list[str]):
    """``["solver.max_iter=100", "model.predictor.dec_layers=6", ...]`` applied in order to
    a dataclass config (an :class:`ExperimentConfig`, or any other: the pretraining's).

    Values are read as YAML (``6``, ``1e-4``, ``true``, ``[512, 512]``, ``null``) and checked
    against the key's type; a key naming no config field is an error.
    """
    data = config_to_dict(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: cannot read the value {text!r}") from None
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ConfigError(f"unknown config key {key!r}")
        node[parts[-1]] = value
    return config_from_dict(type(config), data)


MODELS = ("dimaskdino", "maskdino")


def _paper_model(num_classes: int, model: str) -> ModelConfig:
    """The paper's R50 models: 6 encoder and decoder layers, 256 channels, k1 = 600,
    k2 = 300, 50 guiding tokens (MaskDINO: 300 queries, no DI, no BATO)."""
    di = model == "dimaskdino"
    return ModelConfig(predictor=PredictorConfig(
        num_classes=num_classes, dec_layers=6,
        first_selected_queries=600 if di else None,
        num_guiding_tokens=50 if di else None))


def swin_large(model: ModelConfig) -> ModelConfig:
    """``model`` on the Swin-L backbone as the official Swin-L instance configs build it:
    embed 192, depths (2, 2, 18, 2), window 12 (the ImageNet-22k 384 weights), res2..res5 in
    the encoder plus one extra level (5 levels), ``bitmask`` box initialisation."""
    backbone = SwinConfig(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48),
                          window_size=12, pretrain_img_size=384, drop_path_rate=0.3)
    channels, strides = backbone.output_shapes()
    encoder = dataclasses.replace(model.encoder, in_channels=channels, in_strides=strides,
                                  transformer_in_features=tuple(channels), total_levels=5)
    predictor = dataclasses.replace(model.predictor, levels=5, initialize_box_type="bitmask")
    return dataclasses.replace(model, backbone=backbone, encoder=encoder, predictor=predictor)


def _tiny(model: str) -> ExperimentConfig:
    di = model == "dimaskdino"
    backbone = ResNetConfig(depth=18, stem_out_channels=32, res2_out_channels=32, norm="GN")
    channels, strides = backbone.output_shapes()
    return ExperimentConfig(
        model=ModelConfig(
            backbone=backbone,
            encoder=EncoderConfig(in_channels=channels, in_strides=strides, conv_dim=64,
                                  mask_dim=64, layers=2, heads=4, dim_feedforward=128),
            predictor=PredictorConfig(
                num_classes=6, hidden_dim=64, num_queries=30, dim_feedforward=128,
                dec_layers=3, mask_dim=64, heads=4, dn_num=30,
                first_selected_queries=60 if di else None,
                num_guiding_tokens=10 if di else None),
            detections_per_image=30,
            # classification-pretrained on synthetic shapes, as the paper's backbones are on
            # ImageNet (dimaskdino.engine.pretrain; built once, cached)
            backbone_weights="pretrained:tiny"),
        # whole 128 x 160 images at the test scale, flipped only: scale jitter slowed
        # learning at this budget (benchmarks/RESULTS.md, "Tiny schedules")
        data=DataConfig(image_size=(128, 160), min_scale=1.0, max_scale=1.0,
                        test_short=128, test_max_size=160, test_batch_size=8, workers=0,
                        synthetic=SyntheticSpec(num_train=256, num_val=32, height=128,
                                                width=160, max_objects=5)),
        # from the pretrained backbone, trained along at the full rate (x0.1 measured worse;
        # frozen with a doubled rate learned faster at seed 0 but stalled at seed 1:
        # benchmarks/RESULTS.md, "The tiny scale from a pretrained backbone")
        solver=SolverConfig(batch_size=8, lr=1e-3, backbone_multiplier=1.0, max_iter=900,
                            steps=(750,), warmup_iters=50, warmup_factor=0.01,
                            clip_norm=0.1, checkpoint_period=300, eval_period=0,
                            log_period=10, probe_period=150),  # probing: ~2% of the time
        loss=LossConfig(num_points=256),
    )


def _coco(model: str, schedule: str) -> ExperimentConfig:
    max_iter, steps = {"12ep": (88500, (81125,)), "50ep": (368750, (327778, 355092))}[schedule]
    return ExperimentConfig(model=_paper_model(80, model),
                            data=DataConfig(dataset="coco:datasets/coco"),
                            solver=SolverConfig(max_iter=max_iter, steps=steps))


def _bdd100k(model: str) -> ExperimentConfig:
    # 7000 training images, batch 8: 875 iterations per epoch; 68 epochs, drop at epoch 50
    return ExperimentConfig(
        model=_paper_model(8, model), data=DataConfig(dataset="bdd100k:datasets/bdd100k"),
        solver=SolverConfig(batch_size=8, max_iter=68 * 875, steps=(50 * 875,)))


def _on_swin_large(make):
    """A preset maker with its model moved onto Swin-L (:func:`swin_large`)."""
    def swin_preset(model: str) -> ExperimentConfig:
        config = make(model)
        config.model = swin_large(config.model)
        return config
    return swin_preset


PRESETS = {
    "tiny": _tiny,
    "r50-coco-12ep": lambda model: _coco(model, "12ep"),
    "r50-coco-50ep": lambda model: _coco(model, "50ep"),
    "r50-bdd100k-68ep": _bdd100k,
    "swinl-coco-12ep": _on_swin_large(lambda model: _coco(model, "12ep")),
    "swinl-coco-50ep": _on_swin_large(lambda model: _coco(model, "50ep")),
    "swinl-bdd100k-68ep": _on_swin_large(_bdd100k),
}


# presets whose backbone starts, as in the paper, from ImageNet weights
PRETRAINED_PRESETS = ("r50-coco-12ep", "r50-coco-50ep", "r50-bdd100k-68ep", "swinl-coco-12ep",
                      "swinl-coco-50ep", "swinl-bdd100k-68ep")
PAPER_BACKBONE = ("detectron2://ImageNetPretrained/torchvision/R-50.pkl (torchvision's "
                  "ImageNet-1k ResNet-50 in detectron2 names), published in detectron2's "
                  "model zoo: https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/"
                  "torchvision/R-50.pkl")
SWIN_BACKBONE = ("swin_large_patch4_window12_384_22k.pth (ImageNet-22k Swin-L, window 12, "
                 "384 px), published on the Swin Transformer repository's v1.0.0 release "
                 "(github.com/SwinTransformer/storage)")


def check_starting_weights(config: ExperimentConfig, option: str = "") -> None:
    """ConfigError (one line) where the run's starting weights are not stated as its preset
    needs: the ``r50-*`` and ``swinl-*`` presets need ``model.backbone_weights`` (``none``
    trains from scratch on purpose) or ``model.weights``. ``option`` prefixes the suggested override
    (``"--set "`` for the studies)."""
    model = config.model
    if model.weights is not None and model.backbone_weights not in (None, "none"):
        raise ConfigError("model.weights initialises the whole model, backbone included; "
                          "drop model.backbone_weights")
    if model.weights_config is not None and model.weights is None:
        raise ConfigError("model.weights_config is the YAML of an official checkpoint given "
                          "as model.weights, which is not set")
    if model.backbone_weights == "none" and model.weights is None \
            and getattr(model.backbone, "freeze_at", 0) > 0:
        raise ConfigError(f"model.backbone_weights=none trains the backbone from scratch, but "
                          f"model.backbone.freeze_at={model.backbone.freeze_at} freezes random "
                          f"stages; add {option}model.backbone.freeze_at=0")
    if config.preset in PRETRAINED_PRESETS and model.backbone_weights is None \
            and model.weights is None:
        paper = SWIN_BACKBONE if isinstance(model.backbone, SwinConfig) else PAPER_BACKBONE
        raise ConfigError(f"the {config.preset} preset starts from ImageNet weights, as the "
                          f"paper does: {paper}; download it and pass {option}"
                          f"model.backbone_weights=PATH (or a whole model: {option}"
                          f"model.weights=CHECKPOINT; {option}model.backbone_weights=none "
                          "trains the backbone from scratch on purpose)")


def preset(name: str, model: str = "dimaskdino") -> ExperimentConfig:
    """A named experiment for ``model`` (``dimaskdino`` or ``maskdino``).

    ``tiny``: a small model on the built-in synthetic data that trains on a CPU in minutes.
    ``r50-coco-12ep`` / ``r50-coco-50ep``: the paper's COCO schedules (batch 16, LSJ 1024).
    ``r50-bdd100k-68ep``: BDD100K, batch 8, 68 epochs, learning-rate drop at epoch 50.
    ``swinl-*``: the same experiments on the Swin-L backbone (:func:`swin_large`), the
    paper's Tab. 1 Swin-L rows.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    config = PRESETS[name](model)
    config.preset = name
    return config
