"""The COCO-format reader against pycocotools on the synthetic dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from dimaskdino.data.coco import CocoInstances, DatasetError
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    return write_synthetic_dataset(root, SyntheticSpec(num_train=6, num_val=2))["train"]


def test_items_match_pycocotools(synthetic):
    ann_file, image_dir = synthetic
    dataset, coco = CocoInstances(ann_file, image_dir), COCO(str(ann_file))
    assert len(dataset) == 6
    for index in range(len(dataset)):
        image, target = dataset[index]
        info = coco.loadImgs(target["image_id"])[0]
        assert image.dtype == torch.uint8 and image.shape == (3, info["height"], info["width"])
        with Image.open(image_dir / info["file_name"]) as im:
            assert np.array_equal(image.permute(1, 2, 0).numpy(), np.asarray(im.convert("RGB")))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=target["image_id"]))
        assert len(target["labels"]) == len(anns)
        for k, ann in enumerate(anns):
            assert np.array_equal(target["masks"][k].numpy(), coco.annToMask(ann).astype(bool))
            assert dataset.category_ids[target["labels"][k]] == ann["category_id"]
            x, y, w, h = ann["bbox"]
            assert target["boxes"][k].tolist() == pytest.approx([x, y, x + w, y + h])


def test_crowd_flag_and_uncompressed_rle(tmp_path, synthetic):
    ann_file, image_dir = synthetic
    data = json.loads(ann_file.read_text())
    first = data["images"][0]
    data["annotations"] = [{
        "id": 1, "image_id": first["id"], "category_id": data["categories"][0]["id"],
        "bbox": [0, 0, 2, 1], "area": 2, "iscrowd": 1,
        "segmentation": {"size": [first["height"], first["width"]],
                         "counts": [0, 2, first["height"] * first["width"] - 2]}}]
    edited = tmp_path / "crowd.json"
    edited.write_text(json.dumps(data))
    _, target = CocoInstances(edited, image_dir)[0]
    assert target["iscrowd"].tolist() == [True]
    assert target["masks"][0].sum() == 2 and target["masks"][0][:2, 0].all()


def test_errors_name_the_file(tmp_path, synthetic):
    with pytest.raises(DatasetError, match="annotation file not found"):
        CocoInstances(tmp_path / "missing.json", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        CocoInstances(bad, tmp_path)
    (tmp_path / "partial.json").write_text('{"images": []}')
    with pytest.raises(DatasetError, match="no 'annotations' list"):
        CocoInstances(tmp_path / "partial.json", tmp_path)
    ann_file, _ = synthetic
    with pytest.raises(DatasetError, match="cannot read image"):
        CocoInstances(ann_file, tmp_path)[0]
