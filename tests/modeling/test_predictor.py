"""The predictor against the official implementations' decoder-side outputs, stage by stage."""

from __future__ import annotations

import pytest
import torch
import yaml

from dimaskdino.checkpoint import convert_official_state_dict
from dimaskdino.modeling.predictor import DIMaskDINOPredictor, PredictorConfig
from tests.modeling.encoded import encoded

TOLERANCE = 1e-9


def close(got, want, what):
    torch.testing.assert_close(got, want, rtol=0, atol=TOLERANCE, msg=what)


def run_official_predictor(folder):
    config = yaml.safe_load((folder / "config.yaml").read_text())
    # float64 before loading: the weights must not round to float32
    predictor = DIMaskDINOPredictor(PredictorConfig.from_official(config["MODEL"])).double()
    state = convert_official_state_dict(torch.load(folder / "state_dict.pt", weights_only=True))
    predictor.load_state_dict({k.removeprefix("predictor."): v for k, v in state.items()
                               if k.startswith("predictor.")}, strict=True)
    predictor = predictor.eval()
    want = torch.load(folder / "outputs.pt", weights_only=True)
    with torch.no_grad():
        got = predictor(encoded(want["encoder"]["multi_scale_features"],
                                want["encoder"]["mask_features"]))
    return got, want


def check_common_stages(got, want):
    """Selection, interm, decoder input, every layer, decoder internals."""
    decoder_input, two_stage = want["decoder_input"], want["two_stage"]
    close(got["memory"], decoder_input["memory"], "decoder memory")
    assert torch.equal(got["spatial_shapes"], decoder_input["spatial_shapes"])
    assert torch.equal(got["level_start_index"], decoder_input["level_start_index"])
    selection = got["selection"]
    close(selection["output_memory"], two_stage["output_memory"], "output_memory")
    assert torch.equal(selection["proposals"].isinf(), two_stage["output_proposals"].isinf())
    finite = two_stage["output_proposals"].isfinite()
    close(selection["proposals"][finite], two_stage["output_proposals"][finite], "proposals")
    close(selection["class_logits"], two_stage["enc_class_logits"], "encoder class logits")
    close(selection["box_deltas"], two_stage["enc_bbox_delta"], "encoder box deltas")
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        close(got["interm"][key], want["interm"][key], f"interm {key}")
    close(got["initial_boxes_unsigmoid"], want["mask2box_init"]["refpoints_unsigmoid"],
          "mask2box")
    close(got["refpoints_unsigmoid"], decoder_input["refpoints_unsigmoid"], "decoder boxes")
    close(got["tgt"], decoder_input["tgt"], "decoder queries")
    assert len(got["layers"]) == len(want["layers"]) == 4
    for index, (g, w) in enumerate(zip(got["layers"], want["layers"], strict=True)):
        for key in ("pred_logits", "pred_boxes", "pred_masks"):
            close(g[key], w[key], f"layer {index} {key}")
    for index, (g, w) in enumerate(zip(got["hidden"], want["decoder_hidden"], strict=True)):
        close(g, w, f"decoder hidden {index}")
    for index, (g, w) in enumerate(zip(got["references"], want["decoder_references"],
                                       strict=True)):
        close(g, w, f"decoder reference {index}")


@pytest.mark.parametrize("name", ["maskdino_tiny", "maskdino_r50_3s_tiny"])
def test_maskdino_predictor_reproduces_official_outputs(name, golden_fixtures):
    got, want = run_official_predictor(golden_fixtures / name)
    assert "di" not in got and "bato" not in got
    assert torch.equal(got["selection"]["indices"], want["topk_indices"])
    check_common_stages(got, want)


def test_dimaskdino_predictor_reproduces_official_outputs(golden_fixtures):
    got, want = run_official_predictor(golden_fixtures / "dimaskdino_tiny")
    assert torch.equal(got["selection"]["indices"], want["first_select_topk_indices"])
    close(got["selection"]["content"], want["mask2box_init"]["tgt"], "first-selected tokens")
    di, ti = got["di"], want["ti"]
    for index in range(len(ti["layer_raw_output"])):
        close(di["raw"][index], ti["layer_raw_output"][index], f"TI {index} raw")
        close(di["normed"][index], ti["layer_normed_output"][index], f"TI {index} normed")
        close(di["boxes"][index], ti["layer_ref_points"][index], f"TI {index} boxes")
        for key in ("pred_logits", "pred_boxes"):
            close(di["aux"][index][key], ti["oldm_outputs"][index][key], f"TI {index} {key}")
    assert torch.equal(di["indices"], want["second_select_topk_indices"])
    close(di["content"], ti["selected_tgt"], "second-selected tokens")
    close(di["selected_boxes"], ti["selected_ref_points"], "second-selected boxes")
    bato = got["bato"]
    assert torch.equal(bato["indices"], want["guiding_topk_indices"])
    close(bato["memory"], want["guided_memory"], "guided memory")
    close(bato["mask_features"], want["updated_mask_features"], "updated mask features")
    check_common_stages(got, want)
