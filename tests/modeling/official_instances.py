"""The final instances against an official fixture's, pair by pair."""

from __future__ import annotations

import torch


def assert_instances_match(instances: list[dict], official: list[dict], classes: int,
                           atol: float) -> None:
    """Same (query, class) picks and classes, scores and float64 boxes within ``atol``,
    masks of the output size agreeing on >= 99.9 % of pixels. The official top-k is
    unsorted, so both sides are put in (query, class) order."""
    for ours, theirs in zip(instances, official, strict=True):
        flat = ours["query_index"] * classes + ours["pred_classes"]
        order, official_order = flat.argsort(), theirs["flat_topk_indices"].argsort()
        assert torch.equal(flat[order], theirs["flat_topk_indices"][official_order])
        assert torch.equal(ours["pred_classes"][order], theirs["pred_classes"][official_order])
        torch.testing.assert_close(ours["scores"][order], theirs["scores"][official_order],
                                   rtol=0, atol=atol)
        torch.testing.assert_close(ours["pred_boxes"][order],
                                   theirs["pred_boxes_f64"][official_order], rtol=0, atol=atol)
        masks, official_masks = ours["pred_masks"][order], theirs["pred_masks"][official_order] > 0
        assert masks.shape == official_masks.shape
        agreement = (masks == official_masks).double().mean().item()
        assert agreement >= 0.999, agreement
        assert tuple(masks.shape[-2:]) == tuple(theirs["image_size"].tolist())
