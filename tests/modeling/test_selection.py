"""Query selection against a brute-force ranking of the tokens."""

from __future__ import annotations

import torch

from dimaskdino.modeling.heads import PredictionHeads
from dimaskdino.modeling.levels import flatten_levels
from dimaskdino.modeling.selection import QuerySelection, encoder_proposals, select_top_k


def brute_force_top_k(class_logits: torch.Tensor, k: int) -> list[list[int]]:
    """Per image, the ``k`` tokens of largest best-class logit, best first (a sort in
    Python)."""
    return [sorted(range(logits.shape[0]), key=lambda i: -max(logits[i].tolist()))[:k]
            for logits in class_logits]


def test_select_top_k_ranks_by_the_best_class_logit_and_gathers_each_tensor():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, 5, generator=g, dtype=torch.float64)
    features = torch.randn(3, 40, 7, generator=g, dtype=torch.float64)
    boxes = torch.rand(3, 40, 4, generator=g, dtype=torch.float64)
    indices, got_features, got_boxes = select_top_k(logits, 6, features, boxes)
    want = brute_force_top_k(logits, 6)
    assert indices.tolist() == want
    for image, chosen in enumerate(want):
        assert torch.equal(got_features[image], features[image, chosen])
        assert torch.equal(got_boxes[image], boxes[image, chosen])


def test_query_selection_keeps_the_best_scored_tokens_with_their_refined_proposals():
    torch.manual_seed(0)
    dim, classes, k = 32, 6, 10
    selection, heads = QuerySelection(dim).double(), PredictionHeads(dim, classes, dim).double()
    torch.nn.init.normal_(heads.bbox_embed.layers[-1].weight, std=0.1)  # non-zero deltas
    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(2, dim, s, s, generator=g, dtype=torch.float64) for s in (2, 4, 8)]
    memory, spatial_shapes, _ = flatten_levels(maps)
    with torch.no_grad():
        got = selection(memory, spatial_shapes, k, heads)
        # the same scores by hand: encoder head on the memory with invalid anchors zeroed
        zeroed, proposals = encoder_proposals(memory, spatial_shapes)
        output = selection.enc_output_norm(selection.enc_output(zeroed))
        logits = heads.class_embed(output)
        boxes = heads.bbox_embed(output) + proposals
    want = brute_force_top_k(logits, k)
    assert got.indices.tolist() == want
    for image, chosen in enumerate(want):
        assert torch.equal(got.content[image], output[image, chosen])
        assert torch.equal(got.boxes_unsigmoid[image], boxes[image, chosen])
