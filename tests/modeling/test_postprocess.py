"""Instance inference against a direct, pair-by-pair computation."""

import pytest
import torch
import torch.nn.functional as F

from dimaskdino.modeling.postprocess import stacked_instance_inference
from dimaskdino.ops.masks import binary_masks_and_scores


def direct_inference(logits, mask_logits, boxes, padded, image, output, topk):
    """Every (query, class) pair on its own: score all pairs, keep the top ``topk``, resize
    each kept pair's mask by itself and score it."""
    queries, classes = logits.shape
    pairs = sorted(((logits[q, c].sigmoid().item(), q, c)
                    for q in range(queries) for c in range(classes)), reverse=True)[:topk]
    found = {"scores": [], "pred_classes": [], "pred_masks": [], "pred_boxes": []}
    for probability, query, label in pairs:
        mask = F.interpolate(mask_logits[query][None, None], size=padded, mode="bilinear")
        mask = F.interpolate(mask[..., : image[0], : image[1]], size=output, mode="bilinear")[0, 0]
        binary = mask > 0
        mask_score = (mask.sigmoid() * binary).sum() / (binary.sum() + 1e-6)
        cx, cy, w, h = boxes[query].tolist()
        sx, sy = padded[1] / image[1] * output[1], padded[0] / image[0] * output[0]
        found["scores"].append(probability * mask_score.item())
        found["pred_classes"].append(label)
        found["pred_masks"].append(binary)
        found["pred_boxes"].append([(cx - w / 2) * sx, (cy - h / 2) * sy,
                                    (cx + w / 2) * sx, (cy + h / 2) * sy])
    return found


@pytest.mark.parametrize("output", [(30, 37), (45, 50)])
def test_stacked_inference_equals_pair_by_pair(output):
    # 5 queries x 4 classes, top 12 pairs: most kept queries carry several classes
    torch.manual_seed(0)
    stages, queries, classes, padded, image, topk = 3, 5, 4, (32, 40), (30, 37), 12
    logits = torch.randn(stages, queries, classes, dtype=torch.float64)
    mask_logits = torch.randn(stages, queries, 8, 10, dtype=torch.float64)
    boxes = torch.rand(stages, queries, 4, dtype=torch.float64)
    found = stacked_instance_inference(logits, mask_logits, boxes, padded, image, output, topk)
    assert len(found) == stages
    for s, got in enumerate(found):
        want = direct_inference(logits[s], mask_logits[s], boxes[s], padded, image, output,
                                topk)
        assert got["pred_classes"].tolist() == want["pred_classes"]
        assert torch.equal(got["pred_masks"], torch.stack(want["pred_masks"]))
        torch.testing.assert_close(got["scores"], torch.tensor(want["scores"],
                                                               dtype=torch.float64))
        torch.testing.assert_close(got["pred_boxes"], torch.tensor(want["pred_boxes"],
                                                                   dtype=torch.float64))
        [single] = stacked_instance_inference(logits[s:s + 1], mask_logits[s:s + 1],
                                              boxes[s:s + 1], padded, image, output, topk)
        for key, value in single.items():
            assert torch.equal(value, got[key]), key


def test_mask_chunks_do_not_change_the_result():
    torch.manual_seed(1)
    mask_logits = torch.randn(7, 8, 10)
    whole = binary_masks_and_scores(mask_logits, (32, 40), (30, 37), (45, 50))
    for elements in (1, 45 * 50 * 2, 45 * 50 * 3 + 1):
        chunked = binary_masks_and_scores(mask_logits, (32, 40), (30, 37), (45, 50),
                                           chunk_elements=elements)
        assert torch.equal(chunked[0], whole[0])
        assert torch.equal(chunked[1], whole[1])


def test_no_queries_gives_empty_instances():
    found = stacked_instance_inference(torch.zeros(2, 0, 3), torch.zeros(2, 0, 8, 10),
                                       torch.zeros(2, 0, 4), (32, 40), (30, 37), (30, 37))
    assert [f["pred_masks"].shape for f in found] == [(0, 30, 37)] * 2
