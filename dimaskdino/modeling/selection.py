"""Two-stage query selection: score every encoder token, keep the top-k as queries.

:func:`select_top_k` is the paper's selection operation ("best class logit -> top-k ->
gather"), shared by this first selection, DI's further selections and BATO's choice of
guiding tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dimaskdino.modeling.box_ops import box_dtype
from dimaskdino.modeling.heads import PredictionHeads
from dimaskdino.modeling.levels import pixel_centres
from dimaskdino.modeling.outputs import StageOutput


def select_top_k(class_logits: torch.Tensor, k: int, *tensors: torch.Tensor
                 ) -> tuple[torch.Tensor, ...]:
    """Rank tokens by their best class logit and keep the ``k`` best.

    Args:
        class_logits: ``(B, N, K)``.
        tensors: ``(B, N, D)`` each, any ``D``: per-token values to gather.

    Returns:
        ``indices (B, k)`` (descending score), then each of ``tensors`` at them,
        ``(B, k, D)``.
    """
    indices = class_logits.max(-1).values.topk(k, dim=1).indices
    gather = indices[..., None]
    return indices, *(t.gather(1, gather.expand(-1, -1, t.shape[-1])) for t in tensors)


def encoder_proposals(memory: torch.Tensor, spatial_shapes: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """An anchor box per token and the memory with invalid anchors zeroed.

    Token ``(i, j)`` of level ``l`` (decoder order, coarsest first) gets the box centred at
    its pixel, ``((j + 0.5) / W, (i + 0.5) / H)``, of side ``0.05 * 2**l``. Boxes with a
    coordinate outside ``(0.01, 0.99)`` are invalid: their proposal is ``inf`` and their
    memory row is zeroed.

    Args:
        memory: ``(B, S, C)``; spatial_shapes: ``(L, 2)``.

    Returns:
        ``memory (B, S, C)`` and ``proposals (B, S, 4)`` in inverse-sigmoid space.
    """
    shapes = spatial_shapes.tolist()
    dtype = box_dtype(memory.dtype)  # fp32 proposals under bf16 autocast
    centres = pixel_centres(shapes, dtype, memory.device)
    sides = torch.cat([torch.full((h * w, 2), 0.05 * 2.0**level, dtype=dtype,
                                  device=memory.device)
                       for level, (h, w) in enumerate(shapes)])
    proposals = torch.cat((centres, sides), dim=-1)[None].expand(memory.shape[0], -1, -1)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
    proposals = torch.log(proposals / (1 - proposals)).masked_fill(~valid, float("inf"))
    return memory.masked_fill(~valid, 0.0), proposals


@dataclass
class Selection(StageOutput):
    """:class:`QuerySelection`'s outputs.

    For every token: ``output_memory (B, S, C)``, ``proposals (B, S, 4)`` (inverse-sigmoid,
    ``inf`` where invalid), ``class_logits (B, S, K)``, ``box_deltas (B, S, 4)``; for the
    selected ones: ``indices (B, k)`` (descending score), ``content (B, k, C)`` and
    ``boxes_unsigmoid (B, k, 4)`` (proposal + delta).
    """

    output_memory: torch.Tensor
    proposals: torch.Tensor
    class_logits: torch.Tensor
    box_deltas: torch.Tensor
    indices: torch.Tensor
    content: torch.Tensor
    boxes_unsigmoid: torch.Tensor


class QuerySelection(nn.Module):
    """Encoder output head + top-k selection by the best class logit (official names)."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.enc_output = nn.Linear(hidden_dim, hidden_dim)
        self.enc_output_norm = nn.LayerNorm(hidden_dim)

    def forward(self, memory: torch.Tensor, spatial_shapes: torch.Tensor, k: int,
                heads: PredictionHeads) -> Selection:
        """Score all tokens of ``memory (B, S, C)`` (decoder level order) and select ``k``."""
        output_memory, proposals = encoder_proposals(memory, spatial_shapes)
        output_memory = self.enc_output_norm(self.enc_output(output_memory))
        class_logits = heads.class_embed(output_memory)
        box_deltas = heads.bbox_embed(output_memory)
        indices, content, boxes_unsigmoid = select_top_k(class_logits, k, output_memory,
                                                         box_deltas + proposals)
        return Selection(output_memory, proposals, class_logits, box_deltas, indices, content,
                         boxes_unsigmoid)
