"""The cost of the layer probe during training: the ``tiny`` preset trained with probing at
its default ``solver.probe_period`` and with probing off, side by side in one process,
interleaved ``--rounds`` times (medians); also the wall time of one probe on the tiny val
split and the overhead a few other periods would have.

    .venv/bin/python benchmarks/probe_training.py
    .venv/bin/python benchmarks/probe_training.py --iters 200 --rounds 3 --model maskdino

Both runs train the same iterations (bitwise the same weights: probing draws no random
number training would); the probed run also probes every period and at the end. The
overhead is (probed - off) / off of the whole ``Trainer.run`` (its final evaluation
included in both).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from train import cpu_description  # benchmarks/train.py: run as a script, its folder is on the path


def timed_run(config, out: Path) -> tuple[float, list[float]]:
    """Wall time of training ``config`` into ``out`` and of each probe it ran."""
    from dimaskdino.engine.trainer import Trainer

    trainer = Trainer(config, out, progress=False)
    probes: list[float] = []
    probe = trainer._probe

    def timed_probe(iteration: int) -> None:
        started = time.perf_counter()
        probe(iteration)
        probes.append(time.perf_counter() - started)

    trainer._probe = timed_probe
    started = time.perf_counter()
    trainer.run()
    return time.perf_counter() - started, probes


def main() -> None:
    from dimaskdino.config import apply_overrides, preset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dimaskdino", help="dimaskdino | maskdino")
    parser.add_argument("--iters", type=int, default=None,
                        help="training iterations (default: the preset's max_iter)")
    parser.add_argument("--rounds", type=int, default=1, help="off / on pairs (medians)")
    args = parser.parse_args()
    base = preset("tiny", args.model)
    period = base.solver.probe_period
    if not period:
        parser.error("the tiny preset has no default solver.probe_period")
    iters = args.iters or base.solver.max_iter
    schedule = [f"solver.max_iter={iters}", f"solver.steps=[{max(1, iters * 5 // 6)}]",
                "solver.checkpoint_period=0"]
    variants = {"off": [*schedule, "solver.probe_period=0"],
                "on": [*schedule, f"solver.probe_period={period}"]}
    for line in cpu_description():
        print(line)
    print(f"tiny preset ({args.model}), {iters} iterations, probe period {period}, "
          f"{args.rounds} round(s)")
    walls: dict[str, list[float]] = {name: [] for name in variants}
    probes: list[float] = []
    with tempfile.TemporaryDirectory() as root:
        for round_ in range(args.rounds):
            for name, overrides in variants.items():
                out = Path(root) / f"{name}-{round_}"
                wall, took = timed_run(apply_overrides(base, overrides), out)
                walls[name].append(wall)
                probes += took
                print(f"round {round_ + 1}: probing {name}: {wall:.1f} s"
                      + (f" ({len(took)} probes, {sum(took):.1f} s)" if took else ""))
    off, on = (statistics.median(walls[name]) for name in ("off", "on"))
    probe = statistics.median(probes)
    per_iteration = off / iters  # training time per iteration, final evaluation included
    print(f"median: off {off:.1f} s, on {on:.1f} s, on / off = {on / off:.3f} "
          f"(overhead {100 * (on / off - 1):+.1f}%)")
    print(f"one probe: {probe:.2f} s (median of {len(probes)}); one training iteration: "
          f"{per_iteration:.3f} s")
    for other in sorted({10, 25, 50, 100, 200, period}):
        print(f"  period {other}: expected overhead {100 * probe / (other * per_iteration):.1f}%")


if __name__ == "__main__":
    main()
