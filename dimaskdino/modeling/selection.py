"""Two-stage query selection: score every encoder token, keep the top-k as queries."""

from __future__ import annotations

import torch
from torch import nn

from dimaskdino.modeling.box_ops import box_dtype
from dimaskdino.modeling.heads import PredictionHeads
from dimaskdino.modeling.levels import pixel_centres


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


class QuerySelection(nn.Module):
    """Encoder output head + top-k selection by the best class logit (official names)."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.enc_output = nn.Linear(hidden_dim, hidden_dim)
        self.enc_output_norm = nn.LayerNorm(hidden_dim)

    def forward(self, memory: torch.Tensor, spatial_shapes: torch.Tensor, k: int,
                heads: PredictionHeads) -> dict[str, torch.Tensor]:
        """Score all tokens of ``memory (B, S, C)`` and select ``k``.

        Returns a dict: ``output_memory (B, S, C)``, ``proposals (B, S, 4)``,
        ``class_logits (B, S, K)``, ``box_deltas (B, S, 4)`` for every token; ``indices
        (B, k)`` (descending score), ``content (B, k, C)`` and ``boxes_unsigmoid (B, k, 4)``
        of the selected ones.
        """
        output_memory, proposals = encoder_proposals(memory, spatial_shapes)
        output_memory = self.enc_output_norm(self.enc_output(output_memory))
        class_logits = heads.class_embed(output_memory)
        box_deltas = heads.bbox_embed(output_memory)
        indices = class_logits.max(-1).values.topk(k, dim=1).indices
        gather = indices[..., None]
        return {
            "output_memory": output_memory,
            "proposals": proposals,
            "class_logits": class_logits,
            "box_deltas": box_deltas,
            "indices": indices,
            "content": output_memory.gather(1, gather.expand(-1, -1, output_memory.shape[-1])),
            "boxes_unsigmoid": (box_deltas + proposals).gather(1, gather.expand(-1, -1, 4)),
        }
