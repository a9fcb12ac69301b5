"""A kernel checked against the CPU kernel in float64: forward and the three gradients.

``make gpu-check`` runs :func:`check_backend` for the CUDA kernel in float32, float16 and
bfloat16; the tests run it for the pure-PyTorch reference on the CPU, so the comparison
itself is exercised on machines without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dimaskdino.ops.dispatch import ms_deform_attn

# relative error allowed per dtype: max |got - want| / max |want| of each output
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3,
             torch.bfloat16: 2e-2}
OUTPUTS = ("output", "grad_value", "grad_sampling_locations", "grad_attention_weights")


@dataclass(frozen=True)
class KernelShape:
    """Sizes of one deformable-attention call: ``levels`` ``(H_l, W_l)``, ``queries``
    (Lq), heads, channels per head and points per level."""

    name: str
    levels: tuple[tuple[int, int], ...]
    queries: int
    batch: int = 2
    heads: int = 8
    channels: int = 32
    points: int = 4

    @property
    def tokens(self) -> int:
        return sum(h * w for h, w in self.levels)


# a decoder call (300 queries) and an encoder-like one (every token queries), at 1/4 of
# the R50 model's 800x1216 maps so that float64 on the CPU stays quick
SHAPES = (KernelShape("decoder", ((25, 38), (13, 19), (7, 10), (4, 5)), 300),
          KernelShape("encoder", ((25, 38), (13, 19), (7, 10), (4, 5)), 1283))


def random_inputs(shape: KernelShape, seed: int = 0) -> dict[str, torch.Tensor]:
    """float64 CPU inputs of ``shape`` and a random output gradient; locations spill a
    little outside the maps, as the model's do."""
    g = torch.Generator().manual_seed(seed)
    n, m, d, p, lv = shape.batch, shape.heads, shape.channels, shape.points, len(shape.levels)
    spatial = torch.tensor(shape.levels, dtype=torch.long)
    start = torch.cat((spatial.new_zeros(1), spatial.prod(1).cumsum(0)[:-1]))
    weights = torch.rand(n, shape.queries, m, lv * p, generator=g, dtype=torch.float64)
    return {
        "value": torch.randn(n, shape.tokens, m, d, generator=g, dtype=torch.float64),
        "spatial_shapes": spatial, "level_start_index": start,
        "sampling_locations": torch.rand(n, shape.queries, m, lv, p, 2, generator=g,
                                         dtype=torch.float64) * 1.1 - 0.05,
        "attention_weights": weights.softmax(-1).view(n, shape.queries, m, lv, p),
        "grad_output": torch.randn(n, shape.queries, m * d, generator=g, dtype=torch.float64),
    }


def _run(inputs: dict[str, torch.Tensor], backend: str, device: str, dtype: torch.dtype
         ) -> dict[str, torch.Tensor]:
    """Forward and backward of ``backend`` on ``device`` in ``dtype``; float64 CPU results."""
    def leaf(name):
        return inputs[name].to(device=device, dtype=dtype, copy=True).requires_grad_()

    value, locations, weights = (leaf(k) for k in ("value", "sampling_locations",
                                                    "attention_weights"))
    output = ms_deform_attn(value, inputs["spatial_shapes"].to(device),
                            inputs["level_start_index"].to(device), locations, weights,
                            backend=backend)
    output.backward(inputs["grad_output"].to(device=device, dtype=dtype))
    found = (output, value.grad, locations.grad, weights.grad)
    return {k: t.detach().double().cpu() for k, t in zip(OUTPUTS, found, strict=True)}


def relative_errors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]
                    ) -> dict[str, float]:
    """max |got - want| / max |want| per output."""
    return {k: ((got[k] - want[k]).abs().max() / want[k].abs().max().clamp(min=1e-30)).item()
            for k in OUTPUTS}


def check_backend(backend: str, device: str, dtypes: tuple[torch.dtype, ...],
                  shapes: tuple[KernelShape, ...] = SHAPES) -> list[dict]:
    """One row per (shape, dtype): the relative error of each output of ``backend`` against
    the CPU kernel in float64, the tolerance and ``passed``."""
    rows = []
    for shape in shapes:
        inputs = random_inputs(shape)
        want = _run(inputs, "cpu", "cpu", torch.float64)
        for dtype in dtypes:
            errors = relative_errors(_run(inputs, backend, device, dtype), want)
            tolerance = TOLERANCE[dtype]
            rows.append({"shape": shape.name, "dtype": str(dtype).removeprefix("torch."),
                         **errors, "tolerance": tolerance,
                         "passed": all(e <= tolerance for e in errors.values())})
    return rows
