"""The paper's diagnostic studies (§4.3, appendix C) as named grids of cells.

A cell is one training run followed by a layer probe: a name, a model (``dimaskdino`` or
``maskdino``, the preset's model) and dotted config overrides at the paper's scale
(``"key=yaml_value"``, as :func:`dimaskdino.config.apply_overrides` reads them). The
overrides name only what the cell changes from the paper's defaults (DI-MaskDINO: k1 = 600,
k2 = ``num_queries`` = 300, 50 guiding tokens, 6 decoder layers; MaskDINO: DI and BATO
off), except that the numbers of selected tokens of the selection studies are always
spelled out, so that :mod:`dimaskdino.experiments.scales` can scale them to the tiny model.

Switch definitions (the paper leaves details open):

* *loss-weight constraint* (Tab. 3): ``loss.detection_scale=0.1``, the box L1 and GIoU
  weights times 0.1 at every supervised stage, class and mask weights unchanged;
* *position-token constraint* (Tab. 3): ``model.predictor.random_position_tokens=true``,
  the decoder's initial reference boxes are random instead of the selected tokens' boxes;
* *DI only* (Tab. 3): DI-MaskDINO with ``model.predictor.num_guiding_tokens=null``;
* *BATO only* (Tab. 4 #3): DI-MaskDINO with ``model.predictor.first_selected_queries=null``;
* *guidance* (Tab. 5): ``model.predictor.bato_guidance`` = ``ts1`` | ``ts2`` | ``qbal``,
  the tokens BATO's guiding tokens come from; gui. = T_i is DI off (the paper: "gui.=Ti
  actually represents the situation when DI module is disabled"; its numbers are Tab. 4
  #3's), so that cell is the ``bato`` cell of ``modules``;
* *GTG* (Tab. 6): ``model.predictor.guiding_token_generation`` on / off;
* *single / double / triple selection* (Tab. 7): k1 = 300 with DI off (one selection of
  300), (600, 300) and (600, 450, 300), the middle stage being one more token interaction
  + selection (``model.predictor.extra_selected_queries=[450]``);
* *amount of selected tokens* (Tab. 8): ``first_selected_queries`` = k1, ``num_queries`` = k2.

``paper_ap`` holds the paper's (AP box, AP mask) per dataset, for reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dimaskdino.config import ConfigError

P = "model.predictor."
DI_OFF = f"{P}first_selected_queries=null"
BATO_OFF = f"{P}num_guiding_tokens=null"
DATASETS = ("bdd100k", "coco")


@dataclass(frozen=True)
class Cell:
    """One configuration of a study: ``name`` (unique in the study, a folder name), the
    preset's ``model`` and the paper-scale ``overrides``; ``paper_ap[dataset]`` is the
    paper's (AP box, AP mask)."""

    name: str
    model: str
    overrides: tuple[str, ...]
    paper_ap: dict[str, tuple[float, float]] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Study:
    """A named grid of cells reproducing one paper table; ``datasets``: where the paper ran
    it (``bdd100k`` and / or ``coco``)."""

    name: str
    table: str
    description: str
    cells: tuple[Cell, ...]
    datasets: tuple[str, ...] = DATASETS

    def cell(self, name: str) -> Cell:
        """The cell called ``name``."""
        for cell in self.cells:
            if cell.name == name:
                return cell
        raise ConfigError(f"study {self.name!r} has no cell {name!r}")


def _ap(bdd: tuple[float, float] | None, coco: tuple[float, float] | None = None) -> dict:
    return {k: v for k, v in (("bdd100k", bdd), ("coco", coco)) if v is not None}


def _selection(k1: int | None, k2: int, extra: tuple[int, ...] = ()) -> tuple[str, ...]:
    first = "null" if k1 is None else str(k1)
    return (f"{P}first_selected_queries={first}", f"{P}extra_selected_queries={list(extra)}",
            f"{P}num_queries={k2}")


def _imbalance_tolerance() -> Study:
    three = f"{P}dec_layers=3"
    conditions = {"standard": (), "loss-weight": ("loss.detection_scale=0.1",),
                  "position-token": (f"{P}random_position_tokens=true",)}
    paper = {("maskdino", "standard"): (27.5, 23.7), ("maskdino", "loss-weight"): (24.7, 23.0),
             ("maskdino", "position-token"): (21.5, 21.9), ("di", "standard"): (27.9, 24.9),
             ("di", "loss-weight"): (27.1, 25.2), ("di", "position-token"): (23.8, 23.7)}
    cells = []
    for prefix, model, switches in (("maskdino", "maskdino", (DI_OFF, BATO_OFF)),
                                    ("di", "dimaskdino", (BATO_OFF,))):
        for condition, extra in conditions.items():
            cells.append(Cell(f"{prefix}-{condition}", model, (three, *switches, *extra),
                              _ap(paper[prefix, condition])))
    return Study("imbalance-tolerance", "Tab. 3",
                 "MaskDINO vs DI-MaskDINO with DI only, 3 decoder layers, under the "
                 "loss-weight and position-token constraints", tuple(cells), ("bdd100k",))


STUDIES: dict[str, Study] = {study.name: study for study in (
    _imbalance_tolerance(),
    Study("modules", "Tab. 4", "DI on / off x BATO on / off", (
        Cell("baseline", "maskdino", (DI_OFF, BATO_OFF), _ap((27.8, 24.4), (45.6, 41.2))),
        Cell("di", "dimaskdino", (BATO_OFF,), _ap((28.8, 25.2), (46.4, 42.1))),
        Cell("bato", "dimaskdino", (DI_OFF,), _ap((28.3, 24.9), (46.2, 41.8))),
        Cell("di+bato", "dimaskdino", (), _ap((29.5, 25.7), (46.9, 42.3))),
    )),
    Study("guidance", "Tab. 5", "BATO guided by T_i, T_s1, T_s2 or Q_bal", (
        Cell("ti", "dimaskdino", (DI_OFF,), _ap((28.3, 24.9), (46.2, 41.8))),
        *(Cell(name, "dimaskdino", (f"{P}bato_guidance={name}",), _ap(bdd, coco))
          for name, bdd, coco in (("ts1", (28.5, 24.9), (46.6, 42.0)),
                                  ("ts2", (28.9, 25.6), (46.7, 42.2)),
                                  ("qbal", (29.5, 25.7), (46.9, 42.3)))),
    )),
    Study("gtg", "Tab. 6", "BATO with / without guiding-token generation", (
        Cell("without-gtg", "dimaskdino", (f"{P}guiding_token_generation=false",),
             _ap((28.6, 25.4), (46.5, 42.2))),
        Cell("with-gtg", "dimaskdino", (f"{P}guiding_token_generation=true",),
             _ap((29.5, 25.7), (46.9, 42.3))),
    )),
    Study("selection-count", "Tab. 7", "single (300), double (600, 300) and triple "
          "(600, 450, 300) token selection", (
              Cell("single-300", "dimaskdino", _selection(None, 300),
                   _ap((28.3, 24.9), (46.2, 41.8))),
              Cell("double-600-300", "dimaskdino", _selection(600, 300),
                   _ap((29.5, 25.7), (46.9, 42.3))),
              Cell("triple-600-450-300", "dimaskdino", _selection(600, 300, (450,)),
                   _ap((29.3, 25.5), (46.6, 42.2))),
          )),
    Study("selection-amount", "Tab. 8", "double selection with (k1, k2) = (300, 300), "
          "(600, 600), (600, 300)", tuple(
              Cell(f"k1-{k1}-k2-{k2}", "dimaskdino", _selection(k1, k2), _ap(bdd, coco))
              for k1, k2, bdd, coco in ((300, 300, (29.1, 25.5), (46.6, 42.3)),
                                        (600, 600, (29.3, 25.3), (46.8, 42.4)),
                                        (600, 300, (29.5, 25.7), (46.9, 42.3))))),
    Study("layer-depth", "Tab. 9", "3, 6 and 9 decoder layers", tuple(
        Cell(f"layers-{n}", "dimaskdino", (f"{P}dec_layers={n}",), _ap(bdd, coco))
        for n, bdd, coco in ((3, (28.7, 25.3), (45.8, 41.3)), (6, (29.5, 25.7), (46.9, 42.3)),
                             (9, (28.9, 25.6), (46.9, 42.5))))),
)}


def get_study(name: str) -> Study:
    """The study called ``name``; ConfigError listing the studies otherwise."""
    if name not in STUDIES:
        raise ConfigError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    return STUDIES[name]
