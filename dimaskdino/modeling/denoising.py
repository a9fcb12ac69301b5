"""Denoising training queries (DN-DETR / DINO, MaskDINO's "seg" mode).

In training, noised copies of the ground-truth boxes and labels are fed to the decoder
beside the matching queries and must be reconstructed (their losses come with the
criterion). Ground truths are repeated in ``groups = budget // max objects per image``
groups, each ``group_size = max objects`` queries long (images with fewer objects leave
padding). An attention mask keeps the matching queries from seeing any denoising query
and each group from seeing the other groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dimaskdino.modeling.box_ops import inverse_sigmoid


@dataclass
class DenoisingQueries:
    """Denoising queries of a batch.

    ``content (B, P, C)``, ``boxes_unsigmoid (B, P, 4)`` with ``P = groups * group_size``;
    ``attn_mask (P + Q, P + Q)`` bool, True = may not attend; ``batch_index``,
    ``query_index`` ``(groups * N,)``: where each noised object sits; ``labels``,
    ``boxes`` ``(groups * N,)`` / ``(groups * N, 4)``: the clean targets to reconstruct.
    """

    content: torch.Tensor
    boxes_unsigmoid: torch.Tensor
    attn_mask: torch.Tensor
    groups: int
    group_size: int
    batch_index: torch.Tensor
    query_index: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor

    @property
    def size(self) -> int:
        return self.groups * self.group_size


def attention_mask(groups: int, group_size: int, num_queries: int,
                   device: torch.device | None = None) -> torch.Tensor:
    """``(P + Q, P + Q)`` bool mask: matching queries cannot see denoising ones, and each
    denoising group sees only itself and the matching queries."""
    pad = groups * group_size
    mask = torch.zeros(pad + num_queries, pad + num_queries, dtype=torch.bool, device=device)
    mask[pad:, :pad] = True
    group = torch.arange(pad, device=device) // group_size
    mask[:pad, :pad] = group[:, None] != group[None, :]
    return mask


def make_denoising_queries(targets: list[dict[str, torch.Tensor]], label_enc: nn.Embedding,
                           num_queries: int, budget: int = 100, noise_scale: float = 0.4,
                           generator: torch.Generator | None = None
                           ) -> DenoisingQueries | None:
    """Noised ground-truth queries, or None when no image has an object.

    Args:
        targets: per image ``labels (n,)`` int64, ``boxes (n, 4)`` normalized cxcywh and
            optionally ``generator``, the image's source of noise.
        label_enc: embedding of class ids into query content.
        num_queries: matching queries the decoder also gets.
        budget: denoising queries per image at most (``DN_NUM``).
        noise_scale: a label is replaced by a random class with probability
            ``noise_scale / 2``; box centres move by up to ``noise_scale`` half sides and
            sides change by up to ``noise_scale`` of themselves, uniformly.
    """
    counts = [len(t["labels"]) for t in targets]
    group_size = max(counts, default=0)
    if group_size == 0 or budget // group_size == 0:
        return None
    groups = budget // group_size
    device = label_enc.weight.device
    labels = torch.cat([t["labels"] for t in targets]).to(device).repeat(groups)
    boxes = torch.cat([t["boxes"] for t in targets]).to(device).repeat(groups, 1)
    batch_index = torch.cat([torch.full((n,), i, device=device) for i, n in
                             enumerate(counts)]).repeat(groups)
    slot = torch.cat([torch.arange(n, device=device) for n in counts])
    query_index = torch.cat([slot + g * group_size for g in range(groups)])

    # noise drawn image by image from the image's own generator (``target["generator"]``,
    # else ``generator``), so an image's noise does not depend on its batch-mates
    flips, flip_labels, box_noise = [], [], []
    for t, n in zip(targets, counts):
        source = t.get("generator", generator)
        flips.append(torch.rand(groups, n, generator=source))
        flip_labels.append(torch.rand(groups, n, generator=source))
        box_noise.append(torch.rand(groups, n, 4, generator=source))

    def group_major(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts, dim=1).flatten(0, 1).to(device)

    noisy_labels, noisy_boxes = labels, boxes
    if noise_scale > 0:
        flip = group_major(flips) < noise_scale * 0.5
        random_labels = (group_major(flip_labels) * label_enc.num_embeddings).long()
        noisy_labels = torch.where(flip, random_labels, labels)
        spread = torch.cat((boxes[:, 2:] / 2, boxes[:, 2:]), dim=1)
        noisy_boxes = (boxes + (group_major(box_noise).to(boxes) * 2 - 1) * spread
                       * noise_scale).clamp(0.0, 1.0)
    batch = len(targets)
    dim = label_enc.embedding_dim
    pad = groups * group_size
    content = torch.zeros(batch, pad, dim, dtype=label_enc.weight.dtype, device=device)
    boxes_unsigmoid = torch.zeros(batch, pad, 4, dtype=label_enc.weight.dtype, device=device)
    content[batch_index, query_index] = label_enc(noisy_labels)
    boxes_unsigmoid[batch_index, query_index] = inverse_sigmoid(noisy_boxes).to(
        boxes_unsigmoid.dtype)
    return DenoisingQueries(content, boxes_unsigmoid,
                            attention_mask(groups, group_size, num_queries, device),
                            groups, group_size, batch_index, query_index, labels, boxes)
