"""What the report says about the studies: each study's rows in the paper's layout, the
paper column a run is compared with, and the switch definitions (read from the registry's
module docstring, so that they are written once)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dimaskdino.experiments import registry
from dimaskdino.experiments.registry import Study

DATASET_NAMES = {"bdd100k": "BDD100K", "coco": "COCO"}
_BULLET = re.compile(r"^\* \*(?P<term>[^*]+)\* \((?P<table>[^)]*)\): (?P<text>.*?)(?=^\* |^\n|\Z)",
                     re.S | re.M)


@dataclass(frozen=True)
class Layout:
    """A study's table in the paper's layout: ``index`` names the row-label levels;
    ``rows[cell]`` is the cell's row labels (one per level); ``groups[cell]`` its column
    group (Tab. 3: the model), none when empty; ``reference`` the row label (first level)
    every other row of its group is compared with in percent (Tab. 3: ``standard``)."""

    index: tuple[str, ...]
    rows: dict[str, tuple[str, ...]]
    groups: dict[str, str] = field(default_factory=dict)
    reference: str | None = None


def _tolerance() -> Layout:
    conditions = {"standard": "standard", "loss-weight": "loss weight constraint",
                  "position-token": "position token constraint"}
    models = {"maskdino": "MaskDINO", "di": "DI-MaskDINO (DI only)"}
    cells = {f"{m}-{c}": (label, model) for m, model in models.items()
             for c, label in conditions.items()}
    return Layout(("imbalance condition",), {k: (v[0],) for k, v in cells.items()},
                  {k: v[1] for k, v in cells.items()}, "standard")


LAYOUTS: dict[str, Layout] = {
    "imbalance-tolerance": _tolerance(),
    "modules": Layout(("ID", "DI", "BATO"), {
        "baseline": ("#1", "-", "-"), "di": ("#2", "✓", "-"), "bato": ("#3", "-", "✓"),
        "di+bato": ("#4", "✓", "✓")}),
    "guidance": Layout(("guidance",), {
        "ti": ("gui.=T_i",), "ts1": ("gui.=T_s1",), "ts2": ("gui.=T_s2",),
        "qbal": ("gui.=Q_bal",)}),
    "gtg": Layout(("configuration",), {"without-gtg": ("w/o GTG",), "with-gtg": ("w/ GTG",)}),
    "selection-count": Layout(("configuration",), {
        "single-300": ("sing. k1=300",), "double-600-300": ("doub. k1=600, k2=300",),
        "triple-600-450-300": ("trip. k1=600, k2=450, k3=300",)}),
    "selection-amount": Layout(("configuration",), {
        "k1-300-k2-300": ("k1=300, k2=300",), "k1-600-k2-600": ("k1=600, k2=600",),
        "k1-600-k2-300": ("k1=600, k2=300",)}),
    "layer-depth": Layout(("decoder layers",), {
        "layers-3": ("3",), "layers-6": ("6",), "layers-9": ("9",)}),
}


def layout(study: Study) -> Layout:
    """The study's :class:`Layout`; one row per cell, labelled by its name, for a study
    without a paper layout."""
    return LAYOUTS.get(study.name) or Layout(("cell",), {c.name: (c.name,) for c in study.cells})


@dataclass(frozen=True)
class Reference:
    """The paper column a section is compared with: ``key`` in ``Cell.paper_ap``, a label,
    and whether the run's dataset is that dataset (else the paper is a reference only)."""

    key: str
    label: str
    matched: bool


def reference(study: Study, dataset: str) -> Reference:
    """``bdd100k:...`` runs compare with the paper's BDD100K numbers, ``coco:...`` with
    COCO's; other datasets (synthetic, custom) show the paper's COCO numbers (BDD100K's for
    a study the paper ran on BDD100K only) as a reference that is not expected to match."""
    kind = dataset.partition(":")[0]
    if kind in DATASET_NAMES and dataset.partition(":")[2]:
        return Reference(kind, f"paper ({DATASET_NAMES[kind]})", True)
    key = "coco" if "coco" in study.datasets else study.datasets[0]
    return Reference(key, f"paper ({DATASET_NAMES[key]}, reference only)", False)


def overview() -> str:
    """The registry docstring's paragraphs before the switch definitions (RST-ish text)."""
    body = (registry.__doc__ or "").split("\n\n", 1)[-1]
    return " ".join(body.split("Switch definitions")[0].split())


def switches() -> list[tuple[str, str, str]]:
    """The switch definitions as (term, tables, text), text in the docstring's RST-ish
    markup (````code````)."""
    text = (registry.__doc__ or "").partition("Switch definitions")[2]
    return [(m["term"], m["table"], " ".join(m["text"].split()).rstrip(";"))
            for m in _BULLET.finditer(text)]
