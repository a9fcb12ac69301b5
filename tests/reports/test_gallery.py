"""The report's gallery from a real micro store: every cell logged the pictures' data of the
images the fixed rule picks, and the page shows MaskDINO vs DI-MaskDINO, first vs last
layer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dimaskdino.analysis.layer_detections import (
    GALLERY_IMAGES,
    GALLERY_RULE,
    GALLERY_SCORE,
    load_views,
)
from dimaskdino.reports.gallery import section_gallery
from dimaskdino.reports.runs import load_sections
from tests.conftest import CELLS, SEEDS

pytestmark = pytest.mark.slow


def _rule(store: str) -> list[str]:
    """The file stems of the gallery's images, recomputed from the store's synthetic val
    annotations: most non-crowd objects first, ties by the smaller image id."""
    root = Path(store.removeprefix("sqlite:///")).parent.parent
    (annotations,) = root.glob("cache/synthetic-*/annotations/instances_val.json")
    data = json.loads(annotations.read_text())
    objects = Counter(a["image_id"] for a in data["annotations"] if not a.get("iscrowd"))
    ranked = sorted(data["images"], key=lambda im: (-objects[im["id"]], im["id"]))
    return [Path(im["file_name"]).stem for im in ranked[:GALLERY_IMAGES]]


def test_every_cell_logs_the_images_of_the_rule(store, tmp_path):
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("modules").experiment_id
    runs = client.search_runs([experiment], "tags.role = 'cell'")
    assert len(runs) == len(CELLS) * SEEDS
    for run in runs:
        local = client.download_artifacts(run.info.run_id, "gallery",
                                          str(tmp_path / run.info.run_id))
        views = load_views(Path(local))
        assert [v.name for v in views] == _rule(store)
        for view in views:
            assert view.last == 2 and sorted(view.layers) == [0, 2]
            assert view.ground_truth is not None and len(view.ground_truth)
            for found in view.layers.values():
                assert (found.scores >= GALLERY_SCORE).all()
                assert found.masks.shape[1:] == view.image.shape[:2]


def test_gallery_chart(store):
    (section,) = load_sections(store, ["modules"])
    chart = section_gallery(store, section)
    assert chart.stem == "modules-tiny-synthetic-gallery"
    assert GALLERY_RULE in chart.caption
    assert all(f"{cell} seed 0" in chart.caption for cell in CELLS)
    assert chart.png.startswith(b"\x89PNG")
    for title in ("MaskDINO, layer 0", "MaskDINO, layer 2 (last)", "DI-MaskDINO, layer 0",
                  "DI-MaskDINO, layer 2 (last)"):
        assert title in chart.svg
