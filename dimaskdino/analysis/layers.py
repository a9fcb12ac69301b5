"""Every decoder layer post-processed as the last one is: the instances the layer probe
scores and the pictures of the imbalance draw, per image and layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dimaskdino.modeling.model import Prediction
from dimaskdino.modeling.postprocess import MaskFormat, grouped_instance_inference


def layer_instances(pred: Prediction, layers: Sequence[int], topk: int = 100,
                    masks: MaskFormat = "bitmap") -> list[dict[int, dict]]:
    """The instances of ``layers`` of every image of ``pred`` (predicted with ``all_layers``
    and, for the last layer, with ``masks``; each layer as
    :func:`~dimaskdino.modeling.postprocess.stacked_instance_inference` makes them) -> per image
    ``{layer: instances}``: the inner layers of all images post-processed together
    (:func:`~dimaskdino.modeling.postprocess.grouped_instance_inference`), the last one as
    the model reported it (what ``dimask eval`` scores)."""
    last = len(pred.layers) - 1
    inner = [layer for layer in layers if layer != last]
    images = len(pred.image_sizes)
    found: list[dict[int, dict]] = [{} for _ in range(images)]
    if inner:
        stacked = (torch.cat([pred.layers[layer][key] for layer in inner])
                   for key in ("pred_logits", "pred_masks", "pred_boxes"))  # layer-major
        every = grouped_instance_inference(*stacked, pred.padded_size,
                                           pred.image_sizes * len(inner),
                                           pred.output_sizes * len(inner), topk, masks)
        for k, instances in enumerate(every):
            found[k % images][inner[k // images]] = instances
    if last in layers:
        for image in range(images):
            found[image][last] = pred.instances[image]
    return [dict(sorted(f.items())) for f in found]
