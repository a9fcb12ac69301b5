"""``check_dataset``: a valid dataset passes; each kind of damage is caught and explained."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from dimaskdino.data.check import CheckReport, check_dataset
from dimaskdino.data.specs import DatasetSource
from dimaskdino.data.synthetic import CLASSES, SyntheticSpec, write_synthetic_dataset

SPEC = SyntheticSpec(num_train=2, num_val=2, height=64, width=80)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    return write_synthetic_dataset(root, SPEC)["val"]


@pytest.fixture
def dataset(pristine, tmp_path):
    """A private copy of the valid val split: ``(annotation_file, image_dir, data)``."""
    ann_file, image_dir = tmp_path / "val.json", tmp_path / "images"
    shutil.copy(pristine[0], ann_file)
    shutil.copytree(pristine[1], image_dir)
    return ann_file, image_dir, json.loads(ann_file.read_text())


def test_valid_dataset_passes_with_its_summary(dataset):
    ann_file, image_dir, data = dataset
    report = check_dataset(DatasetSource("x", "val", ann_file, image_dir))
    assert isinstance(report, CheckReport) and report.ok and report.problems == []
    assert report.images == 2 and report.annotations == len(data["annotations"]) > 0
    assert report.categories == len(CLASSES) and list(report.per_category) == list(CLASSES)
    assert sum(report.per_category.values()) == report.annotations
    assert report.crowd == 0 and report.images_without_annotations == 0
    assert check_dataset((ann_file, image_dir), decode_images=False).ok


def test_empty_images_and_crowd_are_summary_not_problems(dataset):
    ann_file, image_dir, data = dataset
    first = data["images"][0]["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != first]
    data["annotations"][0]["iscrowd"] = 1
    ann_file.write_text(json.dumps(data))
    report = check_dataset((ann_file, image_dir))
    assert report.ok and report.images_without_annotations == 1 and report.crowd == 1


def first_ann(data):
    return data["annotations"][0]


def set_bbox(bbox):
    return lambda data, _: first_ann(data).update(bbox=bbox)


def set_segmentation(segmentation):
    return lambda data, _: first_ann(data).update(segmentation=segmentation)


def truncate_image(data, image_dir):
    path = image_dir / data["images"][0]["file_name"]
    path.write_bytes(path.read_bytes()[:200])


def polygon_ann(data):
    """The first annotation, made a polygon triangle in the image's top-left corner."""
    ann = first_ann(data)
    ann.update(segmentation=[[2.0, 2.0, 20.0, 2.0, 2.0, 20.0]], bbox=[2.0, 2.0, 18.0, 18.0])
    return ann


CASES = [
    ("invalid-json", lambda ann_file, _: ann_file.write_text("{broken"), "is not valid JSON"),
    ("missing-key", lambda data, _: data.pop("annotations"), "has no 'annotations' list"),
    ("bad-categories", lambda data, _: data.update(categories=[]),
     "the categories list is empty"),
    ("duplicate-category-id", lambda data, _: data["categories"].append(
        {"id": 1, "name": "again"}), "category id 1 is used twice ('circle' and 'again')"),
    ("duplicate-image-id", lambda data, _: data["images"][1].update(id=data["images"][0]["id"]),
     "image id 1 is used twice (000000.png and 000001.png)"),
    ("duplicate-annotation-id", lambda data, _: data["annotations"][1].update(
        id=data["annotations"][0]["id"]), "annotation id 1 is used twice"),
    ("unknown-image-id", lambda data, _: first_ann(data).update(image_id=999),
     "annotation 1 refers to image id 999, which is not listed"),
    ("unknown-category-id", lambda data, _: first_ann(data).update(category_id=42),
     "annotation 1 has category id 42, which is not listed"),
    ("missing-image", lambda data, image_dir: (image_dir / "000001.png").unlink(),
     "image 2: file not found"),
    ("undecodable-image", truncate_image, "image 1: cannot decode"),
    ("undecodable-image", lambda data, image_dir: (image_dir / "000000.png").write_text("text"),
     "cannot identify image file"),
    ("size-mismatch", lambda data, _: data["images"][0].update(width=100),
     "000000.png is 80x64 but the JSON says 100x64"),
    ("bad-bbox", set_bbox([70.0, 10.0, 30.0, 5.0]), "extends outside the 80x64 image"),
    ("bad-bbox", set_bbox([10.0, 10.0, 0.0, 5.0]), "has a non-positive width or height"),
    ("bad-bbox", set_bbox([1, 2, 3]), "is not 4 numbers"),
    ("bbox-mask-mismatch", lambda data, _: polygon_ann(data).update(bbox=[50.0, 40.0, 18.0, 18.0]),
     "disagrees with its mask's box [2.0, 2.0, 18.0, 18.0] (IoU 0.00)"),
    ("bbox-mask-mismatch", lambda data, _: polygon_ann(data).update(bbox=[2.0, 2.0, 9.0, 9.0]),
     "bbox [2.0, 2.0, 9.0, 9.0] disagrees with its mask's box [2.0, 2.0, 18.0, 18.0]"),
    ("invalid-segmentation", set_segmentation([[1.0, 1.0, 5.0, 5.0]]),
     "a polygon has 2 points; at least 3 (x, y) pairs are needed"),
    ("invalid-segmentation", set_segmentation([[10.0, 10.0, 10.2, 10.0, 10.0, 10.2]]),
     "the mask covers no pixel"),
    ("invalid-segmentation", set_segmentation({"size": [32, 40], "counts": "PX1"}),
     "RLE size [32, 40] differs from the image's [64, 80]"),
    ("invalid-segmentation", set_segmentation({"size": [64, 80], "counts": [5, 10]}),
     "uncompressed RLE counts do not sum to 64x80 pixels"),
    ("invalid-segmentation", set_segmentation({"size": [64, 80], "counts": "abc~~~"}),
     "RLE counts run past the 80x64 image"),
    ("invalid-segmentation", set_segmentation("a mask"), "segmentation is neither polygons"),
    ("malformed-entry", lambda data, _: first_ann(data).pop("category_id"),
     "annotation #0 needs an id, an image_id and a category_id"),
    ("malformed-entry", lambda data, _: data["images"][0].pop("height"),
     "image #0 needs an id, a file_name and positive integer height and width"),
]

# what a damage may cause further down: annotations of a dropped category or image entry,
# RLE masks no longer the size the JSON gives their image
CONSEQUENCES = {
    "bad-categories": {"unknown-category-id"},
    "duplicate-image-id": {"unknown-image-id"},
    "malformed-entry": {"unknown-image-id"},
    "size-mismatch": {"invalid-segmentation"},
}


@pytest.mark.parametrize(("kind", "damage", "message"), CASES,
                         ids=[f"{kind}-{i}" for i, (kind, _, _) in enumerate(CASES)])
def test_each_kind_of_damage_is_caught(dataset, kind, damage, message):
    ann_file, image_dir, data = dataset
    if kind == "invalid-json":
        damage(ann_file, image_dir)
    else:
        damage(data, image_dir)
        ann_file.write_text(json.dumps(data))
    report = check_dataset((ann_file, image_dir))
    assert not report.ok
    kinds = {problem.kind for problem in report.problems}
    assert kind in kinds and kinds - {kind} <= CONSEQUENCES.get(kind, set()), report.problems
    assert any(message in problem.message for problem in report.problems), report.problems
    for problem in report.problems:
        assert "\n" not in problem.message
        assert str(problem) == f"[{problem.kind}] {problem.message}"


def test_at_least_eight_kinds_are_covered():
    assert len({kind for kind, _, _ in CASES}) >= 8


def test_truncated_jpeg_needs_a_full_decode(dataset):
    ann_file, image_dir, data = dataset
    image = Image.open(image_dir / data["images"][0]["file_name"]).convert("RGB")
    image.save(image_dir / "cut.jpg", quality=95)
    (image_dir / "cut.jpg").write_bytes((image_dir / "cut.jpg").read_bytes()[:-400])
    data["images"][0]["file_name"] = "cut.jpg"
    ann_file.write_text(json.dumps(data))
    assert [p.kind for p in check_dataset((ann_file, image_dir)).problems] == [
        "undecodable-image"]
    assert check_dataset((ann_file, image_dir), decode_images=False).ok  # header-only check


def test_missing_annotation_file_is_a_problem(tmp_path):
    report = check_dataset((tmp_path / "none.json", tmp_path))
    assert [p.kind for p in report.problems] == ["invalid-json"]
    assert "annotation file not found" in report.problems[0].message


def _photo(path, size, mode="RGB", orientation=None):
    """An image file of ``size`` (W, H) as stored, in ``mode``, with an EXIF orientation."""
    image = Image.new(mode, size)
    if orientation is None:
        image.save(path)
        return
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)


def test_image_folder_summary(tmp_path):
    _photo(tmp_path / "a.jpg", (40, 30))
    _photo(tmp_path / "b.png", (20, 50), mode="L")
    _photo(tmp_path / "c.png", (8, 6), mode="I;16")
    _photo(tmp_path / "d.jpg", (60, 40), orientation=6)  # shown 40 wide, 60 high
    (tmp_path / "notes.txt").write_text("not an image: not listed")
    report = check_dataset(DatasetSource("images:x", "val", None, tmp_path))
    assert report.ok and report.annotation_file is None and report.images == 4
    assert report.modes == {"RGB": 2, "L": 1, "I;16": 1} and report.rotated == 1
    assert report.sizes == ((8, 6), (40, 60))  # smallest and largest upright (W, H)
    assert report.annotations == report.categories == 0


def test_image_folder_problems(tmp_path):
    _photo(tmp_path / "good.jpg", (16, 16))
    (tmp_path / "text.jpg").write_text("not a JPEG")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "cut.jpg", quality=95)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "cut.jpg").read_bytes()[:-400])
    _photo(tmp_path / "odd.jpg", (16, 16), orientation=9)
    report = check_dataset(DatasetSource("images:x", "val", None, tmp_path))
    assert sorted(str(p).split(":")[0] for p in report.problems) == [
        "[bad-orientation] image odd.jpg", "[undecodable-image] image cut.jpg",
        "[undecodable-image] image text.jpg"]
    assert report.images == 4 and report.modes == {"RGB": 2}
    quick = check_dataset(DatasetSource("images:x", "val", None, tmp_path),
                          decode_images=False)  # headers only: the cut JPEG passes
    assert sorted(p.kind for p in quick.problems) == ["bad-orientation", "undecodable-image"]


def test_image_folder_without_images(tmp_path):
    report = check_dataset(DatasetSource("images:x", "val", None, tmp_path))
    assert [p.kind for p in report.problems] == ["no-images"] and report.images == 0
