"""The grid_sample reference against a direct transcription of the op's definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dimaskdino.ops import ms_deform_attn_reference
from tests.ops.conftest import Case, random_cases


def naive_ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights):
    """Loop-by-loop definition: pixel centres at (x*W - 0.5, y*H - 0.5), zero outside."""
    value, locations, weights = (t.detach().numpy() for t in (value, locations, weights))
    n_batch, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = locations.shape
    out = np.zeros((n_batch, queries, heads, channels))
    for n in range(n_batch):
        for q in range(queries):
            for m in range(heads):
                for lvl in range(levels):
                    height, width = (int(s) for s in spatial_shapes[lvl])
                    start = int(level_start_index[lvl])
                    for p in range(points):
                        x = locations[n, q, m, lvl, p, 0] * width - 0.5
                        y = locations[n, q, m, lvl, p, 1] * height - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                            if 0 <= yy < height and 0 <= xx < width:
                                w = (1 - abs(x - xx)) * (1 - abs(y - yy))
                                out[n, q, m] += (weights[n, q, m, lvl, p] * w
                                                 * value[n, start + yy * width + xx, m])
    return torch.from_numpy(out.reshape(n_batch, queries, heads * channels))


@pytest.mark.parametrize("case", random_cases(6, seed=7), ids=str)
def test_reference_matches_definition(case: Case):
    inputs = case.inputs(torch.float64, seed=3)
    expected = naive_ms_deform_attn(*inputs)
    torch.testing.assert_close(ms_deform_attn_reference(*inputs), expected,
                               rtol=0, atol=1e-12)


def test_pixel_centre_returns_the_pixel_and_far_outside_returns_zero():
    case = Case(batch=1, shapes=((3, 4),), heads=1, channels=2, queries=2, points=1)
    value, shapes, starts, locations, weights = case.inputs(torch.float64)
    weights = torch.ones_like(weights)
    row, col = 2, 1
    locations[0, 0, 0, 0, 0] = torch.tensor([(col + 0.5) / 4, (row + 0.5) / 3],
                                            dtype=torch.float64)
    locations[0, 1, 0, 0, 0] = torch.tensor([1.5, -0.7])
    out = ms_deform_attn_reference(value, shapes, starts, locations, weights)
    torch.testing.assert_close(out[0, 0], value[0, row * 4 + col, 0], rtol=0, atol=1e-15)
    assert torch.equal(out[0, 1], torch.zeros(2, dtype=torch.float64))
