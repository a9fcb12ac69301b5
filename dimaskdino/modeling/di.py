"""DI, the De-Imbalance module of DI-MaskDINO (paper §3.2; the official ``oldm``).

After the first selection keeps the top-k1 encoder tokens (boxes from their masks), DI
lets the tokens interact: each token-interaction layer is self-attention among the k1
tokens (query/key = token + MLP(sine embedding of its box), value = token) and an FFN,
post-norm, after which each token's box is refined from its un-normalized output. A second
selection then keeps the k2 tokens with the best class logit of the normalized last
output: their un-normalized features and refined boxes are the decoder's queries. The
interaction outputs are supervised with class and box losses (auxiliary predictions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dimaskdino.modeling.box_ops import inverse_sigmoid
from dimaskdino.modeling.heads import MLP, PredictionHeads
from dimaskdino.modeling.outputs import StageOutput
from dimaskdino.modeling.position import sine_box_embedding
from dimaskdino.modeling.post_norm import PostNormLayer
from dimaskdino.modeling.selection import select_top_k


class TokenInteractionLayer(PostNormLayer):
    """Post-norm self-attention (``norm1``) + FFN (``norm2``) among the selected tokens."""

    def __init__(self, dim: int, dim_feedforward: int, dropout: float, heads: int = 8) -> None:
        super().__init__(dim, dim_feedforward, dropout, {"self_attn": nn.MultiheadAttention(
            dim, heads, dropout=dropout, batch_first=True)})

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``tokens``, ``pos`` ``(B, K, C)`` -> ``(B, K, C)``."""
        q = tokens + pos
        attended = self.self_attn(q, q, tokens, need_weights=False)[0]
        return self.ffn(self.add_norm(tokens, attended, self.norm1))


@dataclass
class DIOutput(StageOutput):
    """:class:`DeImbalance`'s outputs.

    * ``raw``, ``normed``, ``boxes``: per interaction layer, its output ``(B, K1, C)``
      before and after ``norm`` and the refined boxes ``(B, K1, 4)`` (sigmoid space);
    * ``aux``: per layer ``pred_logits (B, K1, K)`` (class head on the normed output,
      through ``decoder_norm`` too, as officially) and ``pred_boxes`` (the box head on the
      normed output applied on top of the already refined box, as officially), the
      criterion's auxiliary predictions;
    * ``indices (B, keep)``, ``content (B, keep, C)`` (un-normalized) and ``selected_boxes
      (B, keep, 4)`` (sigmoid space) of the second selection, by the class head on the
      last normed output.
    """

    raw: list[torch.Tensor]
    normed: list[torch.Tensor]
    boxes: list[torch.Tensor]
    aux: list[dict[str, torch.Tensor]]
    indices: torch.Tensor
    content: torch.Tensor
    selected_boxes: torch.Tensor


class DeImbalance(nn.Module):
    """Token interaction over the first-selected tokens, then the second selection."""

    def __init__(self, dim: int, dim_feedforward: int, num_layers: int, dropout: float = 0.0,
                 heads: int = 8) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TokenInteractionLayer(dim, dim_feedforward, dropout, heads)
            for _ in range(num_layers))
        self.ref_point_head = MLP(2 * dim, dim, dim, 2)
        self.norm = nn.LayerNorm(dim)
        self.bbox_embed = MLP(dim, dim, 4, 3)
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    def forward(self, tokens: torch.Tensor, boxes_unsigmoid: torch.Tensor, keep: int,
                heads: PredictionHeads) -> DIOutput:
        """Interact ``tokens (B, K1, C)`` with boxes ``(B, K1, 4)`` (inverse-sigmoid), keep
        ``keep`` of them (see :class:`DIOutput`)."""
        output, boxes = tokens, boxes_unsigmoid.sigmoid()
        dim = tokens.shape[-1]
        raw, normed, refined, aux = [], [], [], []
        for layer in self.layers:
            output = layer(output, self.ref_point_head(sine_box_embedding(boxes, dim)))
            updated = (self.bbox_embed(output) + inverse_sigmoid(boxes)).sigmoid()
            normalized = self.norm(output)
            raw.append(output)
            normed.append(normalized)
            refined.append(updated)
            aux.append({
                "pred_logits": heads.class_embed(heads.decoder_norm(normalized)),
                "pred_boxes": (self.bbox_embed(normalized) + inverse_sigmoid(updated)).sigmoid(),
            })
            boxes = updated.detach()
        indices, content, selected_boxes = select_top_k(heads.class_embed(normed[-1]), keep,
                                                        output, refined[-1])
        return DIOutput(raw, normed, refined, aux, indices, content, selected_boxes)
