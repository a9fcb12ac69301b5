"""Shared head pieces."""

from __future__ import annotations

import torch
from torch import nn

from dimaskdino.modeling.heads import MLP
from dimaskdino.modeling.post_norm import FFN_CHUNK, feed_forward


def test_chunked_inference_ffn_equals_the_plain_one():
    torch.manual_seed(0)
    linear1, linear2 = nn.Linear(16, 64).double(), nn.Linear(64, 16).double()
    x = torch.randn(2, FFN_CHUNK * 2 + 5, 16, dtype=torch.float64)
    plain = feed_forward(x, linear1, linear2, nn.Identity())  # grad enabled: one piece
    with torch.no_grad():
        chunked = feed_forward(x, linear1, linear2, nn.Identity())
    torch.testing.assert_close(chunked, plain.detach(), rtol=0, atol=1e-12)


def test_mlp_layers_and_relu():
    mlp = MLP(3, 5, 2, 3)
    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(5, 3), (5, 5), (2, 5)]
    with torch.no_grad():
        for layer in mlp.layers:
            layer.weight.fill_(1.0)
            layer.bias.fill_(0.0)
    assert torch.equal(mlp(torch.tensor([[-1.0, -1.0, -1.0]])), torch.zeros(1, 2))
