"""Deformable attention: pure-PyTorch reference vs the C++ CPU kernel, side by side.

Two shapes of a ResNet-50 MaskDINO at 800x1216 (four levels 100x152 ... 13x19,
S = 20197 tokens, 8 heads x 32 channels, 4 points): a decoder layer (300
queries) and an encoder layer (every token is a query). For each shape,
sampling-location layout, backend and mode (forward; forward + backward) it
reports the median wall time and the peak memory the call adds, then the
reference/kernel ratios.

Sampling-location layouts:
  * model: as the layers place them. Encoder: each token's own pixel centre
    (the same normalized point on every level) plus offsets of N(0, 2^2) pixels
    of each level. Decoder: points spread uniformly over a reference box with
    centre ~ U(0, 1) and sides ~ U(0.05, 0.5).
  * uniform: every location ~ U(0, 1)^2 independently, a cache-hostile stress
    case (no locality between the samples of a query).

Each measurement runs in a fresh process: peak memory is the rise of the peak
resident set size (Linux VmHWM, reset just before the call) during the first
call; the median time comes from the calls that follow.

    python benchmarks/ms_deform_attn.py                  # both shapes, 2 threads
    python benchmarks/ms_deform_attn.py --quick          # decoder shape only
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import statistics
import time
from pathlib import Path

LEVELS = ((100, 152), (50, 76), (25, 38), (13, 19))
TOKENS = sum(h * w for h, w in LEVELS)
SHAPES = {"decoder": 300, "encoder": TOKENS}  # queries per shape
HEADS, CHANNELS, POINTS = 8, 32, 4
LAYOUTS = ("model", "uniform")
BACKENDS = ("reference", "cpu")
MODES = ("forward", "forward+backward")
MIN_TIMED_MS = 2000.0  # fast calls repeat until this much time is measured


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def sampling_locations(shape: str, layout: str, generator):
    """``(1, Lq, M, L, P, 2)`` normalized locations of ``layout`` (see the module doc)."""
    import torch

    queries, levels = SHAPES[shape], len(LEVELS)
    size = (1, queries, HEADS, levels, POINTS, 2)
    if layout == "uniform":
        return torch.rand(size, generator=generator)
    if shape == "encoder":
        centres = []
        for height, width in LEVELS:
            ys, xs = torch.meshgrid((torch.arange(height) + 0.5) / height,
                                    (torch.arange(width) + 0.5) / width, indexing="ij")
            centres.append(torch.stack([xs.flatten(), ys.flatten()], dim=-1))
        reference = torch.cat(centres)[None, :, None, None, None, :]  # (1, S, 1, 1, 1, 2)
        level_pixels = torch.tensor([[w, h] for h, w in LEVELS])[None, None, None, :, None, :]
        return reference + 2.0 * torch.randn(size, generator=generator) / level_pixels
    centre = torch.rand(1, queries, 1, 1, 1, 2, generator=generator)
    sides = 0.05 + 0.45 * torch.rand(1, queries, 1, 1, 1, 2, generator=generator)
    return centre + (torch.rand(size, generator=generator) - 0.5) * sides


def measure(shape: str, layout: str, backend: str, mode: str, repeats: int,
            threads: int) -> dict:
    """Runs in a child process: median ms and peak added memory (MiB) of one op call."""
    import torch

    from dimaskdino.ops import ms_deform_attn
    from dimaskdino.ops.build import load_cpu_extension

    torch.set_num_threads(threads)
    load_cpu_extension()
    g = torch.Generator().manual_seed(0)
    queries, levels = SHAPES[shape], len(LEVELS)
    spatial_shapes = torch.tensor(LEVELS)
    sizes = spatial_shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    grad = mode != "forward"
    value = torch.randn(1, TOKENS, HEADS, CHANNELS, generator=g).requires_grad_(grad)
    locations = sampling_locations(shape, layout, g).requires_grad_(grad)
    weights = torch.rand(1, queries, HEADS, levels, POINTS, generator=g)
    weights = (weights / weights.sum((-1, -2), keepdim=True)).requires_grad_(grad)
    grad_out = torch.randn(1, queries, HEADS * CHANNELS, generator=g)

    def call() -> None:
        out = ms_deform_attn(value, spatial_shapes, starts, locations, weights, backend=backend)
        if grad:
            torch.autograd.grad(out, (value, locations, weights), grad_out)

    _reset_peak_rss()
    before = _status_kib("VmRSS")
    call()
    peak_mib = (_status_kib("VmHWM") - before) / 1024
    times = []
    while len(times) < repeats or sum(times) < MIN_TIMED_MS:
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return {"shape": shape, "layout": layout, "backend": backend, "mode": mode,
            "ms": statistics.median(times), "peak_mib": peak_mib}


def _measure_star(args: tuple) -> dict:
    return measure(*args)


def run(shapes: list[str], layouts: list[str], repeats: int, threads: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    rows = []
    for shape, layout, mode, backend in itertools.product(shapes, layouts, MODES, BACKENDS):
        with ctx.Pool(1) as pool:  # a fresh process per measurement
            row = pool.apply(_measure_star, ((shape, layout, backend, mode, repeats, threads),))
        rows.append(row)
        print(f"  {shape:8s} {layout:8s} {mode:17s} {backend:9s} {row['ms']:10.1f} ms "
              f"{row['peak_mib']:8.1f} MiB", flush=True)
    return rows


def table(rows: list[dict], threads: int) -> str:
    by_key = {(r["shape"], r["layout"], r["mode"], r["backend"]): r for r in rows}
    lines = [
        f"| shape | locations | mode | reference ms | cpu ms | speed-up | reference MiB "
        f"| cpu MiB | cpu / reference memory |  ({threads} threads)",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key in dict.fromkeys((r["shape"], r["layout"], r["mode"]) for r in rows):
        ref, cpu = by_key[(*key, "reference")], by_key[(*key, "cpu")]
        shape, layout, mode = key
        lines.append(
            f"| {shape} (Lq={SHAPES[shape]}) | {layout} | {mode} | {ref['ms']:.1f} "
            f"| {cpu['ms']:.1f} "
            f"| {ref['ms'] / cpu['ms']:.1f}x | {ref['peak_mib']:.1f} | {cpu['peak_mib']:.1f} "
            f"| {cpu['peak_mib'] / max(ref['peak_mib'], 1e-9):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="decoder shape, model layout, 3 repeats")
    parser.add_argument("--repeats", type=int, default=7,
                        help="minimum timed calls per measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    shapes = ["decoder"] if args.quick else list(SHAPES)
    layouts = ["model"] if args.quick else list(LAYOUTS)
    repeats = 3 if args.quick else args.repeats
    print(f"multi-scale deformable attention, levels {LEVELS}, S={TOKENS}, M={HEADS}, "
          f"D={CHANNELS}, P={POINTS}; median of >= {repeats} calls and "
          f">= {MIN_TIMED_MS / 1000:g} s, {args.threads} threads")
    rows = run(shapes, layouts, repeats, args.threads)
    print()
    print(table(rows, args.threads))


if __name__ == "__main__":
    main()
