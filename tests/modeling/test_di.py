"""DI (paper §3.2): token interaction is equivariant to token order; the second selection
is a top-k over the class head."""

from __future__ import annotations

import torch

from dimaskdino.modeling.box_ops import inverse_sigmoid
from dimaskdino.modeling.di import DeImbalance
from dimaskdino.modeling.heads import PredictionHeads
from tests.modeling.test_selection import brute_force_top_k

DIM, CLASSES = 32, 5


def build() -> tuple[DeImbalance, PredictionHeads]:
    torch.manual_seed(0)
    di = DeImbalance(DIM, 64, num_layers=2, heads=4).double().eval()
    heads = PredictionHeads(DIM, CLASSES, DIM).double()
    for box_head in (di.bbox_embed, heads.bbox_embed):  # zero-initialised: refine for real
        torch.nn.init.normal_(box_head.layers[-1].weight, std=0.1)
    # the layers end in a LayerNorm: an identity ``norm`` would make normed == raw
    torch.nn.init.normal_(di.norm.weight)
    torch.nn.init.normal_(di.norm.bias)
    return di, heads


def tokens_and_boxes(count: int = 12):
    g = torch.Generator().manual_seed(2)
    tokens = torch.randn(2, count, DIM, generator=g, dtype=torch.float64)
    boxes = torch.rand(2, count, 4, generator=g, dtype=torch.float64) * 0.5 + 0.2
    return tokens, inverse_sigmoid(boxes)


def test_token_interaction_is_equivariant_to_token_order():
    di, heads = build()
    tokens, boxes = tokens_and_boxes()
    order = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = di(tokens, boxes, 5, heads)
        shuffled = di(tokens[:, order], boxes[:, order], 5, heads)
    for layer in range(2):
        for name in ("raw", "normed", "boxes"):
            torch.testing.assert_close(getattr(shuffled, name)[layer],
                                       getattr(plain, name)[layer][:, order],
                                       rtol=0, atol=1e-12, msg=f"{name} {layer}")
        for key in ("pred_logits", "pred_boxes"):
            torch.testing.assert_close(shuffled.aux[layer][key],
                                       plain.aux[layer][key][:, order], rtol=0, atol=1e-12)
    # the second selection keeps the same tokens, in the same order of score
    assert torch.equal(order[shuffled.indices], plain.indices)
    torch.testing.assert_close(shuffled.content, plain.content, rtol=0, atol=1e-12)
    torch.testing.assert_close(shuffled.selected_boxes, plain.selected_boxes, rtol=0,
                               atol=1e-12)


def test_second_selection_is_a_top_k_over_the_class_head_of_the_last_normed_output():
    di, heads = build()
    tokens, boxes = tokens_and_boxes()
    with torch.no_grad():
        out = di(tokens, boxes, 5, heads)
        scores = heads.class_embed(out.normed[-1])
    want = brute_force_top_k(scores, 5)
    assert out.indices.tolist() == want
    for image, chosen in enumerate(want):
        # un-normalized features and the refined boxes of the kept tokens
        assert torch.equal(out.content[image], out.raw[-1][image, chosen])
        assert torch.equal(out.selected_boxes[image], out.boxes[-1][image, chosen])
    assert out.content.shape == (2, 5, DIM) and out.selected_boxes.shape == (2, 5, 4)
