"""Random inputs for the deformable-attention tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch


@dataclass(frozen=True)
class Case:
    """One op configuration: batch, level shapes (H, W), heads, channels, queries, points."""

    batch: int
    shapes: tuple[tuple[int, int], ...]
    heads: int
    channels: int
    queries: int
    points: int

    def __str__(self) -> str:
        maps = "+".join(f"{h}x{w}" for h, w in self.shapes)
        return (f"n{self.batch}-{maps}-m{self.heads}-d{self.channels}"
                f"-q{self.queries}-p{self.points}")

    def inputs(self, dtype: torch.dtype = torch.float64, seed: int = 0,
               requires_grad: bool = False):
        """``(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)``.

        Locations are drawn from [-0.25, 1.25], so about a third of them fall partly
        or wholly outside the maps. Values are drawn in float64 and then cast, so a
        seed gives the same inputs (up to rounding) in every dtype.
        """
        g = torch.Generator().manual_seed(seed)
        spatial_shapes = torch.tensor(self.shapes, dtype=torch.long)
        sizes = spatial_shapes.prod(1)
        level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        levels = len(self.shapes)
        value = torch.randn(self.batch, int(sizes.sum()), self.heads, self.channels,
                            generator=g, dtype=torch.float64)
        locations = torch.rand(self.batch, self.queries, self.heads, levels, self.points, 2,
                               generator=g, dtype=torch.float64) * 1.5 - 0.25
        weights = torch.rand(self.batch, self.queries, self.heads, levels, self.points,
                             generator=g, dtype=torch.float64)
        value, locations, weights = (t.to(dtype).requires_grad_(requires_grad)
                                     for t in (value, locations, weights))
        return value, spatial_shapes, level_start_index, locations, weights


def random_cases(count: int, seed: int = 2024) -> list[Case]:
    """``count`` configurations: 1-5 levels, odd and 1x1 maps, 1-8 heads, 1-8 points,
    1-9 or 32 channels."""
    g = torch.Generator().manual_seed(seed)

    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=g))

    cases = []
    for i in range(count):
        levels = 1 + i % 5
        shapes = tuple((randint(1, 13), randint(1, 13)) for _ in range(levels))
        if i % 4 == 0:  # always some 1x1 maps
            shapes = ((1, 1), *shapes[1:])
        channels = 32 if i % 6 == 5 else randint(1, 9)  # 32: the kernel's fixed-width path
        cases.append(Case(batch=randint(1, 2), shapes=shapes, heads=1 + i % 8,
                          channels=channels, queries=randint(1, 17),
                          points=1 + (3 * i) % 8))
    return cases


@pytest.fixture
def cpu_kernel():
    """The compiled CPU kernel; builds it on first use."""
    from dimaskdino.ops.build import load_cpu_extension

    return load_cpu_extension()
