"""Training and evaluation data loading.

Training reads an endless, seeded stream: position ``p`` of the stream is image
``permutation[p // N][p % N]`` of a per-epoch permutation, augmented with a generator seeded
by ``(seed, p)``. A batch is a function of the iteration alone, so a resumed run sees the
same data as an uninterrupted one, and ``W`` DDP ranks with batch ``b`` each see exactly
the images (and augmentations) one process with batch ``W * b`` sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dimaskdino.data.coco import CocoInstances, DatasetError
from dimaskdino.data.images import ImageFolder
from dimaskdino.data.specs import DatasetSource, resolve_dataset
from dimaskdino.data.transforms import LargeScaleJitter, resize, shortest_edge_size
from dimaskdino.mask_boxes import masks_to_boxes_exclusive

_SEED_STRIDE = 1_000_003  # keeps (seed, position) -> generator seed one-to-one in practice


def sample_seed(seed: int, position: int) -> int:
    """The seed of stream position ``position`` (augmentation and the model's sampling)."""
    return (seed * _SEED_STRIDE + position) % (2**63 - 1)


class TrainingStream(Dataset):
    """``stream[p]`` -> ``(image uint8 (3, H, W), target)`` of stream position ``p``.

    ``target``: ``labels (n,)``, ``boxes (n, 4)`` xyxy pixels recomputed from the augmented
    masks, ``masks (n, H, W)`` bool, ``image_id``, ``seed`` (for the model's random draws).
    Crowd annotations are dropped and instances the crop emptied are removed, as in
    MaskDINO's LSJ mapper.
    """

    def __init__(self, dataset: CocoInstances, transform: LargeScaleJitter, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self._epoch, self._permutation = -1, []  # the order of the epoch last read

    def __len__(self) -> int:  # positions are unbounded; this is one epoch
        return len(self.dataset)

    def index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.dataset))
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, -1 - epoch))
            self._epoch = epoch
            self._permutation = torch.randperm(len(self.dataset), generator=generator).tolist()
        return self._permutation[offset]

    def __getitem__(self, position: int) -> tuple[torch.Tensor, dict]:
        image, target = self.dataset[self.index(position)]
        keep = ~target["iscrowd"]
        seed = sample_seed(self.seed, position)
        image, masks = self.transform(image, target["masks"][keep],
                                      torch.Generator().manual_seed(seed))
        nonempty = masks.flatten(1).any(1)
        masks = masks[nonempty]
        return image, {"image_id": target["image_id"], "labels": target["labels"][keep][nonempty],
                       "boxes": masks_to_boxes_exclusive(masks), "masks": masks, "seed": seed}


class StreamSampler(Sampler[list[int]]):
    """Batches of stream positions for one rank, from iteration ``start`` to ``stop``.

    Iteration ``i`` covers positions ``[i * B, (i + 1) * B)`` of the global batch ``B =
    world_size * batch_size``; rank ``r`` takes the ``r``-th slice of ``batch_size``.
    """

    def __init__(self, batch_size: int, start: int, stop: int, rank: int = 0,
                 world_size: int = 1) -> None:
        self.batch_size, self.start, self.stop = batch_size, start, stop
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        global_batch = self.batch_size * self.world_size
        for iteration in range(self.start, self.stop):
            first = iteration * global_batch + self.rank * self.batch_size
            yield list(range(first, first + self.batch_size))


def collate(samples: list) -> tuple[list, list]:
    """Keep images and targets as lists (sizes may differ; the model pads)."""
    images, targets = zip(*samples)
    return list(images), list(targets)


def training_loader(stream: TrainingStream, batch_size: int, start: int, stop: int,
                    rank: int = 0, world_size: int = 1, workers: int = 0,
                    worker_init: Callable[[int], None] | None = None) -> DataLoader:
    """Batches of iterations ``start..stop-1`` for ``rank``; each worker process first runs
    ``worker_init`` (the trainer's leaves SIGINT / SIGTERM to the main process, which stops
    at the end of an iteration). The loader's own generator (not the global one, which a
    resumed run's loader would draw from at another point than the straight run's) seeds
    its workers."""
    return DataLoader(stream, batch_sampler=StreamSampler(batch_size, start, stop, rank,
                                                          world_size),
                      collate_fn=collate, num_workers=workers, generator=torch.Generator(),
                      persistent_workers=False, worker_init_fn=worker_init)


class EvaluationImages(Dataset):
    """``dataset[i]`` resized for testing: ``(image, target)`` with ``target`` the original
    one plus ``height``/``width`` (the size results are reported at).

    ``short`` and ``max_size`` follow detectron2's ``ResizeShortestEdge`` (800 / 1333 for
    COCO); ``short=0`` keeps the original size.
    """

    def __init__(self, dataset: CocoInstances, short: int = 800, max_size: int = 1333) -> None:
        self.dataset, self.short, self.max_size = dataset, short, max_size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        return self.for_testing(*self.dataset[index])

    def for_testing(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        """One of the dataset's ``(image, target)`` pairs as ``__getitem__`` gives it (for
        a caller that also needs the original image, without reading it twice)."""
        height, width = image.shape[-2:]
        target = {**target, "height": height, "width": width}
        if self.short:
            size = shortest_edge_size(height, width, self.short, self.max_size)
            image, _ = resize(image, target["masks"][:0], size)
        return image, target


def evaluation_loader(dataset: EvaluationImages, batch_size: int = 1, workers: int = 0,
                      indices: list[int] | None = None) -> DataLoader:
    """Batches of evaluation images in dataset order (or of ``indices``, e.g. one rank's
    share)."""
    if indices is not None:
        dataset = torch.utils.data.Subset(dataset, indices)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                      num_workers=workers)


def validation_images(data, spec: str | None = None
                      ) -> tuple[EvaluationImages, DatasetSource]:
    """The val split of ``spec`` (default: ``data.dataset``) resized as ``data`` (a
    :class:`~dimaskdino.config.DataConfig`) says for testing, and where it was read from."""
    source = resolve_dataset(spec or data.dataset, "val", synthetic_spec=data.synthetic)
    images = EvaluationImages(open_dataset(source), data.test_short, data.test_max_size)
    return images, source


def open_dataset(source: DatasetSource) -> CocoInstances | ImageFolder:
    """The dataset of ``source``: COCO instances, or bare images for ``images:DIR``;
    DatasetError where it has no image (a run on it would do nothing)."""
    if source.annotation_file is None:
        return ImageFolder([source.image_dir])
    dataset = CocoInstances(source.annotation_file, source.image_dir)
    if not len(dataset):
        raise DatasetError(f"{source.annotation_file} lists no images (dataset {source.spec}, "
                           f"{source.split} split): there is nothing to run on")
    return dataset
