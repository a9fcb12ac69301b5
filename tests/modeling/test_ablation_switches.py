"""The ablation switches of the paper's diagnostic tables: each changes exactly what its
definition says, trains (finite losses, gradients reach the new parts) and is validated."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dimaskdino.config import ConfigError, apply_overrides, preset
from dimaskdino.modeling.criterion import SetCriterion
from dimaskdino.modeling.levels import level_positions
from dimaskdino.modeling.matcher import HungarianMatcher
from dimaskdino.modeling.position import sine_box_embedding
from dimaskdino.modeling.predictor import DIMaskDINOPredictor, PredictorConfig
from tests.modeling.encoded import encoded

BASE = PredictorConfig(num_classes=4, hidden_dim=32, num_queries=6, dim_feedforward=64,
                       dec_layers=2, mask_dim=32, first_selected_queries=12, ti_layers=1,
                       num_guiding_tokens=3, dn_num=8)


def inputs():
    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(2, 32, s, s, generator=g) for s in (8, 4, 2, 1)]
    return maps, torch.randn(2, 32, 16, 16, generator=g)


def targets():
    out = []
    for n in (2, 3):
        masks = torch.zeros(n, 64, 64)
        for k in range(n):
            masks[k, 8 * k: 8 * k + 20, 10: 30 + 5 * k] = 1
        out.append({"labels": torch.arange(n) % 4, "boxes": torch.rand(n, 4) * 0.3 + 0.3,
                    "masks": masks, "generator": torch.Generator().manual_seed(n)})
    return out


def build(**changes) -> DIMaskDINOPredictor:
    torch.manual_seed(0)
    return DIMaskDINOPredictor(dataclasses.replace(BASE, **changes)).eval()


def test_triple_selection_adds_a_supervised_interaction_and_selection_stage():
    predictor = build(first_selected_queries=12, extra_selected_queries=(9,)).train()
    maps, mask_features = inputs()
    outputs = predictor(encoded(maps, mask_features), targets=targets())
    assert outputs["di"]["indices"].shape == (2, 9)          # 12 -> 9
    (extra,) = outputs["di_extra"]
    assert extra["indices"].shape == (2, 6) and int(extra["indices"].max()) < 9   # 9 -> 6
    assert torch.equal(outputs["tgt"], extra["content"])
    assert outputs["layers"][0]["pred_logits"].shape == (2, 6, 4)
    losses = SetCriterion(4, HungarianMatcher(num_points=32), num_points=32)(outputs, targets())
    assert {"class_di_s3_0", "l1_di_s3_0", "giou_di_s3_0"} <= set(losses)
    losses["loss"].backward()
    grad = predictor.extra_di[0].layers[0].linear1.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_double_selection_keeps_the_official_parameter_names():
    assert set(build().state_dict()) == set(build(bato_guidance="ts2").state_dict())
    assert not any(k.startswith("extra_di") for k in build().state_dict())


@pytest.mark.parametrize(("guidance", "candidates"), [("ts1", 12), ("ts2", 6), ("qbal", 6)])
def test_bato_guidance_source(guidance, candidates):
    """The guiding tokens are the best-scored tokens of the chosen source, with the position
    embedding of their boxes."""
    predictor = build(bato_guidance=guidance)
    maps, mask_features = inputs()
    calls = []
    original = predictor.bato.forward
    predictor.bato.forward = lambda queries, pos, *rest: calls.append((queries, pos)) or \
        original(queries, pos, *rest)
    with torch.no_grad():
        outputs = predictor(encoded(maps, mask_features))
    ((queries, pos),) = calls
    assert queries.shape == (2, candidates, 32)
    if guidance == "ts1":
        source, boxes = outputs["selection"]["content"], outputs["initial_boxes_unsigmoid"]
    elif guidance == "ts2":
        source, boxes = outputs["tgt"], outputs["refpoints_unsigmoid"]
    else:
        return  # Q_bal: decoder layer 0's output (covered by the official fixtures)
    assert torch.equal(queries, source)
    want = predictor.decoder.ref_point_head(sine_box_embedding(boxes.sigmoid(), 32))
    torch.testing.assert_close(pos, want)


def test_guidance_changes_the_guided_memory():
    maps, mask_features = inputs()
    memories = {}
    for guidance in ("qbal", "ts2", "ts1"):
        with torch.no_grad():
            memories[guidance] = build(bato_guidance=guidance)(
                encoded(maps, mask_features)).bato.memory
    assert not torch.allclose(memories["qbal"], memories["ts2"])
    assert not torch.allclose(memories["ts2"], memories["ts1"])


def test_without_guiding_token_generation_the_queries_guide_directly():
    predictor = build(guiding_token_generation=False)
    assert set(predictor.state_dict()) == set(build().state_dict())
    maps, mask_features = inputs()
    with torch.no_grad():
        outputs = predictor(encoded(maps, mask_features))
        bato = predictor.bato
        # BATO on some queries: its update must see the chosen queries as they are, with
        # no position, instead of their mask embedding and box position
        queries = torch.randn(2, 6, 32)
        memory = outputs["memory"]
        memory_pos = torch.cat(level_positions(maps[::-1]), dim=1)
        got = bato(queries, torch.randn(2, 6, 32), memory, memory_pos,
                   outputs["spatial_shapes"], outputs["level_start_index"], mask_features,
                   predictor.heads)
        chosen = queries.gather(1, got["indices"][..., None].expand(-1, -1, 32))
        want = bato.feature_update(memory, memory_pos, chosen, torch.zeros_like(chosen))
    torch.testing.assert_close(got["memory"], want)


def test_position_token_constraint_replaces_the_initial_boxes_with_fixed_random_ones():
    predictor = build(random_position_tokens=True)
    assert set(predictor.state_dict()) == set(build().state_dict())  # nothing saved
    maps, mask_features = inputs()
    with torch.no_grad():
        first = predictor(encoded(maps, mask_features))
        other = predictor(encoded([m.flip(-1) + 1 for m in maps], mask_features))
    boxes = first["layers"][0]["pred_boxes"]
    assert torch.equal(boxes[0], boxes[1])                    # the same for every image
    assert torch.equal(boxes, other["layers"][0]["pred_boxes"])   # whatever the input
    assert torch.equal(boxes, build(random_position_tokens=True)(
        encoded(maps, mask_features))["layers"][0]["pred_boxes"].detach())   # and every build
    # the content part of the queries is still DI's selection
    assert torch.equal(first["tgt"], first["di"]["content"])
    assert not torch.allclose(boxes, build()(encoded(maps, mask_features)).layers[0]["pred_boxes"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.predictor.bato_guidance=ti"], "gui.=Ti is DI off"),
    (["model.predictor.first_selected_queries=null", "model.predictor.bato_guidance=ts2"],
     "need DI"),
    (["model.predictor.first_selected_queries=null",
      "model.predictor.extra_selected_queries=[20]"], "need DI"),
    (["model.predictor.extra_selected_queries=[90]"], "must not grow"),
])
def test_invalid_switch_combinations_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(preset("tiny"), overrides)
