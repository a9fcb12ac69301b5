"""BATO, the balance-aware tokens optimization of DI-MaskDINO (paper §3.3).

After decoder layer 0, the queries with the best class logits become guiding tokens: their
mask embeddings (mask guiding tokens) and their position embeddings (box guiding tokens).
The encoder tokens then attend to them (query = token + its sine position, key = mask
embedding + position, value = mask embedding) with an FFN, post-norm; the updated tokens
T_bal are the key/value memory of the remaining decoder layers, and the mask features are
refreshed with their finest level: ``mask_output_conv(mask_features + upsample(T_bal))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dimaskdino.modeling.encoder import conv_gn
from dimaskdino.modeling.heads import PredictionHeads
from dimaskdino.modeling.outputs import StageOutput
from dimaskdino.modeling.post_norm import PostNormLayer
from dimaskdino.modeling.selection import select_top_k


class QueryGuidedFeatureUpdate(PostNormLayer):
    """Cross-attention from the encoder tokens to the guiding tokens (``norm1``), then an
    FFN (``norm2``)."""

    def __init__(self, dim: int, dim_feedforward: int, dropout: float = 0.0,
                 heads: int = 8) -> None:
        super().__init__(dim, dim_feedforward, dropout, {"multihead_attn": nn.MultiheadAttention(
            dim, heads, dropout=dropout, batch_first=True)})
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, tokens: torch.Tensor, token_pos: torch.Tensor, guides: torch.Tensor,
                guide_pos: torch.Tensor) -> torch.Tensor:
        """``tokens``, ``token_pos`` ``(B, S, C)``; ``guides``, ``guide_pos`` ``(B, G, C)``
        -> ``(B, S, C)``."""
        attended = self.multihead_attn(tokens + token_pos, guides + guide_pos, guides,
                                       need_weights=False)[0]
        return self.ffn(self.add_norm(tokens, attended, self.norm1))


@dataclass
class BATOOutput(StageOutput):
    """:class:`BalanceAwareTokens`' outputs: ``indices (B, G)`` of the guiding tokens among
    the candidates, ``memory (B, S, C)`` the guided tokens T_bal, ``mask_features (B, C, H,
    W)`` refreshed from T_bal's finest level."""

    indices: torch.Tensor
    memory: torch.Tensor
    mask_features: torch.Tensor


class BalanceAwareTokens(nn.Module):
    """Guiding-token selection, the query-guided feature update and the mask refresh."""

    def __init__(self, dim: int, dim_feedforward: int, num_guiding_tokens: int,
                 dropout: float = 0.0, heads: int = 8, generate_guides: bool = True) -> None:
        super().__init__()
        self.num_guiding_tokens = num_guiding_tokens
        self.generate_guides = generate_guides
        self.feature_update = QueryGuidedFeatureUpdate(dim, dim_feedforward, dropout, heads)
        self.mask_output_conv = conv_gn(dim, dim, 3)
        nn.init.kaiming_uniform_(self.mask_output_conv.weight, a=1)

    def forward(self, queries: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor,
                memory_pos: torch.Tensor, spatial_shapes: torch.Tensor,
                level_start_index: torch.Tensor, mask_features: torch.Tensor,
                heads: PredictionHeads) -> BATOOutput:
        """Guide ``memory (B, S, C)`` (decoder level order) by the best of ``queries``.

        Args:
            queries: ``(B, Q, C)`` the guiding-token candidates: the raw output of decoder
                layer 0 (the heads read it without ``decoder_norm``, as officially) or, for
                Tab. 5's ablation, selected tokens.
            query_pos: ``(B, Q, C)`` their position embeddings (the decoder's, of their boxes).
            memory_pos: ``(B, S, C)`` sine position embedding of every token.
            mask_features: ``(B, D, H, W)`` with ``D == C``.

        With guiding-token generation (the paper's GTG, the official model) the guides are
        the mask network's embedding of the chosen queries (value) plus their box network's
        position embedding (in the key); without it (Tab. 6's ablation) the chosen queries
        themselves are key and value.
        """
        keep = min(self.num_guiding_tokens, queries.shape[1])
        if self.generate_guides:
            indices, guides, guide_pos = select_top_k(heads.class_embed(queries), keep,
                                                      heads.mask_embed(queries), query_pos)
        else:
            indices, guides = select_top_k(heads.class_embed(queries), keep, queries)
            guide_pos = torch.zeros_like(guides)
        memory = self.feature_update(memory, memory_pos, guides, guide_pos)
        height, width = spatial_shapes[-1].tolist()
        finest = memory[:, int(level_start_index[-1]):].transpose(1, 2).reshape(
            memory.shape[0], -1, height, width)
        refreshed = mask_features + F.interpolate(finest, size=mask_features.shape[-2:],
                                                  mode="bilinear", align_corners=False)
        return BATOOutput(indices, memory, F.relu(self.mask_output_conv(refreshed)))
