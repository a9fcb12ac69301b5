"""Run a model over an evaluation dataset, batch by batch, with a progress bar."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from dimaskdino.data.loader import EvaluationImages, evaluation_loader
from dimaskdino.engine import distributed
from dimaskdino.engine.precision import Precision
from dimaskdino.modeling.model import DIMaskDINO, Prediction
from dimaskdino.progress import progress_bar


def predictions(model: DIMaskDINO, dataset: EvaluationImages, batch_size: int = 1,
                all_layers: bool = False, workers: int = 0, progress: bool = True,
                description: str = "predict", precision: str | Precision = "fp32"
                ) -> Iterator[tuple[list[dict], Prediction]]:
    """Yield ``(targets, prediction)`` per batch, instances at each image's original size,
    predicted in ``precision`` (see :meth:`DIMaskDINO.predict`).

    Under DDP every process takes every ``world_size``-th image.
    """
    indices = list(range(distributed.rank(), len(dataset), distributed.world_size()))
    loader = evaluation_loader(dataset, batch_size, workers, indices)
    was_training = model.training
    model.eval()
    show = progress and distributed.is_main_process()
    try:
        with progress_bar(disable=not show) as bar:
            task = bar.add_task(description, total=len(indices), status="")
            for images, targets in loader:
                sizes = [(t["height"], t["width"]) for t in targets]
                with torch.no_grad():
                    yield targets, model.predict(images, sizes, all_layers=all_layers,
                                                        precision=precision)
                bar.advance(task, len(images))
    finally:
        model.train(was_training)
