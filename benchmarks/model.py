"""Eval-mode CPU time per image of DI-MaskDINO vs MaskDINO, side by side, on R50 and Swin-L.

Both models at the same decoder depth (6 layers, 300 queries, 80 classes, the official
DI-MaskDINO R50 shapes; MaskDINO = the same model with DI and BATO off), one 800x1216
image per call through ``predict`` (preprocessing, model, instance inference), each with
the C++ CPU deformable-attention kernel and with the pure-PyTorch reference op in float32,
and with the CPU kernel in bf16 (``engine.inference.predict(..., precision="bf16")``: bf16
autocast, the op and the post-processing in float32; see ``dimaskdino/engine/precision.py``).
The Swin-L rows put the same models on the Swin-L backbone of the ``swinl-*`` presets
(window 12, 5 feature levels with res2). Weights are random: the time does not depend on
their values.

    python benchmarks/model.py                 # 2 threads, median of 3 after a warm-up
    python benchmarks/model.py --backbones r50 --no-reference   # cpu op, fp32 vs bf16

The six variants run round-robin, so slow spells of a shared machine hit all of them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from dimaskdino.config import ModelConfig, swin_large
from dimaskdino.engine.inference import predict
from dimaskdino.engine.precision import cpu_flags, native_bf16
from dimaskdino.modeling.backbone import ResNetConfig
from dimaskdino.modeling.model import DIMaskDINO
from dimaskdino.modeling.predictor import PredictorConfig
from dimaskdino.ops import MSDeformAttn

BACKBONES = {"r50": "R50", "swinl": "Swin-L"}


def build(di: bool, backbone: str = "r50") -> DIMaskDINO:
    predictor = PredictorConfig(num_classes=80, num_queries=300, dec_layers=6,
                                first_selected_queries=600 if di else None,
                                num_guiding_tokens=50 if di else None)
    config = ModelConfig(backbone=ResNetConfig(stride_in_1x1=False, freeze_at=0),
                         predictor=predictor)
    if backbone == "swinl":
        config = swin_large(config)
    return DIMaskDINO(config).eval()


def set_backend(model: torch.nn.Module, backend: str) -> None:
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.backend = backend


def cpu_line() -> str:
    """The CPU's model name and its native bf16 unit, as the precision module detects it."""
    names = [line.partition(":")[2].strip() for line in Path("/proc/cpuinfo").read_text()
             .splitlines() if line.startswith("model name")] if cpu_flags() else []
    unit = native_bf16()
    return (f"CPU: {names[0] if names else 'unknown'}, {torch.get_num_threads()} threads, "
            f"native bf16: {unit or 'none (bf16 rows are emulated)'}")


def gflop_per_image(model: DIMaskDINO, image: torch.Tensor) -> float:
    """Matmul and convolution GFLOP of one ``predict`` (torch's counter; the deformable
    attention op is not counted, it is the same in both models)."""
    with FlopCounterMode(display=False) as counter:
        model.predict([image])
    return counter.get_total_flops() / 1e9


def machine_gflops() -> dict[str, float]:
    """GFLOP/s torch reaches here on the model's two largest shapes: an encoder FFN matmul
    (20197 tokens, 256 -> 1024) and a 3x3 256 -> 256 convolution at stride 4 (200x304)."""
    tokens, weight = torch.randn(20197, 256), torch.randn(1024, 256)
    conv, features = torch.nn.Conv2d(256, 256, 3, padding=1), torch.randn(1, 256, 200, 304)
    work = {"matmul": (lambda: tokens @ weight.t(), 2 * 20197 * 256 * 1024),
            "convolution": (lambda: conv(features), 2 * 256 * 256 * 9 * 200 * 304)}
    rates = {}
    with torch.no_grad():
        for name, (run, flop) in work.items():
            run()
            elapsed = statistics.median(timed(run) for _ in range(5))
            rates[name] = flop / elapsed / 1e9
    return rates


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbones", default="r50,swinl",
                        help="comma-separated, from: " + ", ".join(BACKBONES))
    parser.add_argument("--precisions", default="fp32,bf16",
                        help="of the cpu-op rows, comma-separated: fp32 and / or bf16 (the "
                             "reference op runs in fp32)")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the reference-op rows (a shorter run)")
    args = parser.parse_args()
    unknown = set(args.backbones.split(",")) - set(BACKBONES)
    if unknown:
        parser.error(f"unknown backbones {sorted(unknown)}; choose from {', '.join(BACKBONES)}")
    args.precisions = args.precisions.split(",")
    if "fp32" not in args.precisions or set(args.precisions) - {"fp32", "bf16"}:
        parser.error("--precisions: fp32 and optionally bf16")
    torch.set_num_threads(args.threads)
    print(cpu_line())
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 800, 1216), dtype=torch.uint8)
    for backbone in args.backbones.split(","):
        benchmark(backbone, image, args)
    rates = machine_gflops()
    print("machine: " + ", ".join(f"{name} {rate:.0f} GFLOP/s" for name, rate in rates.items()))


def benchmark(backbone: str, image: torch.Tensor, args: argparse.Namespace) -> None:
    """Time both models on ``backbone`` with both deformable-attention backends; print the
    table."""
    label = BACKBONES[backbone]
    models = {"DI-MaskDINO": build(True, backbone), "MaskDINO": build(False, backbone)}
    gflop = {name: gflop_per_image(model, image) for name, model in models.items()}
    variants = [(name, "cpu", precision) for precision in args.precisions for name in models]
    if args.reference:
        variants += [(name, "reference", "fp32") for name in models]
    times: dict[tuple[str, str, str], list[float]] = {variant: [] for variant in variants}
    cpu_times: dict[tuple[str, str, str], list[float]] = {variant: [] for variant in variants}
    for repeat in range(args.repeats + 1):  # round 0 warms up (and builds the kernel)
        for name, backend, precision in variants:  # interleaved: drift hits all alike
            set_backend(models[name], backend)
            cpu_start = time.process_time()
            elapsed = timed(partial(predict, models[name], [image], precision=precision))
            if repeat:
                times[(name, backend, precision)].append(elapsed)
                cpu_times[(name, backend, precision)].append(time.process_time() - cpu_start)
                print(f"  {name:12s} {label:6s} {backend:9s} {precision} {elapsed:7.2f} s "
                      f"({cpu_times[(name, backend, precision)][-1]:.2f} s CPU)", flush=True)
    rows = {variant: statistics.median(values) for variant, values in times.items()}
    bf16 = "bf16" in args.precisions
    columns = ["cpu op s/image"]
    columns += ["reference op s/image", "reference / cpu"] if args.reference else []
    columns += ["cpu op bf16 s/image", "fp32 / bf16"] if bf16 else []
    print(f"\n| model ({label}, 6 decoder layers) | {' | '.join(columns)} |  "
          f"({args.threads} threads, 800x1216)")
    print("|---|" + "---:|" * len(columns))
    for name in models:
        cpu = rows[(name, "cpu", "fp32")]
        cells = [f"{cpu:.2f}"]
        if args.reference:
            ref = rows[(name, "reference", "fp32")]
            cells += [f"{ref:.2f}", f"{ref / cpu:.2f}x"]
        if bf16:
            cells += [f"{rows[(name, 'cpu', 'bf16')]:.2f}",
                      f"{cpu / rows[(name, 'cpu', 'bf16')]:.2f}x"]
        print(f"| {name} | {' | '.join(cells)} |")
    print(f"{label}: DI-MaskDINO / MaskDINO GFLOP: {gflop['DI-MaskDINO']:.0f} / "
          f"{gflop['MaskDINO']:.0f} = {gflop['DI-MaskDINO'] / gflop['MaskDINO']:.3f}; the "
          f"cpu-op DI-MaskDINO runs at "
          f"{gflop['DI-MaskDINO'] / rows[('DI-MaskDINO', 'cpu', 'fp32')]:.0f}"
          " GFLOP/s")
    if bf16:  # process CPU time: what a shared machine's time slicing does not stretch
        for name in models:
            fp32_cpu, bf16_cpu = (statistics.median(cpu_times[(name, "cpu", p)])
                                  for p in ("fp32", "bf16"))
            print(f"{label}: {name} CPU time per image, cpu op: fp32 {fp32_cpu:.2f} s, bf16 "
                  f"{bf16_cpu:.2f} s, fp32 / bf16 {fp32_cpu / bf16_cpu:.2f}x")
    for backend in ("cpu", "reference") if args.reference else ("cpu",):
        ratio = rows[("DI-MaskDINO", backend, "fp32")] / rows[("MaskDINO", backend, "fp32")]
        print(f"{label}: DI-MaskDINO / MaskDINO time, {backend} op: {ratio:.3f}")

if __name__ == "__main__":
    main()
