"""Property test: randomly damaged COCO JSON fed to the reader and to ``dimask data check``
gives a result or one clear error, never a traceback, never a hang."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dimaskdino.cli import app
from dimaskdino.data.coco import CocoInstances, DatasetError
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset

FUZZ = settings(max_examples=40, deadline=5000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# what a damaged field may become: JSON of every type, odd numbers included
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.sampled_from([10**30, -1, 0])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    ann_file, images = write_synthetic_dataset(root, SyntheticSpec(
        num_train=2, num_val=1, height=32, width=40, max_objects=2))["train"]
    return json.loads(ann_file.read_text()), images, root


def _paths(node, prefix=()):
    """Every path (tuple of keys / indices) into a JSON value."""
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


@st.composite
def damaged(draw, data: dict) -> str:
    """The dataset's JSON text after 1-3 random edits (replace, delete, duplicate) and
    maybe a truncation."""
    data = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        *head, last = path
        parent = data
        for key in head:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if action == "replace":
            parent[last] = draw(VALUES)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
    text = json.dumps(data)
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:
        text = text[:draw(st.integers(0, len(text)))]
    return text


def write_damaged(source, data, name: str):
    """A damaged copy of the source dataset's JSON: (its path, the image folder)."""
    original, images, root = source
    path = root / name
    path.write_text(data.draw(damaged(original)))
    return path, images


@given(st.data())
@FUZZ
def test_the_reader_gives_items_or_one_dataset_error(source, data):
    path, images = write_damaged(source, data, "damaged-reader.json")
    try:
        dataset = CocoInstances(path, images)
        for index in range(len(dataset)):
            image, target = dataset[index]
            assert image.shape[0] == 3 and len(target["labels"]) == len(target["masks"])
    except DatasetError as exc:
        assert "\n" not in str(exc)


@pytest.mark.slow
@given(st.data())
@FUZZ
def test_data_check_reports_problems_without_a_traceback(source, data):
    path, images = write_damaged(source, data, "damaged-check.json")
    result = CliRunner().invoke(app, ["data", "check", "--quiet",
                                      f"coco-json:{path}:{images}"])
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
