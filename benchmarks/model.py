"""Eval-mode CPU time per image of DI-MaskDINO R50 vs MaskDINO R50, side by side.

Both models at the same decoder depth (6 layers, 300 queries, 80 classes, the official
DI-MaskDINO R50 shapes; MaskDINO = the same model with DI and BATO off), float32, one
800x1216 image per call through ``predict`` (preprocessing, model, instance inference),
each with the C++ CPU deformable-attention kernel and with the pure-PyTorch reference op.
Weights are random: the time does not depend on their values.

    python benchmarks/model.py                 # 2 threads, median of 3 after a warm-up
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dimaskdino.config import ModelConfig
from dimaskdino.modeling.backbone import ResNetConfig
from dimaskdino.modeling.model import DIMaskDINO
from dimaskdino.modeling.predictor import PredictorConfig
from dimaskdino.ops import MSDeformAttn


def build(di: bool) -> DIMaskDINO:
    predictor = PredictorConfig(num_classes=80, num_queries=300, dec_layers=6,
                                first_selected_queries=600 if di else None,
                                num_guiding_tokens=50 if di else None)
    config = ModelConfig(backbone=ResNetConfig(stride_in_1x1=False, freeze_at=0),
                         predictor=predictor)
    return DIMaskDINO(config).eval()


def set_backend(model: torch.nn.Module, backend: str) -> None:
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.backend = backend


def seconds_per_image(model: DIMaskDINO, image: torch.Tensor, repeats: int) -> float:
    model.predict([image])  # warm-up (and first-use kernel build)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict([image])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 800, 1216), dtype=torch.uint8)
    models = {"DI-MaskDINO": build(di=True), "MaskDINO": build(di=False)}
    rows = {}
    for backend in ("cpu", "reference"):
        for name, model in models.items():
            set_backend(model, backend)
            rows[(name, backend)] = seconds_per_image(model, image, args.repeats)
            print(f"  {name:12s} {backend:9s} {rows[(name, backend)]:7.2f} s/image", flush=True)
    print(f"\n| model (R50, 6 decoder layers) | cpu op s/image | reference op s/image "
          f"| reference / cpu |  ({args.threads} threads, float32, 800x1216)")
    print("|---|---:|---:|---:|")
    for name in models:
        cpu, ref = rows[(name, "cpu")], rows[(name, "reference")]
        print(f"| {name} | {cpu:.2f} | {ref:.2f} | {ref / cpu:.2f}x |")
    for backend in ("cpu", "reference"):
        ratio = rows[("DI-MaskDINO", backend)] / rows[("MaskDINO", backend)]
        print(f"DI-MaskDINO / MaskDINO time, {backend} op: {ratio:.3f}")


if __name__ == "__main__":
    main()
