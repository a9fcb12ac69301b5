"""The named experiments (:func:`preset`): ``tiny`` and the paper's schedules on R50 and
Swin-L, from the table :data:`PRESETS`, and what each needs to start
(:func:`check_starting_weights`)."""

from __future__ import annotations

import dataclasses

from dimaskdino.config.schema import (
    PRESET_NAMES,
    DataConfig,
    ExperimentConfig,
    LossConfig,
    SolverConfig,
)
from dimaskdino.config_ranges import ConfigError
from dimaskdino.data.synthetic import SyntheticSpec
from dimaskdino.modeling.backbone import ResNetConfig, SwinConfig
from dimaskdino.modeling.encoder import EncoderConfig
from dimaskdino.modeling.model import ModelConfig
from dimaskdino.modeling.predictor import PredictorConfig

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
PRESET_NAMES.extend(PRESETS)


def starts_from_imagenet(name: str) -> bool:
    """Whether the preset ``name`` starts its backbone, as the paper does, from ImageNet
    weights the user provides: those that state no ``model.backbone_weights`` of their own
    (``tiny`` states its built-in pretraining)."""
    return name in PRESETS and PRESETS[name]("dimaskdino").model.backbone_weights is None


PAPER_BACKBONE = ("detectron2://ImageNetPretrained/torchvision/R-50.pkl (torchvision's "
                  "ImageNet-1k ResNet-50 in detectron2 names), published in detectron2's "
                  "model zoo: https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/"
                  "torchvision/R-50.pkl")
SWIN_BACKBONE = ("swin_large_patch4_window12_384_22k.pth (ImageNet-22k Swin-L, window 12, "
                 "384 px), published on the Swin Transformer repository's v1.0.0 release "
                 "(github.com/SwinTransformer/storage)")


def check_starting_weights(config: ExperimentConfig, option: str = "") -> None:
    """ConfigError (one line) where the run's starting weights are not stated as its preset
    needs: those that start from ImageNet weights (:func:`starts_from_imagenet`: the
    ``r50-*`` and ``swinl-*`` presets) need ``model.backbone_weights`` (``none`` trains from
    scratch on purpose) or ``model.weights``. ``option`` prefixes the suggested override
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
    if model.backbone_weights is None and model.weights is None \
            and starts_from_imagenet(config.preset):
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
