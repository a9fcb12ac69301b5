"""Cost of the full layer probe vs a final-layer evaluation, side by side in one run.

Both run on the synthetic val split of the ``tiny`` preset (or of a checkpoint's own
config): the evaluation post-processes and scores the last layer only (what ``dimask
eval`` does); the probe predicts masks at every layer, post-processes every layer and
scores every layer for box and mask, with TIDE's errors and the box-mask consistency
(what ``dimask layer-probe`` does). Both score with ``--backend`` (default hotcoco, the
toolkit's default); the target is a probe / evaluation ratio <= 1.2. Without
``--checkpoint`` the model is the ``--preset``'s (default tiny) with seeded random weights
(every layer keeps its top-k detections either way, but random weights' masks are noise:
their RLEs hold hundreds of thousands of runs, which makes encoding and mask evaluation
far dearer than a trained model's compact masks do; the real workload is a checkpoint).

Each round times both, in alternating order, and the ratio is the median of the rounds'
ratios: the machine's speed drifts by tens of percent over minutes on shared hosts, and a
round's two runs see the same speed.

    python benchmarks/probe.py                       # 5 rounds
    python benchmarks/probe.py --checkpoint runs/tiny-dimaskdino/model_final.pth
    python benchmarks/probe.py --backend faster      # the previous default backend
    python benchmarks/probe.py --preset r50-coco-12ep --set data.dataset=synthetic \
        model.predictor.num_classes=6 \
        data.test_short=256 data.test_max_size=320     # the paper's model, random weights
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from train import cpu_description  # benchmarks/train.py, beside this script

from dimaskdino.analysis.probe import probe_layers
from dimaskdino.checkpoint import load_model
from dimaskdino.config import apply_overrides, preset
from dimaskdino.data.loader import validation_images
from dimaskdino.engine.evaluator import evaluate_model
from dimaskdino.modeling.model import DIMaskDINO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a dimask checkpoint (default: random weights)")
    parser.add_argument("--preset", default="tiny",
                        help="the random model's preset (e.g. r50-coco-12ep: the paper's)")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides",
                        help="config overrides, e.g. model.predictor.num_classes=6")
    parser.add_argument("--model", default="dimaskdino", choices=["dimaskdino", "maskdino"])
    parser.add_argument("--backend", default="hotcoco",
                        choices=["hotcoco", "faster", "pycocotools"])
    parser.add_argument("--repeats", type=int, default=5, help="rounds")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        model, config = load_model(args.checkpoint)
    else:
        config = apply_overrides(preset(args.preset, args.model), args.overrides)
        torch.manual_seed(0)
        model = DIMaskDINO(config.model).eval()
    dataset, _ = validation_images(config.data)
    batch = config.data.test_batch_size
    runs = {
        "final-layer evaluation": lambda: evaluate_model(model, dataset, batch, args.backend,
                                                         progress=False),
        "full layer probe": lambda: probe_layers(model, dataset, None, batch, args.backend,
                                                 progress=False),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up
        run()
    for round_ in range(args.repeats):
        for name in (list(runs) if round_ % 2 == 0 else list(runs)[::-1]):
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    layers = config.model.predictor.dec_layers + 1
    for line in cpu_description():
        print(line)
    print(f"{config.model.name}, {len(dataset)} images, {layers} layers probed, "
          f"{args.threads} threads, {args.backend}, {args.repeats} rounds")
    for name, values in times.items():
        print(f"  {name:<24} {statistics.median(values):7.2f} s (median; "
              f"{min(values):.2f}-{max(values):.2f})")
    ratios = [p / e for p, e in zip(times["full layer probe"], times["final-layer evaluation"],
                                    strict=True)]
    ratio = statistics.median(ratios)
    print(f"  probe / evaluation       {ratio:7.2f}x (median of the rounds' ratios, "
          f"{min(ratios):.2f}-{max(ratios):.2f}; target <= 1.20x: "
          f"{'met' if ratio <= 1.2 else 'not met'})")


if __name__ == "__main__":
    main()
