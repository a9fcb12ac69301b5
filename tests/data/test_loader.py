"""The seeded training stream, its rank slices, and evaluation resizing."""

from __future__ import annotations

import pytest
import torch

from dimaskdino.data.coco import CocoInstances
from dimaskdino.data.loader import (
    EvaluationImages,
    StreamSampler,
    TrainingStream,
    training_loader,
)
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset
from dimaskdino.data.transforms import LargeScaleJitter
from dimaskdino.mask_boxes import masks_to_boxes_exclusive


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    paths = write_synthetic_dataset(root, SyntheticSpec(num_train=5, num_val=2, height=48,
                                                        width=64, max_objects=4, seed=3))
    return CocoInstances(*paths["train"])


def test_positions_walk_seeded_epoch_permutations(dataset):
    stream = TrainingStream(dataset, LargeScaleJitter((32, 32)), seed=7)
    first = [stream.index(p) for p in range(5)]
    second = [stream.index(p) for p in range(5, 10)]
    assert sorted(first) == sorted(second) == list(range(5))
    assert first != second or first != list(range(5))
    again = TrainingStream(dataset, LargeScaleJitter((32, 32)), seed=7)
    assert [again.index(p) for p in range(9, -1, -1)] == (first + second)[::-1]


def test_samples_are_functions_of_their_position(dataset):
    stream = TrainingStream(dataset, LargeScaleJitter((32, 32), 0.5, 1.5), seed=1)
    image, target = stream[6]
    image2, target2 = TrainingStream(dataset, LargeScaleJitter((32, 32), 0.5, 1.5), 1)[6]
    assert torch.equal(image, image2) and torch.equal(target["masks"], target2["masks"])
    assert image.shape == (3, 32, 32)
    assert target["masks"].flatten(1).any(1).all()          # emptied instances dropped
    assert torch.equal(target["boxes"], masks_to_boxes_exclusive(target["masks"]))
    assert len(target["labels"]) == len(target["masks"])
    assert target["seed"] != stream[7][1]["seed"]


def test_ranks_split_the_global_batch():
    single = list(StreamSampler(4, start=2, stop=4))
    ranks = [list(StreamSampler(2, 2, 4, rank=r, world_size=2)) for r in range(2)]
    for it in range(2):
        assert ranks[0][it] + ranks[1][it] == single[it]
    assert single[0] == [8, 9, 10, 11]


def test_loader_resumes_mid_stream(dataset):
    stream = TrainingStream(dataset, LargeScaleJitter((32, 32)), seed=0)
    full = [t for _, targets in training_loader(stream, 2, 0, 4) for t in targets]
    tail = [t for _, targets in training_loader(stream, 2, 2, 4) for t in targets]
    assert [t["seed"] for t in full[4:]] == [t["seed"] for t in tail]
    assert all(torch.equal(a["masks"], b["masks"]) for a, b in zip(full[4:], tail))


def test_evaluation_images_are_resized_with_their_original_size(dataset):
    images = EvaluationImages(dataset, short=24, max_size=100)
    image, target = images[0]
    assert image.shape == (3, 24, 32)
    assert (target["height"], target["width"]) == (48, 64)
    assert EvaluationImages(dataset, short=0)[0][0].shape == (3, 48, 64)
