"""``dimask data``: exit codes, printed summaries and problems, one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dimaskdino.cli.app import app
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset
from tests.data.test_bdd100k import write_bdd100k_sample

runner = CliRunner()


def invoke(*args: str, env: dict | None = None):
    return runner.invoke(app, ["data", *args], env=env)


def one_line_error(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_synthetic_dataset(root, SyntheticSpec(num_train=2, num_val=2, height=64,
                                                       width=80))["val"]


def test_check_valid_dataset_exits_0(tiny):
    ann_file, image_dir = tiny
    result = invoke("check", f"coco-json:{ann_file}:{image_dir}", "--split", "val", "--quiet")
    assert result.exit_code == 0, result.output
    assert "images" in result.stdout and "circle" in result.stdout
    assert result.stdout.strip().endswith("no problems found")


def test_check_synthetic_spec_uses_the_cache(tmp_path):
    result = invoke("check", "synthetic", "--split", "val", "--quick", "--quiet",
                    env={"DIMASK_CACHE": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert str(tmp_path) in result.stdout.replace("\n", "")


def test_check_broken_dataset_lists_every_problem_and_exits_1(tiny, tmp_path):
    ann_file, image_dir = tiny
    data = json.loads(ann_file.read_text())
    data["annotations"][0]["category_id"] = 42
    data["annotations"][1]["bbox"] = [70.0, 10.0, 30.0, 5.0]
    data["annotations"] = data["annotations"][:2] + [a for a in data["annotations"][2:]
                                                     if a["image_id"] != 2]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    result = invoke("check", f"coco-json:{broken}:{image_dir}", "--quiet")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stdout.splitlines()
    assert "[unknown-category-id] annotation 1 has category id 42, which is not listed" in lines
    assert any(line.startswith("[bad-bbox] annotation 2 ") for line in lines)
    assert lines[-1] == "2 problems (bad-bbox 1, unknown-category-id 1)"
    assert "warning: 1 images have no annotations" in lines


@pytest.mark.parametrize(("args", "message"), [
    (["check", "imagenet"], "error: unknown dataset spec 'imagenet'; valid forms: synthetic, "
                            "coco:ROOT, bdd100k:ROOT, coco-json:ANN.json:IMAGE_DIR"),
    (["check", "synthetic", "--split", "test"], "error: unknown split 'test'"),
    (["check", "coco-json:/no/such/ann.json:/tmp"], "error: annotation file not found: "
                                                    "/no/such/ann.json"),
    (["check", "coco:/no/such/coco"], "error: annotation file not found: "
                                      "/no/such/coco/annotations/instances_train2017.json"),
    (["prepare-bdd100k", "/no/such/bdd", "--out", "/tmp/unused"],
     "error: BDD100K train images not found: expected the folder /no/such/bdd/images/10k/train"),
])
def test_bad_input_is_one_line_and_exit_1(args, message):
    assert one_line_error(*args).startswith(message)


def test_prepare_bdd100k_writes_and_summarises(tmp_path):
    root = tmp_path / "bdd"
    write_bdd100k_sample(root, rles=False)
    result = invoke("prepare-bdd100k", str(root), "--out", str(root / "coco"), "--quiet")
    assert result.exit_code == 0, result.output
    for split in ("train", "val"):
        assert (root / "coco" / f"instances_{split}.json").is_file()
        assert f"{split}: {root / 'coco' / f'instances_{split}.json'}" in result.stdout
    assert "bitmasks" in result.stdout and "id 9: 2" in result.stdout
    # bdd100k:ROOT now reads ROOT/coco and the result checks clean
    check = invoke("check", f"bdd100k:{root}", "--split", "val", "--quiet",
                   env={"DIMASK_CACHE": str(tmp_path / "cache")})
    assert check.exit_code == 0, check.output
    assert not (tmp_path / "cache").exists()


def test_prepare_bdd100k_without_labels(tmp_path):
    (tmp_path / "images" / "10k" / "train").mkdir(parents=True)
    (tmp_path / "images" / "10k" / "val").mkdir(parents=True)
    line = one_line_error("prepare-bdd100k", str(tmp_path), "--out", str(tmp_path / "out"))
    assert "train labels not found" in line and "ins_seg_train.json" in line


def test_check_every_spec_kind_of_an_image_folder(tmp_path):
    from PIL import Image

    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    Image.new("L", (12, 40)).save(tmp_path / "b.jpg")
    result = invoke("check", f"images:{tmp_path}", "--quiet")
    assert result.exit_code == 0, result.output
    rows = {" ".join(line.strip("│ ").split()) for line in result.stdout.splitlines()}
    assert {"images │ 2", "mode RGB │ 1", "mode L │ 1", "smallest (W x H) │ 12 x 40",
            "largest (W x H) │ 30 x 20"} <= rows, result.stdout
    assert result.stdout.strip().endswith("no problems found")
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8 not really")
    result = invoke("check", f"images:{tmp_path}", "--quiet")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("[undecodable-image] image c.jpg: cannot decode") for line in
               lines)
    assert lines[-1] == "1 problems (undecodable-image 1)"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("check", f"images:{empty}", "--quiet")
    assert result.exit_code == 1 and result.stdout.splitlines()[-1] == "1 problems (no-images 1)"
