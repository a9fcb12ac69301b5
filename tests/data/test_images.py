"""Image folders without annotations (``images:DIR``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dimaskdino.data.coco import DatasetError
from dimaskdino.data.images import ImageFolder, list_images
from dimaskdino.data.loader import open_dataset
from dimaskdino.data.specs import resolve_dataset


def _write(path, height, width, mode="RGB"):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return np.asarray(Image.open(path).convert("RGB"))


def test_folder_items_are_images_with_empty_targets(tmp_path):
    expected = {"b.png": _write(tmp_path / "b.png", 20, 30),
                "a.jpg": _write(tmp_path / "a.jpg", 16, 12, "L")}
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = ImageFolder([tmp_path])
    assert [p.name for p in dataset.files] == ["a.jpg", "b.png"]
    assert [(im["id"], im["height"], im["width"]) for im in dataset.images] == [
        (1, 16, 12), (2, 20, 30)]
    for index, name in enumerate(["a.jpg", "b.png"]):
        image, target = dataset[index]
        assert image.dtype == torch.uint8
        assert torch.equal(image, torch.from_numpy(expected[name]).permute(2, 0, 1))
        assert target["image_id"] == index + 1
        assert target["labels"].numel() == 0
        assert target["masks"].shape == (0, *image.shape[-2:])
    assert not dataset.has_annotations


def test_files_are_taken_as_given(tmp_path):
    _write(tmp_path / "x.png", 8, 8)
    _write(tmp_path / "y.png", 8, 8)
    assert list_images([tmp_path / "y.png", tmp_path / "x.png"]) == [
        tmp_path / "y.png", tmp_path / "x.png"]


def test_unreadable_empty_and_missing_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DatasetError, match=r"cannot read image .*broken\.jpg"):
        ImageFolder([tmp_path])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"no JPEG or PNG images in .*empty"):
        ImageFolder([empty])
    with pytest.raises(DatasetError, match="image path not found"):
        ImageFolder([tmp_path / "missing"])


def test_images_spec_has_no_annotation_file(tmp_path):
    _write(tmp_path / "a.png", 8, 8)
    for split in ("train", "val"):
        source = resolve_dataset(f"images:{tmp_path}", split)
        assert source.annotation_file is None and source.image_dir == tmp_path
    assert isinstance(open_dataset(source), ImageFolder)
    with pytest.raises(DatasetError, match="image folder not found"):
        resolve_dataset(f"images:{tmp_path / 'missing'}", "val")
