"""Optimizer parameter groups and the learning-rate schedule."""

from __future__ import annotations

import pytest
import torch

from dimaskdino.config import SolverConfig, apply_overrides, preset
from dimaskdino.engine.solver import build_optimizer, lr_factor, set_learning_rate
from dimaskdino.modeling.backbone import SwinConfig, SwinTransformer
from dimaskdino.modeling.model import DIMaskDINO


def test_groups_scale_the_backbone_and_spare_norms_and_embeddings():
    config = preset("tiny")
    model = DIMaskDINO(config.model)
    solver = SolverConfig(lr=2e-4, weight_decay=0.05, backbone_multiplier=0.1)
    optimizer = build_optimizer(model, solver)
    where = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(where) == len(named)                        # every parameter exactly once
    assert where[id(named["backbone.stem.conv1.weight"])]["lr"] == pytest.approx(2e-5)
    assert where[id(named["backbone.stem.conv1.norm.weight"])]["weight_decay"] == 0.0
    assert where[id(named["predictor.label_enc.weight"])]["weight_decay"] == 0.0
    assert where[id(named["predictor.heads.decoder_norm.weight"])]["weight_decay"] == 0.0
    assert where[id(named["predictor.heads.class_embed.weight"])]["weight_decay"] == 0.05
    assert where[id(named["predictor.heads.class_embed.weight"])]["lr"] == 2e-4
    assert where[id(named["encoder.transformer.level_embed"])]["weight_decay"] == 0.05


def test_a_frozen_backbone_is_left_out_of_the_optimizer():
    model = DIMaskDINO(apply_overrides(preset("tiny"), ["model.backbone.freeze_at=5"]).model)
    optimizer = build_optimizer(model, SolverConfig())
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        assert (id(param) in optimized) == (not name.startswith("backbone.")), name


def test_swin_position_tables_get_no_weight_decay():
    backbone = SwinTransformer(SwinConfig(embed_dim=16, depths=(2, 2, 2, 2),
                                          num_heads=(1, 2, 2, 4), window_size=4, ape=True))
    model = torch.nn.ModuleDict({"backbone": backbone})
    optimizer = build_optimizer(model, SolverConfig(weight_decay=0.05))
    where = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    table = "backbone.layers.0.blocks.0.attn.relative_position_bias_table"
    assert where[id(named[table])]["weight_decay"] == 0.0
    assert where[id(named["backbone.absolute_pos_embed"])]["weight_decay"] == 0.0
    assert where[id(named["backbone.layers.0.blocks.0.attn.qkv.weight"])]["weight_decay"] == 0.05


def test_warmup_and_steps():
    solver = SolverConfig(lr=1.0, warmup_iters=10, warmup_factor=0.1, steps=(20, 30),
                          gamma=0.5)
    assert lr_factor(0, solver) == pytest.approx(0.1)
    assert lr_factor(5, solver) == pytest.approx(0.55)
    assert [lr_factor(i, solver) for i in (10, 19, 20, 29, 30)] == [1, 1, 0.5, 0.5, 0.25]
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, solver)
    assert set_learning_rate(optimizer, 25, solver) == 0.5
    assert optimizer.param_groups[0]["lr"] == 0.5


def test_cosine_equals_torch_cosine_annealing_after_warmup():
    solver = SolverConfig(lr=1.0, schedule="cosine", max_iter=40, steps=(20,), warmup_iters=8,
                          warmup_factor=0.1)
    model = torch.nn.Linear(2, 2)
    reference = torch.optim.SGD(model.parameters(), lr=1.0)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=40, eta_min=0)
    for iteration in range(41):
        cosine = reference.param_groups[0]["lr"]
        warmup = 1.0 if iteration >= 8 else 0.1 + 0.9 * iteration / 8
        assert lr_factor(iteration, solver) == pytest.approx(cosine * warmup, abs=1e-12)
        reference.step()
        annealing.step()
    assert lr_factor(40, solver) == pytest.approx(0.0, abs=1e-12)  # steps and gamma unused
