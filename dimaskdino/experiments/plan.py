"""A study at one scale, expanded into cell jobs: one per (cell, seed), each with every
override it needs and its own directory ``OUT/STUDY/SCALE/CELL/seedS`` (``SCALE-swinl`` on
the Swin-L backbone).

Overrides apply in this order: the scale's (dataset, schedule), the user's ``--set`` items,
the cell's own (scaled at the tiny scale, so a cell's switches win over ``--set``), then
``solver.seed=S``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from dimaskdino.config import ConfigError, ExperimentConfig, apply_overrides, config_to_dict, preset
from dimaskdino.config_check import check_runnable
from dimaskdino.experiments.registry import Study
from dimaskdino.experiments.scales import scale_base, scale_selection, tiny_factor


@dataclass(frozen=True)
class CellJob:
    """One training run + layer probe; plain fields only (it is pickled to Slurm jobs)."""

    study: str
    cell: str
    model: str
    scale: str
    seed: int
    preset: str
    overrides: tuple[str, ...]  # all of them, applied to ``preset(preset, model)`` in order
    cell_overrides: tuple[str, ...]  # the cell's own (after scaling), for display
    output_dir: str
    precision: str = "auto"  # the probe's and the gallery's (training: solver.precision)

    @property
    def label(self) -> str:
        """``modules/di+bato seed 0``."""
        return f"{self.study}/{self.cell} seed {self.seed}"

    def config(self) -> ExperimentConfig:
        """The experiment this job trains."""
        return apply_overrides(preset(self.preset, self.model), list(self.overrides))


def config_hash(config: ExperimentConfig) -> str:
    """A short fingerprint of a config (to tell a rerun from a changed study)."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_study(study: Study, scale: str, seeds: int, data: str | None,
               sets: list[str], out: Path, backbone: str = "r50") -> list[CellJob]:
    """The jobs of ``study`` at ``scale`` (on ``backbone``), seeds ``0..seeds-1``,
    cell-major; every config is built once here, so a bad ``--set`` or cell override fails
    before anything runs."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, not {seeds}")
    base = scale_base(scale, study, data, backbone=backbone, sets=tuple(sets))
    # a Swin-L study keeps its cells apart from the R50 one's: OUT/STUDY/SCALE-swinl/...
    folder = scale if backbone == "r50" else f"{scale}-{backbone}"
    jobs = []
    for cell in study.cells:
        own = scale_selection(cell.overrides, tiny_factor()) if scale == "tiny" \
            else cell.overrides
        for seed in range(seeds):
            job = CellJob(study.name, cell.name, cell.model, scale, seed, base.preset,
                          (*base.overrides, *sets, *own, f"solver.seed={seed}"), own,
                          str(out / study.name / folder / cell.name / f"seed{seed}"))
            check_runnable(job.config())
            jobs.append(job)
    return jobs
