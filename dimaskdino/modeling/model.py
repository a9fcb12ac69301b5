"""MaskDINO / DI-MaskDINO: backbone, encoder and predictor assembled, with inference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from dimaskdino.config import ModelConfig
from dimaskdino.modeling.backbone import ResNet
from dimaskdino.modeling.encoder import MaskDINOEncoder
from dimaskdino.modeling.postprocess import instance_inference
from dimaskdino.modeling.predictor import MaskDINOPredictor
from dimaskdino.modeling.preprocess import batch_images


@dataclass
class Prediction:
    """What :meth:`DIMaskDINO.predict` returns.

    ``layers``: with ``all_layers``, one dict per layer 0..L with ``pred_logits (B, Q, K)``,
    ``pred_boxes (B, Q, 4)`` normalized cxcywh (of the padded batch) and ``pred_masks
    (B, Q, H/4, W/4)`` logits; otherwise empty. ``instances``: per image the dict of
    :func:`~dimaskdino.modeling.postprocess.instance_inference` for the last layer.
    ``outputs``: every intermediate stage (backbone, encoder, predictor), for inspection.
    """

    layers: list[dict[str, torch.Tensor]] = field(default_factory=list)
    instances: list[dict[str, torch.Tensor]] = field(default_factory=list)
    outputs: dict = field(default_factory=dict, repr=False)


class DIMaskDINO(nn.Module):
    """MaskDINO and DI-MaskDINO (DI and BATO switched by ``config.predictor``)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = ResNet(config.backbone)
        self.encoder = MaskDINOEncoder(config.encoder)
        self.predictor = MaskDINOPredictor(config.predictor)
        # float32 roundings of the config values, as the official buffers hold
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1),
                             persistent=False)

    def forward(self, batch: torch.Tensor, all_layer_masks: bool = True) -> dict:
        """Normalized, padded images ``(B, 3, H, W)`` -> the predictor's dict (see
        :class:`MaskDINOPredictor`) plus ``backbone`` and ``encoder`` outputs."""
        features = self.backbone(batch)
        encoded = self.encoder(features)
        outputs = self.predictor(encoded["multi_scale_features"], encoded["mask_features"],
                                 all_layer_masks)
        outputs.update(backbone=features, encoder=encoded)
        return outputs

    @torch.no_grad()
    def predict(self, images: Sequence[torch.Tensor],
                output_sizes: Sequence[tuple[int, int]] | None = None,
                all_layers: bool = False) -> Prediction:
        """Detect and segment ``images`` (uint8 ``(3, H_i, W_i)`` in ``config.input_format``).

        ``output_sizes`` (default: the input sizes) are the ``(H, W)`` the instances are
        reported at. Runs in the model's dtype and device. Without ``all_layers`` only the
        masks the last layer needs are computed, as in the official evaluation.
        """
        sizes_out = list(output_sizes) if output_sizes is not None else [
            tuple(img.shape[-2:]) for img in images]
        if len(sizes_out) != len(images):
            raise ValueError(f"{len(images)} images but {len(sizes_out)} output sizes")
        batch, image_sizes = batch_images(images, self.pixel_mean, self.pixel_std,
                                          self.config.size_divisibility)
        outputs = self(batch, all_layer_masks=all_layers)
        last = outputs["layers"][-1]
        padded = tuple(batch.shape[-2:])
        instances = [
            instance_inference(last["pred_logits"][i], last["pred_masks"][i],
                               last["pred_boxes"][i], padded, image_sizes[i],
                               tuple(sizes_out[i]), self.config.detections_per_image)
            for i in range(len(images))
        ]
        return Prediction(layers=outputs["layers"] if all_layers else [],
                          instances=instances, outputs=outputs)
