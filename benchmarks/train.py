"""Training speed of the tiny models: images/s of the real Trainer with a time breakdown.

Every variant (model x precision x batch, and with ``--against REV`` the same models of
another revision of dimask) trains ``--iters`` iterations of the ``tiny`` preset in a fresh
process; the variants run round-robin (interleaved) ``--rounds`` times and the table shows
medians. The first ``--warmup`` iterations of every run are not timed. The breakdown is
wall time per iteration: data (loading, augmentation, batching), forward (the model),
matching (the Hungarian matcher), losses (the rest of the criterion), backward, optimizer
(clipping + AdamW) and other (the loop's own work: schedule, logging, progress). It is
measured by wrapping those functions, so it reads any revision with the same structure.

    .venv/bin/python benchmarks/train.py --against 22b4eb9 --rounds 3
    .venv/bin/python benchmarks/train.py --batch 4,16 --models maskdino

``--precision fp32,bf16`` times the precisions of ``solver.precision`` where this tree's
config has it (otherwise only fp32 exists); a revision given with ``--against`` runs as it
shipped (its preset's precision).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("data", "forward", "matching", "losses", "backward", "optimizer", "other")
BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f")


def cpu_description() -> list[str]:
    """The CPU model, its bf16-relevant flags (from /proc/cpuinfo) and torch's capability."""
    import torch

    model, flags = "unknown CPU", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        if found := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            model = found.group(1).strip()
        if found := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
            flags = set(found.group(1).split())
    except OSError:
        pass
    have = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in BF16_FLAGS)
    native = "yes" if {"amx_bf16", "avx512_bf16"} & flags else "no"
    return [f"cpu: {model}, {os.cpu_count()} logical cores",
            f"bf16: {have}; native bf16 units: {native}; "
            f"torch.backends.cpu.get_cpu_capability() = {torch.backends.cpu.get_cpu_capability()}",
            f"torch {torch.__version__}"]


def precision_field() -> bool:
    """Whether this tree's SolverConfig has ``precision`` (the bf16 training switch)."""
    from dimaskdino.config import SolverConfig

    return "precision" in {f.name for f in dataclasses.fields(SolverConfig)}


# ---------------------------------------------------------------------------- worker


class PhaseTimer:
    """Inclusive wall time per phase, counted only while ``active`` (the timed iterations);
    a phase entered again from inside itself is not counted twice."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.inside: set[str] = set()
        self.active = False

    def wrap(self, phase: str, function):
        import torch

        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

        def timed(*args, **kwargs):
            if not self.active or phase in self.inside:
                return function(*args, **kwargs)
            self.inside.add(phase)
            sync()
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                sync()
                self.totals[phase] += time.perf_counter() - start
                self.inside.discard(phase)
        return timed


def instrument(warmup: int) -> tuple[PhaseTimer, list[float]]:
    """Wrap the trainer's loader and the step's parts in a :class:`PhaseTimer`; returns it
    and the list that gets the start time of every iteration (and the loop's end)."""
    import torch

    from dimaskdino.engine import trainer as trainer_module
    from dimaskdino.modeling.criterion import SetCriterion
    from dimaskdino.modeling.matcher import HungarianMatcher
    from dimaskdino.modeling.model import DIMaskDINO

    timer, marks = PhaseTimer(), []
    real_loader = trainer_module.training_loader

    def timed_loader(*loader_args, **loader_kwargs):
        iterator = iter(real_loader(*loader_args, **loader_kwargs))
        while True:
            marks.append(time.perf_counter())  # an iteration ends, the next one starts
            if len(marks) == warmup + 1:
                timer.totals = dict.fromkeys(PHASES, 0.0)
                timer.active = True
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                timer.active = False
                return
            if timer.active:
                timer.totals["data"] += time.perf_counter() - start
            yield item

    trainer_module.training_loader = timed_loader
    DIMaskDINO.prepare_training_batch = timer.wrap("data", DIMaskDINO.prepare_training_batch)
    DIMaskDINO.forward = timer.wrap("forward", DIMaskDINO.forward)
    for name in ("forward", "match_stages"):  # match_stages: the batched matcher
        if hasattr(HungarianMatcher, name):
            setattr(HungarianMatcher, name, timer.wrap("matching",
                                                       getattr(HungarianMatcher, name)))
    SetCriterion.forward = timer.wrap("losses", SetCriterion.forward)
    torch.Tensor.backward = timer.wrap("backward", torch.Tensor.backward)
    torch.optim.AdamW.step = timer.wrap("optimizer", torch.optim.AdamW.step)
    torch.nn.utils.clip_grad_norm_ = timer.wrap("optimizer", torch.nn.utils.clip_grad_norm_)

    return timer, marks


def run_worker(args: argparse.Namespace) -> None:
    """Train one variant in this process; print one JSON line of its timings."""
    import torch

    from dimaskdino.config import apply_overrides, preset
    from dimaskdino.engine import trainer as trainer_module

    torch.set_num_threads(args.threads)
    config = preset("tiny", args.model)
    inside = [step for step in config.solver.steps if step <= args.iters]  # the ones that run
    overrides = [f"solver.max_iter={args.iters}", f"solver.steps={inside}",
                 "solver.checkpoint_period=0",
                 "solver.eval_period=0", "data.synthetic.num_val=2", *args.set]
    if args.batch:
        overrides.append(f"solver.batch_size={args.batch}")
    if args.precision != "preset":
        if precision_field():
            overrides.append(f"solver.precision={args.precision}")
        elif args.precision != "fp32":
            sys.exit(f"error: this tree has no solver.precision, so no {args.precision}")
    config = apply_overrides(config, overrides)

    timer, marks = instrument(args.warmup)
    with tempfile.TemporaryDirectory() as out:
        trainer_module.Trainer(config, Path(out) / "run", progress=False).run()
    timed = len(marks) - 1 - args.warmup
    wall = marks[-1] - marks[args.warmup]
    totals = dict(timer.totals)
    totals["losses"] -= totals["matching"]  # the criterion's time besides matching
    totals["other"] = wall - sum(totals[p] for p in PHASES if p != "other")
    batch = config.solver.batch_size
    print(json.dumps({"images_per_s": timed * batch / wall, "batch": batch,
                      "iterations": timed,
                      "ms_per_iteration": {p: 1000 * totals[p] / timed for p in PHASES}}))


# ------------------------------------------------------------------------------ main


def export_revision(rev: str, into: Path) -> Path:
    """``git archive`` of ``rev`` unpacked under ``into``: a tree to put on PYTHONPATH."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev],
                             capture_output=True, check=False)
    if archive.returncode:
        sys.exit(f"error: cannot export {rev}: {archive.stderr.decode().strip()}")
    target = into / rev.replace("/", "_")
    target.mkdir(parents=True)
    with tempfile.TemporaryFile() as tar:
        tar.write(archive.stdout)
        tar.seek(0)
        tarfile.open(fileobj=tar).extractall(target, filter="data")
    return target


def measure(variant: dict, args: argparse.Namespace) -> dict:
    """One worker run of ``variant`` (its tree on PYTHONPATH); its JSON record."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker",
               "--model", variant["model"], "--precision", variant["precision"],
               "--iters", str(args.iters), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--batch", str(variant["batch"] or 0),
               *[f"--set={s}" for s in args.set]]
    env = {**os.environ, "PYTHONPATH": str(variant["tree"]),
           "OMP_NUM_THREADS": str(args.threads)}
    if variant["rev"] is not None:  # its own kernel cache: one shared with this tree would
        # be rebuilt at every switch (same sources at another path)
        base = os.environ.get("DIMASK_EXTENSIONS_DIR") or Path.home() / ".cache/dimask/extensions"
        env["DIMASK_EXTENSIONS_DIR"] = str(Path(base) / f"rev-{variant['rev']}")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        sys.exit(f"error: {variant['name']} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(variants: list[dict], results: dict[str, list[dict]], batches: list,
           args, rounds: int) -> None:
    print(f"\n{args.iters} iterations per run ({args.warmup} untimed), {rounds} rounds, "
          f"{args.threads} threads; medians (images/s: min-max over rounds)\n")
    header = ("| variant | batch | images/s | " + " | ".join(f"{p} ms" for p in PHASES)
              + " | ms/iteration |")
    print(header)
    print("|" + "---|" * 2 + "---:|" * (len(PHASES) + 2))
    medians = {}
    for v in variants:
        runs = results[v["name"]]
        rates = [r["images_per_s"] for r in runs]
        medians[v["name"]] = statistics.median(rates)
        phases = {p: statistics.median(r["ms_per_iteration"][p] for r in runs) for p in PHASES}
        print(f"| {v['name']} | {runs[0]['batch']} | {medians[v['name']]:.1f} "
              f"({min(rates):.1f}-{max(rates):.1f}) | "
              + " | ".join(f"{phases[p]:.1f}" for p in PHASES)
              + f" | {sum(phases.values()):.1f} |")
    print()
    for v in variants:
        if v["rev"] is not None:
            continue
        for base in variants:
            same_model = base["model"] == v["model"]
            against = base["rev"] is not None and base["batch"] == v["batch"]
            smaller = base["rev"] is None and base["precision"] == v["precision"] \
                and base["batch"] == batches[0] and v["batch"] != batches[0]
            if same_model and (against or smaller):
                ratio = medians[v["name"]] / medians[base["name"]]
                print(f"{v['name']} / {base['name']}: {ratio:.2f}x images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="maskdino,dimaskdino")
    parser.add_argument("--precision", default="fp32",
                        help="comma-separated: fp32, bf16, auto (solver.precision), preset")
    parser.add_argument("--batch", default="", help="comma-separated batch sizes "
                        "(default: the preset's)")
    parser.add_argument("--against", default=None, metavar="REV",
                        help="also time the tiny preset of this git revision")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every variant")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # the tree to time is on PYTHONPATH
        args.batch = int(args.batch or 0)
        run_worker(args)
        return
    sys.path.insert(0, str(ROOT))  # this tree's dimaskdino for the checks below
    if args.iters <= args.warmup:
        sys.exit("error: --iters must exceed --warmup")
    precisions = args.precision.split(",")
    if not precision_field() and set(precisions) - {"fp32", "preset"}:
        sys.exit("error: this tree's config has no solver.precision: only fp32 can be timed")
    batches = [int(b) for b in args.batch.split(",") if b] or [None]
    for line in cpu_description():
        print(line)
    with tempfile.TemporaryDirectory() as tmp:
        against = export_revision(args.against, Path(tmp)) if args.against else None
        variants = []
        for model in args.models.split(","):
            for batch in batches:
                suffix = f" batch {batch}" if batch else ""
                if against:
                    variants.append({"name": f"{model} @{args.against}{suffix}",
                                     "model": model, "precision": "preset", "batch": batch,
                                     "tree": against, "rev": args.against})
                variants += [{"name": f"{model} {precision}{suffix}", "model": model,
                              "precision": precision, "batch": batch, "tree": ROOT,
                              "rev": None} for precision in precisions]
        results: dict[str, list[dict]] = {v["name"]: [] for v in variants}
        for round_ in range(args.rounds):
            for v in variants:
                results[v["name"]].append(measure(v, args))
                rate = results[v["name"]][-1]["images_per_s"]
                print(f"round {round_ + 1}: {v['name']}: {rate:.1f} images/s", flush=True)
            report(variants, results, batches, args, round_ + 1)  # a usable table each round


if __name__ == "__main__":
    main()
