"""The MaskDINO predictor against the official implementation's decoder-side outputs."""

from __future__ import annotations

import torch
import yaml

from dimaskdino.checkpoint import convert_official_state_dict
from dimaskdino.modeling.predictor import MaskDINOPredictor, PredictorConfig

TOLERANCE = 1e-9


def close(got, want, what):
    torch.testing.assert_close(got, want, rtol=0, atol=TOLERANCE, msg=what)


def test_maskdino_predictor_reproduces_official_outputs(golden_fixtures):
    folder = golden_fixtures / "maskdino_tiny"
    config = yaml.safe_load((folder / "config.yaml").read_text())
    predictor = MaskDINOPredictor(PredictorConfig.from_official(config["MODEL"]))
    state = convert_official_state_dict(torch.load(folder / "state_dict.pt", weights_only=True))
    predictor.load_state_dict({k.removeprefix("predictor."): v for k, v in state.items()
                               if k.startswith("predictor.")}, strict=True)
    predictor = predictor.double().eval()
    want = torch.load(folder / "outputs.pt", weights_only=True)
    with torch.no_grad():
        got = predictor(want["encoder"]["multi_scale_features"],
                        want["encoder"]["mask_features"])

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
    assert torch.equal(selection["indices"], want["topk_indices"])
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        close(got["interm"][key], want["interm"][key], f"interm {key}")
    close(got["refpoints_unsigmoid"], want["mask2box_init"]["refpoints_unsigmoid"], "mask2box")
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
