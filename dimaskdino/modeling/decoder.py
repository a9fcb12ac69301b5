"""The deformable decoder: self-attention, multi-scale deformable cross-attention, FFN,
with iterative box refinement."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dimaskdino.modeling.box_ops import inverse_sigmoid
from dimaskdino.modeling.heads import MLP, PredictionHeads
from dimaskdino.modeling.position import sine_box_embedding
from dimaskdino.modeling.post_norm import PostNormLayer
from dimaskdino.ops import MSDeformAttn


class DecoderLayer(PostNormLayer):
    """Post-norm: self-attention (``norm2``), deformable cross-attention (``norm1``), FFN
    (``norm3``); the official parameter names."""

    def __init__(self, dim: int, dim_feedforward: int, dropout: float, levels: int,
                 heads: int = 8, points: int = 4) -> None:
        super().__init__(dim, dim_feedforward, dropout, {
            "cross_attn": MSDeformAttn(dim, levels, heads, points),
            "self_attn": nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)})

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor,
                reference_points: torch.Tensor, memory: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                self_attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``tgt``, ``query_pos`` ``(B, Q, C)``; ``reference_points`` ``(B, Q, L, 4)``;
        ``memory`` ``(B, S, C)``; ``self_attn_mask`` ``(Q, Q)`` bool, True = blocked.
        Returns ``(B, Q, C)``."""
        q = tgt + query_pos
        attended = self.self_attn(q, q, tgt, attn_mask=self_attn_mask, need_weights=False)[0]
        tgt = self.add_norm(tgt, attended, self.norm2)
        attended = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes,
                                   level_start_index)
        return self.ffn(self.add_norm(tgt, attended, self.norm1))


@dataclass
class DecoderOutput:
    """What a run of decoder layers gives: ``output (B, Q, C)`` the last layer's raw output
    (the next layer's input), ``hidden`` per layer ``decoder_norm(output)`` ``(B, Q, C)``
    and ``references``: one box more than layers, ``(B, Q, 4)`` in sigmoid space, the input
    boxes first, entry ``l`` the boxes handed to the run's layer ``l + 1``."""

    output: torch.Tensor
    hidden: list[torch.Tensor]
    references: list[torch.Tensor]

    def then(self, later: DecoderOutput) -> DecoderOutput:
        """This run followed by ``later``, a run that started from its output and last
        (detached) boxes."""
        return DecoderOutput(later.output, self.hidden + later.hidden,
                             self.references + later.references[1:])


class DeformableDecoder(nn.Module):
    """Decoder layers with box-conditioned query positions and iterative box refinement."""

    def __init__(self, dim: int, dim_feedforward: int, num_layers: int, levels: int,
                 dropout: float = 0.0, heads: int = 8, points: int = 4) -> None:
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList(
            DecoderLayer(dim, dim_feedforward, dropout, levels, heads, points)
            for _ in range(num_layers))
        self.ref_point_head = MLP(2 * dim, dim, dim, 2)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for layer in self.layers:
            layer.cross_attn.reset_parameters()

    def query_position(self, boxes: torch.Tensor) -> torch.Tensor:
        """The position embedding of queries at ``boxes (B, Q, 4)`` (sigmoid space):
        ``ref_point_head`` of their sine embedding, ``(B, Q, C)``."""
        return self.ref_point_head(sine_box_embedding(boxes, self.dim))

    def forward(self, tgt: torch.Tensor, boxes: torch.Tensor, memory: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                heads: PredictionHeads, self_attn_mask: torch.Tensor | None = None,
                layers: slice = slice(None)) -> DecoderOutput:
        """Run the decoder's ``layers`` (all by default) on queries ``tgt (B, Q, C)`` at
        ``boxes (B, Q, 4)`` (sigmoid space).

        Each layer's queries take their position from their current box
        (:meth:`query_position`) and sample all levels around it. After the layer the box
        becomes ``sigmoid(bbox_embed(raw output) + inverse_sigmoid(box))``, detached for
        the next layer. A run of layers ``a:b`` followed by one of ``b:`` from its
        ``output`` and ``references[-1].detach()`` is a run of ``a:``
        (:meth:`DecoderOutput.then`), which lets BATO change the memory in between.
        """
        output = tgt
        levels = spatial_shapes.shape[0]
        hidden, references = [], [boxes]
        for layer in self.layers[layers]:
            reference_points = boxes[:, :, None].expand(-1, -1, levels, -1)
            output = layer(output, self.query_position(boxes), reference_points, memory,
                           spatial_shapes, level_start_index, self_attn_mask)
            boxes_new = (heads.bbox_embed(output) + inverse_sigmoid(boxes)).sigmoid()
            references.append(boxes_new)
            boxes = boxes_new.detach()
            hidden.append(heads.decoder_norm(output))
        return DecoderOutput(output, hidden, references)
