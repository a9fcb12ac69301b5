"""Dataset specs: every form, the synthetic cache, and one-line errors."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from dimaskdino.data import bdd100k, specs
from dimaskdino.data.coco import DatasetError
from dimaskdino.data.specs import DatasetSource, resolve_dataset, synthetic_root
from dimaskdino.data.synthetic import SyntheticSpec
from tests.data.test_bdd100k import write_bdd100k_sample

SMALL = SyntheticSpec(num_train=2, num_val=1, height=32, width=40, max_objects=2)


def test_synthetic_is_generated_once_and_reused(tmp_path):
    train = resolve_dataset("synthetic", "train", synthetic_spec=SMALL, cache_dir=tmp_path)
    val = resolve_dataset("synthetic", "val", synthetic_spec=SMALL, cache_dir=tmp_path)
    assert isinstance(train, DatasetSource) and train.spec == "synthetic"
    assert train.annotation_file.parent == val.annotation_file.parent
    assert len(json.loads(train.annotation_file.read_text())["images"]) == 2
    assert len(json.loads(val.annotation_file.read_text())["images"]) == 1
    assert val.image_dir.name == "val" and len(list(val.image_dir.iterdir())) == 1
    stamp = train.annotation_file.stat().st_mtime_ns
    again = resolve_dataset("synthetic", "train", synthetic_spec=SMALL, cache_dir=tmp_path)
    assert again == train and train.annotation_file.stat().st_mtime_ns == stamp
    other = resolve_dataset("synthetic", "train", cache_dir=tmp_path,
                            synthetic_spec=SyntheticSpec(**{**SMALL.__dict__, "seed": 1}))
    assert other.annotation_file.parent != train.annotation_file.parent
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cache_dir_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DIMASK_CACHE", str(tmp_path / "env-cache"))
    source = resolve_dataset("synthetic", "val", synthetic_spec=SMALL)
    assert source.annotation_file.is_relative_to(tmp_path / "env-cache")
    monkeypatch.delenv("DIMASK_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert specs.default_cache_dir() == tmp_path / "home" / ".cache" / "dimask"


def test_concurrent_generation_yields_one_complete_dataset(tmp_path):
    roots: list[Path] = []
    threads = [threading.Thread(target=lambda: roots.append(synthetic_root(SMALL, tmp_path)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(roots) == 4 and len(set(roots)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [roots[0].name]  # no staging folder left
    assert (roots[0] / "annotations" / "instances_val.json").is_file()


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    def crash(root, spec):
        (Path(root) / "train").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(specs, "write_synthetic_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        synthetic_root(SMALL, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_coco_and_coco_json(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{}")
    (tmp_path / "val2017").mkdir()
    source = resolve_dataset(f"coco:{tmp_path}", "val")
    assert source == DatasetSource(f"coco:{tmp_path}", "val",
                                   tmp_path / "annotations" / "instances_val2017.json",
                                   tmp_path / "val2017")
    with pytest.raises(DatasetError, match=r"annotation file not found: .*instances_train2017"):
        resolve_dataset(f"coco:{tmp_path}", "train")
    ann = tmp_path / "annotations" / "instances_val2017.json"
    spec = f"coco-json:{ann}:{tmp_path / 'val2017'}"
    train, val = (resolve_dataset(spec, split) for split in ("train", "val"))
    assert train.annotation_file == val.annotation_file == ann
    assert train.image_dir == val.image_dir == tmp_path / "val2017"
    with pytest.raises(DatasetError, match=r"image folder not found: .*nowhere"):
        resolve_dataset(f"coco-json:{ann}:{tmp_path / 'nowhere'}", "val")


def test_bdd100k_prefers_prepared_files_else_converts_once(tmp_path, monkeypatch):
    root = tmp_path / "bdd"
    write_bdd100k_sample(root, bitmasks=False)
    calls = []
    convert = bdd100k.prepare_bdd100k
    monkeypatch.setattr(bdd100k, "prepare_bdd100k",
                        lambda *args, **kw: calls.append(args) or convert(*args, **kw))
    cache = tmp_path / "cache"
    val = resolve_dataset(f"bdd100k:{root}", "val", cache_dir=cache)
    train = resolve_dataset(f"bdd100k:{root}", "train", cache_dir=cache)
    assert len(calls) == 1  # both splits come from one conversion
    assert val.annotation_file.parent.parent == cache
    assert val.annotation_file.parent.name.startswith("bdd100k-")
    assert train.image_dir == root / "images" / "10k" / "train"
    assert len(json.loads(val.annotation_file.read_text())["images"]) == 3
    resolve_dataset(f"bdd100k:{root}", "val", cache_dir=cache)
    assert len(calls) == 1  # reused
    (root / "coco").mkdir()
    (root / "coco" / "instances_val.json").write_text("{}")
    assert resolve_dataset(f"bdd100k:{root}", "val", cache_dir=cache).annotation_file == (
        root / "coco" / "instances_val.json")


@pytest.mark.parametrize(("spec", "split", "message"), [
    ("imagenet", "train", "unknown dataset spec 'imagenet'; valid forms: synthetic, coco:ROOT, "
                          "bdd100k:ROOT, coco-json:ANN.json:IMAGE_DIR, images:DIR"),
    ("coco:", "train", "unknown dataset spec 'coco:'"),
    ("coco-json:only.json", "val", "valid forms: synthetic"),
    ("synthetic", "test", "unknown split 'test'; choose train or val"),
    ("bdd100k:/no/such/bdd", "val", "image folder not found: /no/such/bdd/images/10k/val"),
])
def test_errors_are_one_line(spec, split, message, tmp_path):
    with pytest.raises(DatasetError) as caught:
        resolve_dataset(spec, split, cache_dir=tmp_path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
