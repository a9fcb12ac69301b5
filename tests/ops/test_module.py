"""``MSDeformAttn``: initialisation, sampling-location geometry, padding, backends."""

from __future__ import annotations

import math

import pytest
import torch

from dimaskdino.ops import MSDeformAttn, ms_deform_attn_reference

SHAPES = torch.tensor([[6, 7], [3, 4], [1, 2]])
STARTS = torch.tensor([0, 42, 54])
TOKENS = 56


def make_inputs(dim: int = 16, queries: int = 5, seed: int = 0, box: bool = False):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(2, queries, dim, generator=g, dtype=torch.float64)
    value = torch.randn(2, TOKENS, dim, generator=g, dtype=torch.float64)
    coords = 4 if box else 2
    ref = torch.rand(2, queries, 3, coords, generator=g, dtype=torch.float64) * 0.8 + 0.1
    return query, ref, value


def test_initialisation_is_deformable_detr():
    layer = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2)
    bias = layer.sampling_offsets.bias.view(4, 3, 2, 2)
    for head in range(4):
        angle = 2 * math.pi * head / 4
        ray = torch.tensor([math.cos(angle), math.sin(angle)])
        ray = ray / ray.abs().max()
        for point in range(2):
            expected = (ray * (point + 1)).expand(3, 2)
            torch.testing.assert_close(bias[head, :, point], expected.float())
    assert not layer.sampling_offsets.weight.any()
    assert not layer.attention_weights.weight.any() and not layer.attention_weights.bias.any()
    assert not layer.value_proj.bias.any() and not layer.output_proj.bias.any()
    bound = math.sqrt(6 / (32 + 32))  # Xavier-uniform
    assert layer.value_proj.weight.abs().max() <= bound


def test_zero_offsets_sample_at_reference_points_with_uniform_weights():
    layer = MSDeformAttn(d_model=16, n_levels=3, n_heads=2, n_points=3, backend="cpu").double()
    torch.nn.init.zeros_(layer.sampling_offsets.bias)
    query, ref, value = make_inputs()
    out = layer(query, ref, value, SHAPES, STARTS)
    v = layer.value_proj(value).view(2, TOKENS, 2, 8)
    locations = ref[:, :, None, :, None, :].expand(2, 5, 2, 3, 3, 2)
    weights = torch.full((2, 5, 2, 3, 3), 1 / 9, dtype=torch.float64)
    expected = layer.output_proj(ms_deform_attn_reference(v, SHAPES, STARTS, locations, weights))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_point_offsets_are_in_level_pixels():
    """A bias of (1, 0) moves every point one pixel right on each level."""
    layer = MSDeformAttn(d_model=8, n_levels=3, n_heads=1, n_points=1, backend="reference")
    layer = layer.double()
    with torch.no_grad():
        layer.sampling_offsets.bias.copy_(torch.tensor([1.0, 0.0]).repeat(3))
    query, ref, value = make_inputs(dim=8)
    shifted = ref.clone()
    shifted[..., 0] += 1 / SHAPES[:, 1].double()
    with torch.no_grad():
        torch.nn.init.zeros_(layer.sampling_offsets.bias)
        expected = layer(query, shifted, value, SHAPES, STARTS)
        layer.sampling_offsets.bias.copy_(torch.tensor([1.0, 0.0]).repeat(3))
        got = layer(query, ref, value, SHAPES, STARTS)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_box_offsets_are_in_half_box_sizes_per_point():
    layer = MSDeformAttn(d_model=8, n_levels=3, n_heads=1, n_points=2, backend="reference")
    layer = layer.double()
    with torch.no_grad():
        layer.sampling_offsets.bias.copy_(torch.tensor([2.0, -2.0]).repeat(6))
    query, boxes, value = make_inputs(dim=8, box=True)
    with torch.no_grad():
        got = layer(query, boxes, value, SHAPES, STARTS)
        # offset / P * size / 2 = (+w/2, -h/2): the box's top-right corner
        corner = boxes[..., :2] + boxes[..., 2:] * torch.tensor([0.5, -0.5], dtype=torch.float64)
        torch.nn.init.zeros_(layer.sampling_offsets.bias)
        expected = layer(query, corner, value, SHAPES, STARTS)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_padded_tokens_do_not_contribute():
    layer = MSDeformAttn(d_model=16, n_levels=3, n_heads=2, n_points=3, backend="cpu").double()
    query, ref, value = make_inputs()
    mask = torch.zeros(2, TOKENS, dtype=torch.bool)
    mask[:, 30:42] = True
    noisy = value.clone()
    noisy[mask] = 1e6
    torch.testing.assert_close(layer(query, ref, value, SHAPES, STARTS, mask),
                               layer(query, ref, noisy, SHAPES, STARTS, mask), rtol=0, atol=0)


@pytest.mark.parametrize("box", [False, True])
def test_cpu_kernel_and_reference_agree_with_gradients(box, cpu_kernel):
    torch.manual_seed(0)
    layer = MSDeformAttn(d_model=16, n_levels=3, n_heads=2, n_points=3).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    query, ref, value = make_inputs(box=box)
    results = {}
    for backend in ("cpu", "reference"):
        layer.backend = backend
        layer.zero_grad()
        out = layer(query, ref, value, SHAPES, STARTS)
        out.square().sum().backward()
        results[backend] = [out.detach()] + [p.grad.clone() for p in layer.parameters()]
    for got, want in zip(results["cpu"], results["reference"]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert all(g.abs().sum() > 0 for g in results["cpu"][1:])


def test_rejects_indivisible_heads_and_bad_reference_points():
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(d_model=10, n_heads=4)
    layer = MSDeformAttn(d_model=16, n_levels=3, n_heads=2, n_points=1).double()
    query, ref, value = make_inputs()
    with pytest.raises(ValueError, match="2 or 4 coordinates"):
        layer(query, ref[..., :1], value, SHAPES, STARTS)
