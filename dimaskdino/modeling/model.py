"""MaskDINO / DI-MaskDINO: backbone, encoder and predictor assembled, with inference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from dimaskdino.config import ModelConfig
from dimaskdino.engine.precision import (
    INFERENCE_KEYS,
    Precision,
    float32_predictions,
    model_precision,
)
from dimaskdino.modeling.backbone import build_backbone
from dimaskdino.modeling.box_ops import box_xyxy_to_cxcywh
from dimaskdino.modeling.encoder import MaskDINOEncoder
from dimaskdino.modeling.postprocess import MaskFormat, grouped_instance_inference
from dimaskdino.modeling.predictor import DIMaskDINOPredictor, PredictorOutput
from dimaskdino.modeling.preprocess import batch_images


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
    :func:`~dimaskdino.modeling.postprocess.instance_inference` for the last layer.
    ``outputs``: every intermediate stage (backbone, encoder, predictor), for inspection
    (in bf16 after a bf16 ``predict``, but for ``layers`` and ``di``); from an exported
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
        batch, sizes = batch_images(images, self.pixel_mean, self.pixel_std,
                                    self.config.size_divisibility)
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

    @torch.no_grad()
    def predict(self, images: Sequence[torch.Tensor],
                output_sizes: Sequence[tuple[int, int]] | None = None,
                all_layers: bool = False, precision: str | Precision = "fp32",
                masks: MaskFormat = "bitmap") -> Prediction:
        """Detect and segment ``images`` (uint8 ``(3, H_i, W_i)`` in ``config.input_format``).

        ``output_sizes`` (default: the input sizes) are the ``(H, W)`` the instances are
        reported at. Runs on the model's device, in its dtype for ``precision="fp32"``, in
        bf16 autocast for ``"bf16"`` and as :mod:`~dimaskdino.engine.precision` decides for
        ``"auto"`` (or a resolved :class:`Precision`); the predictions are float32 (or the
        model's dtype) either way. Without ``all_layers`` only the masks the last layer
        needs are computed, as in the official evaluation. ``masks``: the instances' mask
        format (see :func:`~dimaskdino.modeling.postprocess.instance_inference`).
        """
        mode = precision if isinstance(precision, Precision) else model_precision(precision,
                                                                                  self)
        sizes_out = requested_sizes(images, output_sizes)
        batch, image_sizes = batch_images(images, self.pixel_mean, self.pixel_std,
                                          self.config.size_divisibility)
        with mode.autocast():
            outputs = self(mode.batch(batch), all_layer_masks=all_layers)
        outputs = float32_predictions(outputs, INFERENCE_KEYS)
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
