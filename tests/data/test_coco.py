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


def _hostile_dataset(root):
    """Images of every awkward kind, one annotation each, and the JSON describing them
    (huge, non-contiguous category ids)."""
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 10, 3), dtype=np.uint8)
    files = {
        "one.png": Image.fromarray(rgb[:1, :1]),
        "gray.png": Image.fromarray(rgb[..., 0]),
        "gray16.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
    }
    for name, image in files.items():
        image.save(images / name)
    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1)))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned; shown upright after a 90-degree turn
    sideways.save(images / "exif.jpg", exif=exif, quality=100, subsampling=0)
    entries = [("one.png", 1, 1), ("gray.png", 10, 20), ("gray16.png", 10, 20),
               ("cmyk.jpg", 10, 20), ("exif.jpg", 10, 20)]
    polygon = [[1, 1, 5, 1, 5, 5, 1, 5]]
    data = {
        "images": [{"id": i + 1, "file_name": f, "width": w, "height": h}
                   for i, (f, w, h) in enumerate(entries)],
        "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 10**12 if i % 2 else 7,
                         "bbox": [0, 0, 1, 1], "segmentation": [[0, 0, 0, 0, 0, 0]]
                         if i == 0 else polygon} for i in range(len(entries))],
        "categories": [{"id": 10**12, "name": "huge"}, {"id": 7, "name": "seven"}],
    }
    path = root / "hostile.json"
    path.write_text(json.dumps(data))
    return path, images, rgb


def test_awkward_images_are_read_as_rgb_upright(tmp_path):
    path, images, rgb = _hostile_dataset(tmp_path)
    dataset = CocoInstances(path, images)
    one, gray, gray16, cmyk, exif = (dataset[i][0] for i in range(5))
    assert one.shape == (3, 1, 1) and torch.equal(one[:, 0, 0], torch.from_numpy(rgb[0, 0]))
    expected_gray = torch.from_numpy(rgb[..., 0]).expand(3, -1, -1)
    assert torch.equal(gray, expected_gray) and torch.equal(gray16, expected_gray)
    reference = np.array(Image.open(images / "cmyk.jpg").convert("RGB"))
    assert torch.equal(cmyk, torch.from_numpy(reference).permute(2, 0, 1))
    stored = np.array(Image.open(images / "exif.jpg"))  # as stored: 10 high, 20 wide
    assert stored.shape == (10, 20, 3) and exif.shape == (3, 20, 10)  # as the JSON says
    upright = np.ascontiguousarray(np.rot90(stored, -1))  # orientation 6: turn clockwise
    assert torch.equal(exif, torch.from_numpy(upright).permute(2, 0, 1))


def test_degenerate_annotations_and_huge_category_ids(tmp_path):
    path, images, _ = _hostile_dataset(tmp_path)
    dataset = CocoInstances(path, images)
    assert dataset.category_ids == [10**12, 7]
    _, first = dataset[0]  # a zero-area polygon: an empty mask, still a ground truth
    assert first["masks"].shape == (1, 1, 1) and not first["masks"].any()
    assert [dataset[i][1]["labels"].item() for i in range(5)] == [1, 0, 1, 0, 1]


@pytest.mark.parametrize("damage, message", [
    (lambda d: d["images"].append(dict(d["images"][0], file_name="x.png")),
     "image id 1 is used twice"),
    (lambda d: d["categories"].append({"id": 7, "name": "again"}), "category id 7 is used"),
    (lambda d: d["annotations"][0].update(category_id=3), "category id 3, which is not"),
    (lambda d: d["images"][1].update(width=11), r"gray.png is 10x20 \(EXIF orientation"),
    (lambda d: d["annotations"][1].update(segmentation={"counts": 5}), "cannot be read"),
])
def test_broken_datasets_are_one_line(tmp_path, damage, message):
    path, images, _ = _hostile_dataset(tmp_path)
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=message):
        dataset = CocoInstances(path, images)
        for index in range(len(dataset)):
            dataset[index]


def test_polygons_far_outside_the_image_are_clipped_to_the_same_pixels():
    from pycocotools import mask as mask_utils

    from dimaskdino.data.coco import annotation_to_mask

    for polygon in ([-100, 10, 100, 10, 0, -50], [5, -30, 60, 8, 2, 19, -7, 4]):
        reference = mask_utils.decode(mask_utils.merge(
            mask_utils.frPyObjects([polygon], 20, 40))).astype(bool)
        assert np.array_equal(annotation_to_mask([polygon], 20, 40), reference)
    huge = [-1e12, -1e12, 1e12, -1e12, 1e12, 1e12, -1e12, 1e12]  # would rasterise for ever
    assert annotation_to_mask([huge], 20, 40).all()
    with pytest.raises(ValueError, match="non-finite"):
        annotation_to_mask([[0, 0, float("inf"), 0, 5, 5]], 20, 40)
