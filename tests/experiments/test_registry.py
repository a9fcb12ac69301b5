"""The study registry holds exactly the paper's cells, and every cell's overrides build a
valid config at every scale."""

from __future__ import annotations

import pytest

from dimaskdino.config import ConfigError, apply_overrides, preset
from dimaskdino.experiments.plan import plan_study
from dimaskdino.experiments.registry import STUDIES, get_study
from dimaskdino.experiments.scales import scale_base, scale_selection
from dimaskdino.modeling.backbone import SwinConfig

P = "model.predictor."

# study -> {cell: (model, BDD100K (AP box, AP mask), COCO (AP box, AP mask))}, Tab. 3-9
PAPER = {
    "imbalance-tolerance": {
        "maskdino-standard": ("maskdino", (27.5, 23.7), None),
        "maskdino-loss-weight": ("maskdino", (24.7, 23.0), None),
        "maskdino-position-token": ("maskdino", (21.5, 21.9), None),
        "di-standard": ("dimaskdino", (27.9, 24.9), None),
        "di-loss-weight": ("dimaskdino", (27.1, 25.2), None),
        "di-position-token": ("dimaskdino", (23.8, 23.7), None),
    },
    "modules": {
        "baseline": ("maskdino", (27.8, 24.4), (45.6, 41.2)),
        "di": ("dimaskdino", (28.8, 25.2), (46.4, 42.1)),
        "bato": ("dimaskdino", (28.3, 24.9), (46.2, 41.8)),
        "di+bato": ("dimaskdino", (29.5, 25.7), (46.9, 42.3)),
    },
    "guidance": {
        "ti": ("dimaskdino", (28.3, 24.9), (46.2, 41.8)),
        "ts1": ("dimaskdino", (28.5, 24.9), (46.6, 42.0)),
        "ts2": ("dimaskdino", (28.9, 25.6), (46.7, 42.2)),
        "qbal": ("dimaskdino", (29.5, 25.7), (46.9, 42.3)),
    },
    "gtg": {
        "without-gtg": ("dimaskdino", (28.6, 25.4), (46.5, 42.2)),
        "with-gtg": ("dimaskdino", (29.5, 25.7), (46.9, 42.3)),
    },
    "selection-count": {
        "single-300": ("dimaskdino", (28.3, 24.9), (46.2, 41.8)),
        "double-600-300": ("dimaskdino", (29.5, 25.7), (46.9, 42.3)),
        "triple-600-450-300": ("dimaskdino", (29.3, 25.5), (46.6, 42.2)),
    },
    "selection-amount": {
        "k1-300-k2-300": ("dimaskdino", (29.1, 25.5), (46.6, 42.3)),
        "k1-600-k2-600": ("dimaskdino", (29.3, 25.3), (46.8, 42.4)),
        "k1-600-k2-300": ("dimaskdino", (29.5, 25.7), (46.9, 42.3)),
    },
    "layer-depth": {
        "layers-3": ("dimaskdino", (28.7, 25.3), (45.8, 41.3)),
        "layers-6": ("dimaskdino", (29.5, 25.7), (46.9, 42.3)),
        "layers-9": ("dimaskdino", (28.9, 25.6), (46.9, 42.5)),
    },
}

# what each cell's paper-scale model must be: (k1 or None, extra, k_final, guiding tokens,
# decoder layers, guidance, GTG, random position tokens, detection loss scale)
SWITCHES = {
    ("imbalance-tolerance", "maskdino-standard"): (None, (), 300, None, 3, "qbal", True,
                                                   False, 1.0),
    ("imbalance-tolerance", "maskdino-loss-weight"): (None, (), 300, None, 3, "qbal", True,
                                                      False, 0.1),
    ("imbalance-tolerance", "maskdino-position-token"): (None, (), 300, None, 3, "qbal",
                                                         True, True, 1.0),
    ("imbalance-tolerance", "di-standard"): (600, (), 300, None, 3, "qbal", True, False, 1.0),
    ("imbalance-tolerance", "di-loss-weight"): (600, (), 300, None, 3, "qbal", True, False,
                                                0.1),
    ("imbalance-tolerance", "di-position-token"): (600, (), 300, None, 3, "qbal", True, True,
                                                   1.0),
    ("modules", "baseline"): (None, (), 300, None, 6, "qbal", True, False, 1.0),
    ("modules", "di"): (600, (), 300, None, 6, "qbal", True, False, 1.0),
    ("modules", "bato"): (None, (), 300, 50, 6, "qbal", True, False, 1.0),
    ("modules", "di+bato"): (600, (), 300, 50, 6, "qbal", True, False, 1.0),
    ("guidance", "ti"): (None, (), 300, 50, 6, "qbal", True, False, 1.0),
    ("guidance", "ts1"): (600, (), 300, 50, 6, "ts1", True, False, 1.0),
    ("guidance", "ts2"): (600, (), 300, 50, 6, "ts2", True, False, 1.0),
    ("guidance", "qbal"): (600, (), 300, 50, 6, "qbal", True, False, 1.0),
    ("gtg", "without-gtg"): (600, (), 300, 50, 6, "qbal", False, False, 1.0),
    ("gtg", "with-gtg"): (600, (), 300, 50, 6, "qbal", True, False, 1.0),
    ("selection-count", "single-300"): (None, (), 300, 50, 6, "qbal", True, False, 1.0),
    ("selection-count", "double-600-300"): (600, (), 300, 50, 6, "qbal", True, False, 1.0),
    ("selection-count", "triple-600-450-300"): (600, (450,), 300, 50, 6, "qbal", True, False,
                                                1.0),
    ("selection-amount", "k1-300-k2-300"): (300, (), 300, 50, 6, "qbal", True, False, 1.0),
    ("selection-amount", "k1-600-k2-600"): (600, (), 600, 50, 6, "qbal", True, False, 1.0),
    ("selection-amount", "k1-600-k2-300"): (600, (), 300, 50, 6, "qbal", True, False, 1.0),
    ("layer-depth", "layers-3"): (600, (), 300, 50, 3, "qbal", True, False, 1.0),
    ("layer-depth", "layers-6"): (600, (), 300, 50, 6, "qbal", True, False, 1.0),
    ("layer-depth", "layers-9"): (600, (), 300, 50, 9, "qbal", True, False, 1.0),
}


def _switches(config) -> tuple:
    p = config.model.predictor
    return (p.first_selected_queries, p.extra_selected_queries, p.num_queries,
            p.num_guiding_tokens, p.dec_layers, p.bato_guidance, p.guiding_token_generation,
            p.random_position_tokens, config.loss.detection_scale)


def test_registry_holds_the_papers_cells():
    assert set(STUDIES) == set(PAPER)
    for name, cells in PAPER.items():
        study = get_study(name)
        assert [c.name for c in study.cells] == list(cells)
        for cell in study.cells:
            model, bdd, coco = cells[cell.name]
            assert cell.model == model
            assert cell.paper_ap == {k: v for k, v in (("bdd100k", bdd), ("coco", coco)) if v}
    assert get_study("imbalance-tolerance").datasets == ("bdd100k",)


@pytest.mark.parametrize("paper_preset", ["r50-coco-12ep", "r50-bdd100k-68ep"])
def test_cells_build_the_papers_models(paper_preset):
    for (study, name), expected in SWITCHES.items():
        cell = get_study(study).cell(name)
        config = apply_overrides(preset(paper_preset, cell.model), list(cell.overrides))
        assert _switches(config) == expected, (study, name)


def test_tiny_scale_scales_the_selection_counts(tmp_path):
    assert scale_selection((f"{P}first_selected_queries=600", f"{P}num_queries=300",
                            f"{P}extra_selected_queries=[450]", f"{P}dec_layers=9"), 0.1) == (
        f"{P}first_selected_queries=60", f"{P}num_queries=30",
        f"{P}extra_selected_queries=[45]", f"{P}dec_layers=9")
    for study in STUDIES.values():
        for job in plan_study(study, "tiny", 2, None, [], tmp_path):
            config = job.config()
            paper = SWITCHES[study.name, job.cell]
            tiny = tuple(None if k is None else k // 10 for k in (paper[0], paper[2]))
            assert (config.model.predictor.first_selected_queries,
                    config.model.predictor.num_queries) == tiny
            assert config.model.predictor.extra_selected_queries == tuple(
                k // 10 for k in paper[1])
            assert config.model.predictor.num_guiding_tokens == (paper[3] and 10)
            explicit = any("dec_layers" in o for o in study.cell(job.cell).overrides)
            assert config.model.predictor.dec_layers == (paper[4] if explicit else 3)
            assert config.solver.seed == job.seed
            assert job.output_dir == str(tmp_path / study.name / "tiny" / job.cell /
                                         f"seed{job.seed}")


def fake_coco(tmp_path):
    """An (empty) COCO folder that resolves as ``coco:ROOT``."""
    coco = tmp_path / "coco"
    for split in ("train", "val"):
        (coco / f"{split}2017").mkdir(parents=True)
        (coco / "annotations").mkdir(exist_ok=True)
        (coco / "annotations" / f"instances_{split}2017.json").write_text("{}")
    return coco


SCRATCH = ("model.backbone_weights=none",)


def test_scales_pick_presets_and_schedules(tmp_path):
    modules = get_study("modules")
    coco = fake_coco(tmp_path)
    paper = scale_base("paper", modules, f"coco:{coco}", sets=SCRATCH)
    assert paper.preset == "r50-coco-12ep"
    small = scale_base("small", modules, f"coco:{coco}", sets=SCRATCH)
    config = apply_overrides(preset(small.preset), list(small.overrides))
    assert (config.solver.max_iter, config.solver.batch_size, config.solver.steps) == (
        5000, 8, (4000,))
    assert config.data.dataset == f"coco:{coco}"
    with pytest.raises(ConfigError, match="on bdd100k only"):
        scale_base("paper", get_study("imbalance-tolerance"), f"coco:{coco}", sets=SCRATCH)
    with pytest.raises(ConfigError, match="needs --data"):
        scale_base("small", modules, None)
    with pytest.raises(ConfigError, match="unknown scale"):
        scale_base("huge", modules, None)


def test_swin_large_backbone_at_the_small_and_paper_scales(tmp_path):
    modules = get_study("modules")
    coco = fake_coco(tmp_path)
    assert scale_base("paper", modules, f"coco:{coco}", backbone="swinl",
                      sets=SCRATCH).preset == "swinl-coco-12ep"
    small = scale_base("small", modules, f"coco:{coco}", backbone="swinl", sets=SCRATCH)
    config = apply_overrides(preset(small.preset), list(small.overrides))
    assert isinstance(config.model.backbone, SwinConfig)
    assert config.model.backbone.embed_dim == 192 and config.solver.max_iter == 5000
    jobs = plan_study(modules, "paper", 1, f"coco:{coco}", list(SCRATCH), tmp_path, "swinl")
    assert all("/paper-swinl/" in job.output_dir for job in jobs)
    assert all(isinstance(job.config().model.backbone, SwinConfig) for job in jobs)
    with pytest.raises(ConfigError, match="small and paper scales"):
        scale_base("tiny", modules, None, backbone="swinl")
    with pytest.raises(ConfigError, match="unknown backbone 'vit'"):
        scale_base("paper", modules, f"coco:{coco}", backbone="vit")
