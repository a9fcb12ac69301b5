"""MaskDINO / DI-MaskDINO: backbone, encoder and predictor assembled (:class:`ModelConfig`
beside its parts' configs), with inference.

The model computes in the dtype of its weights and the caller's context: it resolves no
precision and enters no autocast (the engine's :mod:`~dimaskdino.engine.precision` does,
and hands :meth:`DIMaskDINO.predict` the forward to run)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from dimaskdino.config_ranges import (
    NON_EMPTY_TEXT,
    ConfigError,
    RangeError,
    above,
    at_least,
    between,
    check_ranges,
    each,
    one_of,
    ranged,
)
from dimaskdino.modeling.backbone import (
    ResNetConfig,
    SwinConfig,
    backbone_from_official,
    build_backbone,
)
from dimaskdino.modeling.box_ops import box_xyxy_to_cxcywh
from dimaskdino.modeling.encoder import EncoderConfig, MaskDINOEncoder
from dimaskdino.modeling.postprocess import MaskFormat, grouped_instance_inference
from dimaskdino.modeling.predictor import (
    DIMaskDINOPredictor,
    PredictorConfig,
    PredictorOutput,
)
from dimaskdino.modeling.preprocess import batch_images


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
class ModelOutput(PredictorOutput):
    """:meth:`DIMaskDINO.forward`'s outputs: the predictor's (:class:`PredictorOutput`),
    the ``backbone``'s maps by name and the ``encoder``'s dict."""

    backbone: dict[str, torch.Tensor] = field(default_factory=dict)
    encoder: dict = field(default_factory=dict)


@dataclass
class Prediction:
    """What :meth:`DIMaskDINO.predict` returns.

    ``layers``: with ``all_layers``, one dict per layer 0..L with ``pred_logits (B, Q, K)``,
    ``pred_boxes (B, Q, 4)`` normalized cxcywh (of the padded batch) and ``pred_masks
    (B, Q, H/4, W/4)`` logits; otherwise empty. ``instances``: per image the dict of
    :func:`~dimaskdino.modeling.postprocess.stacked_instance_inference` for the last layer.
    ``outputs``: every intermediate stage (backbone, encoder, predictor), for inspection
    (in bf16 after a bf16 prediction, but for ``layers`` and ``di``); from an exported
    model, a dict of what the file holds (``layers``, and ``di`` with its ``aux``).
    ``padded_size``, ``image_sizes``, ``output_sizes``: ``(H, W)`` of the padded batch, of
    each image inside it and of each image's reported instances (to post-process any layer
    as the last one).
    """

    layers: list[dict[str, torch.Tensor]] = field(default_factory=list)
    instances: list[dict[str, torch.Tensor]] = field(default_factory=list)
    outputs: ModelOutput | dict | None = field(default=None, repr=False)
    padded_size: tuple[int, int] = (0, 0)
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    output_sizes: list[tuple[int, int]] = field(default_factory=list)


class DIMaskDINO(nn.Module):
    """DI-MaskDINO: backbone, encoder and :class:`DIMaskDINOPredictor`; with DI and BATO off
    (``config.predictor``), MaskDINO."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone)
        self.encoder = MaskDINOEncoder(config.encoder)
        self.predictor = DIMaskDINOPredictor(config.predictor)
        # float32 roundings of the config values, as the official buffers hold
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1),
                             persistent=False)

    def forward(self, batch: torch.Tensor, all_layer_masks: bool = True,
                targets: list[dict[str, torch.Tensor]] | None = None) -> ModelOutput:
        """Normalized, padded images ``(B, 3, H, W)`` -> every stage's outputs. ``targets``
        (from :meth:`prepare_training_batch`) add the denoising queries in training mode."""
        features = self.backbone(batch)
        encoded = self.encoder(features)
        outputs = self.predictor(encoded, all_layer_masks, targets)
        return ModelOutput(**vars(outputs), backbone=features, encoder=encoded)

    def prepare_training_batch(self, images: Sequence[torch.Tensor], targets: Sequence[dict]
                               ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """Images and their annotations -> the padded batch and the criterion's targets.

        ``targets`` per image: ``labels (n,)``, ``boxes (n, 4)`` xyxy pixels, ``masks (n, H_i,
        W_i)`` bool and optionally ``seed``. Returned per image: ``labels``, ``boxes``
        normalized cxcywh (by the image's own size, as the official code does), ``masks``
        zero-padded to the batch (in the batch's dtype: point sampling reads them as
        numbers), and a ``generator`` seeded with ``seed`` for the image's
        random draws (denoising noise, matching and loss points).
        """
        batch, sizes = self.batch(images)
        height, width = batch.shape[-2:]
        prepared = []
        for target, (h, w) in zip(targets, sizes, strict=True):
            boxes = target["boxes"].to(batch)
            scale = boxes.new_tensor([w, h, w, h])
            masks = target["masks"].to(batch)
            padded = masks.new_zeros((masks.shape[0], height, width))
            padded[:, :h, :w] = masks
            item = {"labels": target["labels"].to(batch.device),
                    "boxes": box_xyxy_to_cxcywh(boxes) / scale, "masks": padded}
            if "seed" in target:
                item["generator"] = torch.Generator().manual_seed(int(target["seed"]))
            prepared.append(item)
        return batch, prepared

    def batch(self, images: Sequence[torch.Tensor]
              ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """``images`` -> the normalized, padded batch in the model's dtype and on its device,
        and each image's ``(H, W)`` (:func:`~dimaskdino.modeling.preprocess.batch_images`)."""
        return batch_images(images, self.pixel_mean, self.pixel_std,
                            self.config.size_divisibility)

    @torch.no_grad()
    def predict(self, images: Sequence[torch.Tensor],
                output_sizes: Sequence[tuple[int, int]] | None = None,
                all_layers: bool = False, masks: MaskFormat = "bitmap",
                forward: Callable[..., ModelOutput] | None = None) -> Prediction:
        """Detect and segment ``images`` (uint8 ``(3, H_i, W_i)`` in ``config.input_format``).

        ``output_sizes`` (default: the input sizes) are the ``(H, W)`` the instances are
        reported at. The batch runs through ``forward(batch, all_layer_masks=...)``, by
        default the model itself, in its dtype (the exact path);
        :func:`dimaskdino.engine.inference.predict` passes one that runs it in a reduced
        precision and returns float32 predictions. Without ``all_layers`` only the masks the
        last layer needs are computed, as in the official evaluation. ``masks``: the
        instances' mask format (see
        :func:`~dimaskdino.modeling.postprocess.stacked_instance_inference`).
        """
        sizes_out = requested_sizes(images, output_sizes)
        batch, image_sizes = self.batch(images)
        outputs = (forward or self)(batch, all_layer_masks=all_layers)
        return finish_prediction(outputs, tuple(batch.shape[-2:]), image_sizes, sizes_out,
                                 self.config.detections_per_image, all_layers, masks)


def requested_sizes(images: Sequence[torch.Tensor],
                    output_sizes: Sequence[tuple[int, int]] | None
                    ) -> list[tuple[int, int]]:
    """The ``(H, W)`` each image's instances are reported at: ``output_sizes``, by default
    the images' own sizes; ValueError unless there is one per image."""
    sizes = [tuple(img.shape[-2:]) for img in images] if output_sizes is None else [
        tuple(size) for size in output_sizes]
    if len(sizes) != len(images):
        raise ValueError(f"{len(images)} images but {len(sizes)} output sizes")
    return sizes


def finish_prediction(outputs: ModelOutput | dict, padded_size: tuple[int, int],
                      image_sizes: list[tuple[int, int]], output_sizes: list[tuple[int, int]],
                      topk: int, all_layers: bool, masks: MaskFormat) -> Prediction:
    """The post-processing of a forward pass, shared by :meth:`DIMaskDINO.predict` and an
    exported model's runtime (:mod:`dimaskdino.engine.exported`), so that both report
    through the same code: the last of ``outputs["layers"]`` (float32 per-layer dicts of
    the padded batch of ``padded_size``) -> each image's instances; ``outputs`` is kept
    whole, its layers as :attr:`Prediction.layers` with ``all_layers``."""
    last = outputs["layers"][-1]
    instances = grouped_instance_inference(
        last["pred_logits"], last["pred_masks"], last["pred_boxes"], padded_size, image_sizes,
        output_sizes, topk, masks)
    return Prediction(layers=outputs["layers"] if all_layers else [], instances=instances,
                      outputs=outputs, padded_size=padded_size, image_sizes=image_sizes,
                      output_sizes=output_sizes)
