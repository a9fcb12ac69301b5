"""Torch (fp32, C++ CPU deformable-attention kernel) vs onnxruntime (CPU execution provider)
on one 800x1216 image, R50 DI-MaskDINO, side by side.

The official R50 DI-MaskDINO shapes (6 decoder layers, 300 queries, 80 classes; random
weights, as ``benchmarks/model.py`` builds them) are exported by ``dimask export``'s code
twice, with every layer (``--layers all``, what the layer probe runs) and with the last
one (``--layers last``, enough for eval), at 800x1216; each is timed through ``predict``
(preprocessing, model, instance inference) against torch doing the same work
(``all_layers=True`` / ``False``). onnxruntime gets as many threads as torch.

    python benchmarks/export.py                # 2 threads, median of 3 after a warm-up

The variants run round-robin, so slow spells of a shared machine hit all of them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from model import build, cpu_line, timed  # benchmarks/model.py, beside this script

from dimaskdino.config import ExperimentConfig
from dimaskdino.engine.export import export_onnx
from dimaskdino.engine.exported import load_exported

SIZE = (800, 1216)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(cpu_line())
    torch.manual_seed(0)
    model = build(True)
    image = [torch.randint(0, 256, (3, *SIZE), dtype=torch.uint8)]
    runs, runtimes = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for layers in ("all", "last"):
            path = Path(scratch) / f"{layers}.onnx"
            start = time.perf_counter()
            export_onnx(model, ExperimentConfig(model=model.config), path, SIZE,
                        last_only=layers == "last")
            print(f"export --layers {layers}: {time.perf_counter() - start:.1f} s, "
                  f"{path.stat().st_size / 2**20:.0f} MiB", flush=True)
            runtimes[layers], _ = load_exported(path)
            every = layers == "all"
            runs[("torch", layers)] = partial(model.predict, image, all_layers=every)
            runs[("onnxruntime", layers)] = partial(runtimes[layers].predict, image,
                                                    all_layers=every)
        times: dict[tuple[str, str], list[float]] = {variant: [] for variant in runs}
        for repeat in range(args.repeats + 1):  # round 0 warms up
            for variant, run in runs.items():
                elapsed = timed(run)
                if repeat:
                    times[variant].append(elapsed)
                    print(f"  {variant[0]:11s} --layers {variant[1]:4s} {elapsed:7.2f} s",
                          flush=True)
        agreement = {layers: max_difference(runs[("torch", layers)](),
                                            runs[("onnxruntime", layers)]())
                     for layers in ("all", "last")}
    print(f"\n| R50 DI-MaskDINO, 800x1216, {args.threads} threads | torch fp32 cpu op s/image | "
          "onnxruntime s/image | onnxruntime / torch | max abs diff logits / boxes / masks |")
    print("|---|---:|---:|---:|---|")
    for layers in ("all", "last"):
        mine, theirs = (statistics.median(times[(who, layers)])
                        for who in ("torch", "onnxruntime"))
        print(f"| --layers {layers} | {mine:.2f} | {theirs:.2f} | {theirs / mine:.2f}x | "
              f"{' / '.join(f'{d:.1e}' for d in agreement[layers])} |")


def max_difference(torch_pred, runtime_pred) -> list[float]:
    """The largest absolute difference of the last layer's logits, boxes and mask logits."""
    mine, theirs = torch_pred.outputs["layers"][-1], runtime_pred.outputs["layers"][-1]
    return [float((mine[key] - theirs[key]).abs().max())
            for key in ("pred_logits", "pred_boxes", "pred_masks")]


if __name__ == "__main__":
    main()
