"""The model against official outputs kept in the repository (``tests/fixtures``): layouts
the shared golden fixtures do not cover, compared stage by stage through ``load_official``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dimaskdino.checkpoint import load_official
from tests.modeling.official_instances import assert_instances_match

FIXTURES = sorted(p.name for p in (Path(__file__).parents[1] / "fixtures").iterdir()
                  if (p / "outputs.pt").exists())
ENCODER_ATOL = 1e-9  # as tests/modeling/test_encoder.py
ATOL = 1e-6          # as tests/modeling/test_model.py


def close(got, want, what, atol=ATOL):
    torch.testing.assert_close(got, want, rtol=0, atol=atol, msg=what)


@pytest.fixture(scope="module", params=FIXTURES)
def official_run(request):
    folder = Path(__file__).parents[1] / "fixtures" / request.param
    model = load_official(folder / "config.yaml", folder / "state_dict.pt")
    inputs = torch.load(folder / "inputs.pt", weights_only=True)
    want = torch.load(folder / "outputs.pt", weights_only=True)
    sizes = list(zip(inputs["heights"], inputs["widths"], strict=True))
    got = model.predict(inputs["images"], output_sizes=sizes, all_layers=True)
    return model, got, want


def test_every_layout_the_shared_fixtures_miss_has_a_fixture():
    """One per official instance layout without a shared fixture (the table in
    ``tests/fixtures/maskdino_r50_5s_high2low_tiny/README.md``)."""
    assert set(FIXTURES) >= {
        "maskdino_r50_5s_high2low_tiny",         # 3s_dowsample2
        "maskdino_r50_4s_low2high_tiny",         # 4s_dowsample1_2048
        "maskdino_r50_4s_low2high_bitmask_tiny",  # 3s_dowsample1_2048_bitmask
        "maskdino_swin_5s_low2high_nobox_tiny",  # swin/..._no_maskEnhance
    }


def test_backbone_and_encoder_levels_match(official_run):
    _, got, want = official_run
    for stage, tensor in want["backbone"].items():
        close(got.outputs["backbone"][stage], tensor, f"backbone {stage}")
    encoded, official = got.outputs["encoder"], want["encoder"]
    assert torch.equal(encoded["spatial_shapes"], official["spatial_shapes"])
    assert torch.equal(encoded["level_start_index"], official["level_start_index"])
    close(encoded["memory"], want["encoder_memory"], "encoder memory", ENCODER_ATOL)
    for level, (g, w) in enumerate(zip(encoded["multi_scale_features"],
                                       official["multi_scale_features"], strict=True)):
        close(g, w, f"encoder level {level}", ENCODER_ATOL)
    close(encoded["mask_features"], official["mask_features"], "mask features", ENCODER_ATOL)


def test_selection_and_decoder_input_match(official_run):
    _, got, want = official_run
    outputs, decoder_input, two_stage = got.outputs, want["decoder_input"], want["two_stage"]
    close(outputs["memory"], decoder_input["memory"], "decoder memory")
    assert torch.equal(outputs["spatial_shapes"], decoder_input["spatial_shapes"])
    assert torch.equal(outputs["level_start_index"], decoder_input["level_start_index"])
    selection = outputs["selection"]
    assert torch.equal(selection["proposals"].isinf(), two_stage["output_proposals"].isinf())
    finite = two_stage["output_proposals"].isfinite()
    close(selection["proposals"][finite], two_stage["output_proposals"][finite], "proposals")
    close(selection["class_logits"], two_stage["enc_class_logits"], "encoder class logits")
    close(selection["box_deltas"], two_stage["enc_bbox_delta"], "encoder box deltas")
    assert torch.equal(selection["indices"], want["topk_indices"])
    close(outputs["tgt"], decoder_input["tgt"], "decoder queries")
    close(outputs["refpoints_unsigmoid"], decoder_input["refpoints_unsigmoid"], "decoder boxes")


def test_every_layer_matches(official_run):
    _, got, want = official_run
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        close(got.outputs["interm"][key], want["interm"][key], f"interm {key}")
    assert len(got.layers) == len(want["layers"])
    for index, (g, w) in enumerate(zip(got.layers, want["layers"], strict=True)):
        for key in ("pred_logits", "pred_boxes", "pred_masks"):
            close(g[key], w[key], f"layer {index} {key}")
    for index, (g, w) in enumerate(zip(got.outputs["references"], want["decoder_references"],
                                       strict=True)):
        close(g, w, f"decoder references {index}")


def test_instances_match(official_run):
    model, got, want = official_run
    assert_instances_match(got.instances, want["instances"], model.config.predictor.num_classes,
                           ATOL)
