"""BATO (paper §3.3) without guiding-token generation against a hand-written
cross-attention + FFN and mask refresh."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dimaskdino.modeling.bato import BalanceAwareTokens
from dimaskdino.modeling.heads import PredictionHeads
from dimaskdino.modeling.levels import flatten_levels, level_positions
from tests.modeling.test_selection import brute_force_top_k

DIM, HEADS, GUIDES = 32, 4, 3


def attention(query, key, value, attn: torch.nn.MultiheadAttention) -> torch.Tensor:
    """Multi-head scaled dot-product attention written out, with ``attn``'s weights."""
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)

    def split(x):  # (B, N, C) -> (B, heads, N, C / heads)
        return x.view(x.shape[0], x.shape[1], HEADS, -1).transpose(1, 2)

    q, k, v = split(query @ w_q.T + b_q), split(key @ w_k.T + b_k), split(value @ w_v.T + b_v)
    weights = (q @ k.transpose(-1, -2) / math.sqrt(DIM // HEADS)).softmax(-1)
    mixed = (weights @ v).transpose(1, 2).reshape(query.shape)
    return mixed @ attn.out_proj.weight.T + attn.out_proj.bias


def layer_norm(x, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def test_bato_without_guiding_token_generation_is_attention_to_the_best_queries_and_ffn():
    torch.manual_seed(0)
    bato = BalanceAwareTokens(DIM, 64, GUIDES, heads=HEADS, generate_guides=False).double()
    heads = PredictionHeads(DIM, 5, DIM).double()
    update = bato.feature_update
    for norm in (update.norm1, update.norm2):
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(2, DIM, s, s, generator=g, dtype=torch.float64) for s in (2, 4, 8)]
    memory, spatial_shapes, level_start_index = flatten_levels(maps)
    memory_pos = torch.cat(level_positions(maps), dim=1)
    queries = torch.randn(2, 10, DIM, generator=g, dtype=torch.float64)
    query_pos = torch.randn(2, 10, DIM, generator=g, dtype=torch.float64)  # unused here
    mask_features = torch.randn(2, DIM, 16, 16, generator=g, dtype=torch.float64)
    with torch.no_grad():
        got = bato(queries, query_pos, memory, memory_pos, spatial_shapes, level_start_index,
                   mask_features, heads)
        chosen = brute_force_top_k(heads.class_embed(queries), GUIDES)
        guides = torch.stack([queries[image, index] for image, index in enumerate(chosen)])
        # the tokens (with their positions) ask, the chosen queries are key and value
        tokens = layer_norm(memory + attention(memory + memory_pos, guides, guides,
                                               update.multihead_attn), update.norm1)
        ffn = F.relu(tokens @ update.linear1.weight.T + update.linear1.bias)
        want = layer_norm(tokens + ffn @ update.linear2.weight.T + update.linear2.bias,
                          update.norm2)
        # the finest level (last here) refreshes the mask features
        finest = want[:, int(level_start_index[-1]):].transpose(1, 2).reshape(2, DIM, 8, 8)
        conv = bato.mask_output_conv
        refreshed = F.conv2d(mask_features + F.interpolate(finest, size=(16, 16),
                                                           mode="bilinear"),
                             conv.weight, padding=1)
        refreshed = F.relu(F.group_norm(refreshed, 32, conv.norm.weight, conv.norm.bias))
    assert got.indices.tolist() == chosen
    torch.testing.assert_close(got.memory, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(got.mask_features, refreshed, rtol=0, atol=1e-10)
