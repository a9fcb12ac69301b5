"""The synthetic dataset: deterministic, COCO-valid, covering classes, sizes and occlusion."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from dimaskdino.data.synthetic import CLASSES, SyntheticSpec, write_synthetic_dataset

SPEC = SyntheticSpec(num_train=24, num_val=6)


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return root, write_synthetic_dataset(root, SPEC)


def test_deterministic_per_seed(dataset, tmp_path):
    root, _ = dataset
    write_synthetic_dataset(tmp_path / "again", SPEC)
    write_synthetic_dataset(tmp_path / "other", SyntheticSpec(**{**SPEC.__dict__, "seed": 1}))
    assert digest(root) == digest(tmp_path / "again")
    assert digest(root) != digest(tmp_path / "other")


def test_coco_valid_with_classes_sizes_and_both_mask_formats(dataset):
    _, paths = dataset
    ann_file, image_dir = paths["train"]
    coco = COCO(str(ann_file))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(coco.getCatIds()) == len(CLASSES) >= 5
    assert {a["category_id"] for a in anns} == set(coco.getCatIds())
    areas = np.array([a["area"] for a in anns])
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas <= 96**2)).any()
    assert (areas > 96**2).any()
    kinds = {type(a["segmentation"]).__name__ for a in anns}
    assert kinds == {"list", "dict"}  # polygons and RLE
    for image in coco.loadImgs(coco.getImgIds()):
        with Image.open(image_dir / image["file_name"]) as im:
            assert im.size == (image["width"], image["height"])


def test_annotations_describe_the_visible_mask(dataset):
    _, paths = dataset
    coco = COCO(str(paths["val"][0]))
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann).astype(bool)
        ys, xs = mask.nonzero()
        if isinstance(ann["segmentation"], dict):  # RLE: exact
            assert mask.sum() == ann["area"]
        else:  # polygon rasterised by pycocotools vs PIL: boundary pixels may differ
            assert abs(int(mask.sum()) - ann["area"]) <= 0.2 * ann["area"] + 20
        x, y, w, h = ann["bbox"]
        assert abs(xs.min() - x) <= 1 and abs(ys.min() - y) <= 1
        assert abs(xs.max() + 1 - (x + w)) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1


def test_objects_overlap_and_visible_masks_are_disjoint(dataset):
    _, paths = dataset
    coco = COCO(str(paths["train"][0]))
    overlapping_boxes = 0
    for image_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        masks = [coco.annToMask(a).astype(bool) for a in anns if isinstance(a["segmentation"],
                                                                               dict)]
        for i in range(len(masks)):
            for j in range(i + 1, len(masks)):
                assert not (masks[i] & masks[j]).any()  # visible parts never overlap
        for i, a in enumerate(anns):
            for b in anns[i + 1:]:
                ax, ay, aw, ah = a["bbox"]
                bx, by, bw, bh = b["bbox"]
                overlapping_boxes += ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah
    assert overlapping_boxes >= 5  # shapes overlap, so some are partly hidden
