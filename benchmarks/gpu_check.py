"""`make gpu-check`: the CUDA path end to end on a machine with a GPU, in a few minutes.

1. builds the CUDA deformable-attention kernel for this GPU;
2. checks it against the CPU kernel in float64 (forward and the three gradients) in float32,
   float16 and bfloat16 (:mod:`dimaskdino.ops.kernel_check`);
3. trains the ``tiny`` preset for 50 iterations with AMP (float16 autocast + grad scaler);
4. times ``predict`` of the R50 DI-MaskDINO and MaskDINO on one 800x1216 image, float32
   and float16 autocast;
and prints one table (markdown, for benchmarks/RESULTS.md). Exit status 1 if a check fails,
2 without a CUDA GPU.

    python benchmarks/gpu_check.py [--iterations 50] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from dimaskdino.config import apply_overrides, preset
from dimaskdino.engine.trainer import Trainer
from dimaskdino.ops.build import default_cuda_archs, load_cuda_extension
from dimaskdino.ops.kernel_check import OUTPUTS, check_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model import build


def cuda_time(run, repeats: int) -> float:
    """Median seconds of ``run()`` after one warm-up, synchronized."""
    times = []
    for i in range(repeats + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_tiny(iterations: int) -> tuple[float, float]:
    """Wall seconds per iteration (start-up and synthetic data included) and the last
    logged loss of ``tiny`` trained with AMP."""
    with tempfile.TemporaryDirectory() as tmp:
        config = apply_overrides(preset("tiny"), [
            f"solver.max_iter={iterations}", "solver.amp=true", "solver.checkpoint_period=0",
            "solver.eval_period=0", "solver.log_period=1", "solver.steps=[]"])
        start = time.perf_counter()
        Trainer(config, Path(tmp) / "run", progress=False).run()
        elapsed = time.perf_counter() - start
        records = [json.loads(line) for line in
                   (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    return elapsed / iterations, losses[-1]


def predict_times(repeats: int) -> dict[tuple[str, str], float]:
    """Seconds per 800x1216 image of ``predict``, per (model, precision)."""
    image = torch.randint(0, 256, (3, 800, 1216), dtype=torch.uint8)
    found = {}
    for name, di in (("DI-MaskDINO", True), ("MaskDINO", False)):
        model = build(di, "r50").cuda().eval()
        for precision in ("fp32", "fp16 autocast"):
            def run(model=model, precision=precision):
                with torch.autocast("cuda", torch.float16, enabled=precision != "fp32"):
                    model.predict([image.cuda()])
            found[(name, precision)] = cuda_time(run, repeats)
        del model
        torch.cuda.empty_cache()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU visible to torch (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}", flush=True)
    start = time.perf_counter()
    load_cuda_extension(default_cuda_archs())
    build_s = time.perf_counter() - start
    rows = check_backend("cuda", "cuda", (torch.float32, torch.float16, torch.bfloat16))
    step_s, loss = train_tiny(args.iterations)
    times = predict_times(args.repeats)
    ok = all(r["passed"] for r in rows) and math.isfinite(loss)

    print(f"\n| check | result |  (kernel built in {build_s:.0f} s for sm {default_cuda_archs()})")
    print("|---|---|")
    for r in rows:
        errors = ", ".join(f"{k} {r[k]:.1e}" for k in OUTPUTS)
        verdict = "pass" if r["passed"] else "FAIL"
        print(f"| CUDA vs CPU kernel, {r['shape']}, {r['dtype']} | {verdict}: {errors} "
              f"(tolerance {r['tolerance']:.0e}) |")
    print(f"| tiny preset, {args.iterations} AMP iterations | {step_s * 1e3:.0f} ms/iteration "
          f"(start-up included), last loss {loss:.3f} |")
    for (name, precision), seconds in times.items():
        print(f"| R50 {name} predict, 800x1216, {precision} | {seconds * 1e3:.0f} ms/image |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
