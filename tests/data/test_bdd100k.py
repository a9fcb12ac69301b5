"""BDD100K ins_seg -> COCO: bitmask PNGs and Scalabel RLE JSON against a direct decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from dimaskdino.data.bdd100k import CLASSES, prepare_bdd100k
from dimaskdino.data.check import check_dataset
from dimaskdino.data.coco import CocoInstances, DatasetError, annotation_to_mask

HEIGHT, WIDTH = 72, 128
FLAGS = ("ignore", "crowd", "occluded", "truncated")  # bit 0..3 of G


def scene(index: int) -> tuple[np.ndarray, list[dict]]:
    """An instance-id map and its instances, each ``{"id", "category_id", flags...}``.

    Covers every flag, a category outside the eight (id 9, "traffic light"), an instance id
    above 255 (so both B and A matter), a mask in two pieces and occlusion by paint order.
    Scene 2 is empty.
    """
    ids = np.zeros((HEIGHT, WIDTH), dtype=np.int32)
    if index == 2:
        return ids, []
    # in label order, which is instance-id order (as in BDD100K's own bitmasks)
    instances = [
        {"id": 1, "category_id": 3},                                   # car
        {"id": 2, "category_id": 1, "occluded": True, "truncated": True},  # pedestrian
        {"id": 4, "category_id": 2, "ignore": True},                    # rider
        {"id": 5, "category_id": 9},                                    # not an ins_seg class
        {"id": 6, "category_id": 8},                                    # bicycle, two pieces
        {"id": 300, "category_id": 5, "crowd": True},                   # bus, B = 1, A = 44
    ]
    shift = 7 * index
    ids[5 + shift:40 + shift, 10:60] = 1
    ids[0:30, 50 + shift:70 + shift] = 2          # occludes part of the car
    ids[45:72, 0:128] = 300                        # touches the image's edges
    ids[20:35, 90:100] = 4
    ids[2:8, 110:126] = 5
    ids[50:55, 20:30] = 6
    ids[60:66, 100:120] = 6
    if index == 1:  # no crowd in the second image
        instances = [inst for inst in instances if inst["id"] != 300]
        ids[ids == 300] = 0
    return ids, instances


def flags_of(instance: dict) -> dict[str, bool]:
    return {flag: bool(instance.get(flag)) for flag in FLAGS}


def name_of(category_id: int) -> str:
    return CLASSES[category_id - 1] if category_id <= len(CLASSES) else "traffic light"


def write_bdd100k_sample(root, *, bitmasks: bool = True, rles: bool = True,
                         missing_jpg: bool = True) -> None:
    """A BDD100K-layout folder: 3 labelled images per split, one without its JPEG."""
    for split in ("train", "val"):
        images = root / "images" / "10k" / split
        images.mkdir(parents=True)
        frames = []
        for index in range(4):
            name = f"{split}-{index:04d}"
            if index < 3 or not missing_jpg:
                Image.fromarray(np.full((HEIGHT, WIDTH, 3), 40 * index, np.uint8)).save(
                    images / f"{name}.jpg")
            ids, instances = scene(index % 3)
            if bitmasks:
                rgba = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
                for inst in instances:
                    where = ids == inst["id"]
                    bits = sum(int(flags_of(inst)[flag]) << bit for bit, flag in enumerate(FLAGS))
                    rgba[where] = (inst["category_id"], bits, inst["id"] >> 8, inst["id"] & 255)
                folder = root / "labels" / "ins_seg" / "bitmasks" / split
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgba, "RGBA").save(folder / f"{name}.png")
            labels = []
            for inst in instances:
                rle = mask_utils.encode(np.asfortranarray((ids == inst["id"]).astype(np.uint8)))
                attributes = {k: v for k, v in flags_of(inst).items() if k != "ignore"}
                # Scalabel names the flag "ignored"; accept both spellings
                attributes["ignored" if index == 0 else "ignore"] = flags_of(inst)["ignore"]
                labels.append({"id": str(inst["id"]), "category": name_of(inst["category_id"]),
                               "attributes": attributes,
                               "rle": {"counts": rle["counts"].decode(), "size": rle["size"]}})
            frames.append({"name": f"{name}.jpg", "labels": labels or None})
        if rles:
            path = root / "labels" / "ins_seg" / "rles" / f"ins_seg_{split}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(frames))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """``{source: (root, out_dir, summary)}`` for a bitmask-only and an RLE-only copy."""
    results = {}
    for source in ("bitmasks", "rles"):
        root = tmp_path_factory.mktemp(source)
        write_bdd100k_sample(root, bitmasks=source == "bitmasks", rles=source == "rles")
        out = root / "coco"
        results[source] = (root, out, prepare_bdd100k(root, out, progress=False))
    return results


@pytest.mark.parametrize("source", ["bitmasks", "rles"])
def test_masks_classes_and_crowd_match_the_labels(converted, source):
    root, out, summary = converted[source]
    for split in ("train", "val"):
        data = json.loads((out / f"instances_{split}.json").read_text())
        assert data["categories"] == [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
        # the image without its JPEG is left out
        assert [im["file_name"] for im in data["images"]] == [
            f"{split}-{i:04d}.jpg" for i in range(3)]
        by_image = {im["id"]: [] for im in data["images"]}
        for ann in data["annotations"]:
            by_image[ann["image_id"]].append(ann)
        for image in data["images"]:
            assert (image["height"], image["width"]) == (HEIGHT, WIDTH)
            ids, instances = scene(int(image["file_name"][-8:-4]))
            if source == "bitmasks":  # decode the PNG itself, not our scene
                png = root / "labels/ins_seg/bitmasks" / split / image["file_name"].replace(
                    ".jpg", ".png")
                rgba = np.asarray(Image.open(png)).astype(np.int32)
                ids = rgba[..., 2] * 256 + rgba[..., 3]
            expected = [inst for inst in instances if inst["category_id"] <= 8]
            anns = by_image[image["id"]]
            assert len(anns) == len(expected)
            for ann, inst in zip(anns, expected):
                mask = annotation_to_mask(ann["segmentation"], HEIGHT, WIDTH)
                assert np.array_equal(mask, ids == inst["id"])
                assert isinstance(ann["segmentation"]["counts"], str)
                assert ann["category_id"] == inst["category_id"]
                flags = flags_of(inst)
                assert ann["iscrowd"] == int(flags["crowd"] or flags["ignore"])
                assert ann["attributes"] == flags
                assert ann["area"] == mask.sum()
                ys, xs = np.nonzero(mask)
                assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                       ys.max() - ys.min() + 1]
        counts = summary["splits"][split]
        assert counts["labels"] == source
        assert counts["images"] == 3 and counts["missing_images"] == 1
        assert counts["annotations"] == 5 + 4 and counts["crowd"] == 2 + 1
        dropped = "id 9" if source == "bitmasks" else "traffic light"
        assert counts["dropped"] == {dropped: 2} and counts["empty_masks"] == 0


def test_both_sources_give_the_same_dataset(converted):
    for split in ("train", "val"):
        a, b = (json.loads((converted[s][1] / f"instances_{split}.json").read_text())
                for s in ("bitmasks", "rles"))
        for key in ("images", "annotations", "categories"):
            assert a[key] == b[key]


def test_output_is_readable_valid_and_written_atomically(converted):
    _, out, summary = converted["bitmasks"]
    assert sorted(p.name for p in out.iterdir()) == ["instances_train.json",
                                                      "instances_val.json"]
    assert summary["splits"]["val"]["annotation_file"] == str(out / "instances_val.json")
    root = converted["bitmasks"][0]
    images = root / "images" / "10k" / "val"
    report = check_dataset((out / "instances_val.json", images))
    assert report.ok, report.problems
    assert report.crowd == 3 and report.images_without_annotations == 1
    _, target = CocoInstances(out / "instances_val.json", images)[0]
    assert target["iscrowd"].tolist() == [False, False, True, False, True]


def test_bitmasks_are_preferred_over_rles(tmp_path):
    write_bdd100k_sample(tmp_path, missing_jpg=False)
    for split in ("train", "val"):  # an RLE file that would give no annotation at all
        (tmp_path / f"labels/ins_seg/rles/ins_seg_{split}.json").write_text("[]")
    summary = prepare_bdd100k(tmp_path, tmp_path / "out", progress=False)
    assert {s["labels"] for s in summary["splits"].values()} == {"bitmasks"}
    assert summary["splits"]["train"]["images"] == 4
    assert summary["splits"]["train"]["annotations"] == 5 + 4 + 0 + 5


def test_missing_layout_names_the_expected_path(tmp_path):
    with pytest.raises(DatasetError, match=r"expected the folder .*images/10k/train$"):
        prepare_bdd100k(tmp_path, tmp_path / "out", progress=False)
    write_bdd100k_sample(tmp_path, bitmasks=False)
    (tmp_path / "labels/ins_seg/rles/ins_seg_val.json").unlink()
    with pytest.raises(DatasetError, match=r"val labels not found: .*bitmasks/val or the "
                                           r"file .*rles/ins_seg_val\.json"):
        prepare_bdd100k(tmp_path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing is written before both splits are found


def test_unreadable_labels_are_one_line_errors(tmp_path):
    write_bdd100k_sample(tmp_path, bitmasks=False)
    labels = tmp_path / "labels/ins_seg/rles/ins_seg_train.json"
    labels.write_text("[{")
    with pytest.raises(DatasetError, match=r"ins_seg_train\.json is not valid JSON"):
        prepare_bdd100k(tmp_path, tmp_path / "out", progress=False)
    labels.write_text(json.dumps([{"labels": []}]))
    with pytest.raises(DatasetError, match="not a list of Scalabel frames with names"):
        prepare_bdd100k(tmp_path, tmp_path / "out", progress=False)
    labels.write_text(json.dumps([{"name": "train-0000.jpg", "labels": [
        {"id": "1", "category": "car", "rle": {"size": [HEIGHT, WIDTH]}}]}]))
    with pytest.raises(DatasetError, match=r"frame train-0000\.jpg has a malformed label"):
        prepare_bdd100k(tmp_path, tmp_path / "out", progress=False)
    png = tmp_path / "labels/ins_seg/bitmasks/train/train-0000.png"
    png.parent.mkdir(parents=True)
    Image.new("RGB", (WIDTH, HEIGHT)).save(png)
    with pytest.raises(DatasetError, match="not an RGBA bitmask"):
        prepare_bdd100k(tmp_path, tmp_path / "out", progress=False)
