"""The deformable decoder run in slices, as the predictor runs it around BATO."""

from __future__ import annotations

import pytest
import torch

from dimaskdino.modeling.decoder import DeformableDecoder
from dimaskdino.modeling.heads import PredictionHeads
from dimaskdino.modeling.levels import flatten_levels

DIM, LAYERS = 32, 3


def setup():
    torch.manual_seed(0)
    decoder = DeformableDecoder(DIM, 64, LAYERS, levels=3, heads=4, points=2).double()
    heads = PredictionHeads(DIM, 5, DIM).double()
    torch.nn.init.normal_(heads.bbox_embed.layers[-1].weight, std=0.1)  # boxes move
    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(2, DIM, s, s, generator=g, dtype=torch.float64) for s in (2, 4, 8)]
    memory, spatial_shapes, level_start_index = flatten_levels(maps)
    tgt = torch.randn(2, 7, DIM, generator=g, dtype=torch.float64)
    boxes = torch.rand(2, 7, 4, generator=g, dtype=torch.float64) * 0.5 + 0.2
    return decoder, tgt, boxes, (memory, spatial_shapes, level_start_index, heads)


@pytest.mark.parametrize("split", [0, 1, 2, LAYERS])
def test_a_run_in_two_slices_equals_one_run(split):
    decoder, tgt, boxes, rest = setup()  # rest: memory, its levels, the heads
    with torch.no_grad():
        whole = decoder(tgt, boxes, *rest)
        first = decoder(tgt, boxes, *rest, layers=slice(split))
        later = decoder(first.output, first.references[-1].detach(), *rest,
                        layers=slice(split, None))
    joined = first.then(later)
    assert len(joined.hidden) == LAYERS and len(joined.references) == LAYERS + 1
    assert torch.equal(joined.output, whole.output)
    for got, want in zip(joined.hidden, whole.hidden, strict=True):
        assert torch.equal(got, want)
    for got, want in zip(joined.references, whole.references, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(whole.references[0], boxes)
    # the boxes do refine: every layer moves them
    for before, after in zip(whole.references, whole.references[1:]):
        assert not torch.allclose(before, after)


def test_the_memory_seen_by_a_slice_changes_only_its_layers():
    """What BATO relies on: layers after the split read the memory they are given."""
    decoder, tgt, boxes, (memory, *levels_and_heads) = setup()
    with torch.no_grad():
        whole = decoder(tgt, boxes, memory, *levels_and_heads)
        first = decoder(tgt, boxes, memory, *levels_and_heads, layers=slice(1))
        later = decoder(first.output, first.references[-1].detach(), memory * 2,
                        *levels_and_heads, layers=slice(1, None))
    assert torch.equal(first.hidden[0], whole.hidden[0])
    assert not torch.allclose(later.hidden[0], whole.hidden[1])
