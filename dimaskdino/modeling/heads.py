"""Prediction heads shared by every stage: class, box and mask from query features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (official parameter names)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims, [*dims[1:], out_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


class PredictionHeads(nn.Module):
    """Class logits, mask logits and box deltas of queries, shared by all layers.

    ``decoder_norm`` is the decoder's final LayerNorm: class and mask predictions read
    normalized features; the box head is applied by the caller to whichever features the
    official code uses at that point (see the decoder).
    """

    def __init__(self, hidden_dim: int, num_classes: int, mask_dim: int) -> None:
        super().__init__()
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    def forward(self, queries: torch.Tensor, mask_features: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``queries`` ``(B, Q, C)``, ``mask_features`` ``(B, D, H, W)`` ->
        ``logits (B, Q, num_classes)``, ``masks (B, Q, H, W)`` (None without
        ``mask_features``)."""
        normed = self.decoder_norm(queries)
        logits = self.class_embed(normed)
        if mask_features is None:
            return logits, None
        batch, _, height, width = mask_features.shape
        masks = self.mask_embed(normed) @ mask_features.flatten(2)  # (B, Q, H*W), no copies
        return logits, masks.view(batch, -1, height, width)
