"""Run a model over an evaluation dataset, batch by batch, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from dimaskdino.data.loader import EvaluationImages, evaluation_loader
from dimaskdino.engine import distributed
from dimaskdino.engine.precision import Precision, model_precision
from dimaskdino.modeling.model import DIMaskDINO, Prediction
from dimaskdino.modeling.postprocess import MaskFormat
from dimaskdino.progress import progress_bar


def predictions(model: DIMaskDINO, dataset: EvaluationImages, batch_size: int = 1,
                all_layers: bool = False, workers: int = 0, progress: bool = True,
                description: str = "predict", precision: str | Precision = "fp32",
                announce: Callable[[str], None] | None = None, masks: MaskFormat = "bitmap"
                ) -> Iterator[tuple[list[dict], Prediction]]:
    """Yield ``(targets, prediction)`` per batch, instances at each image's original size
    with ``masks`` in that format, predicted in ``precision`` (see
    :meth:`DIMaskDINO.predict`); ``announce`` gets its
    one-line description (``precision: bf16 (CPU has AMX-BF16)``) when the first batch is
    read, so that an error before any work is still the only line a command prints.

    Under DDP every process takes every ``world_size``-th image.
    """
    mode = precision if isinstance(precision, Precision) else model_precision(precision,
                                                                              model)
    indices = list(range(distributed.rank(), len(dataset), distributed.world_size()))
    loader = evaluation_loader(dataset, batch_size, workers, indices)
    was_training = model.training
    model.eval()
    show = progress and distributed.is_main_process()
    try:
        with progress_bar(disable=not show) as bar:
            task = bar.add_task(description, total=len(indices), status="")
            for images, targets in loader:
                if announce is not None:
                    announce(mode.describe())
                    announce = None
                sizes = [(t["height"], t["width"]) for t in targets]
                with torch.no_grad():  # not around the yield: the caller's code keeps its mode
                    prediction = model.predict(images, sizes, all_layers=all_layers,
                                               precision=mode, masks=masks)
                yield targets, prediction
                bar.advance(task, len(images))
    finally:
        model.train(was_training)
