"""Inference in a chosen precision: one batch of images (:func:`predict`), or an evaluation
dataset batch by batch with a progress bar (:func:`predictions`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence

import torch

from dimaskdino.data.loader import EvaluationImages, evaluation_loader
from dimaskdino.engine import distributed
from dimaskdino.engine.precision import INFERENCE_KEYS, Precision, announced, model_precision
from dimaskdino.modeling.model import DIMaskDINO, Prediction
from dimaskdino.modeling.postprocess import MaskFormat
from dimaskdino.progress import progress_bar


def predict(model: DIMaskDINO, images: Sequence[torch.Tensor],
            output_sizes: Sequence[tuple[int, int]] | None = None, all_layers: bool = False,
            precision: str | Precision = "fp32", masks: MaskFormat = "bitmap") -> Prediction:
    """:meth:`DIMaskDINO.predict` (or an exported model's) in ``precision``: ``fp32`` runs
    the model's own exact path, in its dtype; ``bf16`` its forward in bf16 autocast, the
    predictions read after it in float32; ``auto`` as
    :func:`~dimaskdino.engine.precision.model_precision` decides (or a resolved
    :class:`Precision`)."""
    mode = model_precision(precision, model)
    if not mode.reduced:  # the exact path; an exported model's only one
        return model.predict(images, output_sizes, all_layers, masks)
    return model.predict(images, output_sizes, all_layers, masks,
                         forward=functools.partial(mode.run, model, keys=INFERENCE_KEYS))


def predictions(model: DIMaskDINO, dataset: EvaluationImages, batch_size: int = 1,
                all_layers: bool = False, workers: int = 0, progress: bool = True,
                description: str = "predict", precision: str | Precision = "fp32",
                announce: Callable[[str], None] | None = None, masks: MaskFormat = "bitmap"
                ) -> Iterator[tuple[list[dict], Prediction]]:
    """Yield ``(targets, prediction)`` per batch, instances at each image's original size
    with ``masks`` in that format, predicted in ``precision`` (see :func:`predict`);
    ``announce`` gets its one-line description when the first batch is read
    (:func:`~dimaskdino.engine.precision.announced`).

    Under DDP every process takes every ``world_size``-th image.
    """
    mode = model_precision(precision, model)
    indices = list(range(distributed.rank(), len(dataset), distributed.world_size()))
    loader = evaluation_loader(dataset, batch_size, workers, indices)
    was_training = model.training
    model.eval()
    show = progress and distributed.is_main_process()
    try:
        with progress_bar(disable=not show) as bar:
            task = bar.add_task(description, total=len(indices), status="")
            for images, targets in announced(loader, mode, announce):
                sizes = [(t["height"], t["width"]) for t in targets]
                yield targets, predict(model, images, sizes, all_layers, mode, masks)
                bar.advance(task, len(images))
    finally:
        model.train(was_training)
