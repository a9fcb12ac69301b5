"""Training checkpoints: model, optimizer, iteration, random state and the config.

Files are ``model_{iteration:07d}.pth`` and ``model_final.pth`` in the run directory, with
``last_checkpoint`` naming the newest; every file is written to a temporary name and then
renamed, so a killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dimaskdino.checkpoint import TRAINING_FORMAT, checked_checkpoint, read_torch_file
from dimaskdino.fileio import atomic_save, atomic_write_text

LAST = "last_checkpoint"


def save_checkpoint(directory: Path, name: str, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, iteration: int, config: dict,
                    extra: dict | None = None) -> Path:
    """Write ``directory/name`` and point ``last_checkpoint`` at it."""
    path = Path(directory) / name
    atomic_save({"format": TRAINING_FORMAT, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict() if optimizer is not None else None,
                 "iteration": iteration, "config": config,
                 "rng": torch.get_rng_state(), **(extra or {})}, path)
    atomic_write_text(path.parent / LAST, name)
    return path


def last_checkpoint(directory: Path) -> Path | None:
    """The checkpoint ``last_checkpoint`` names, or None."""
    pointer = Path(directory) / LAST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if path.is_file() else None


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (on the CPU)."""
    return checked_checkpoint(read_torch_file(path), path)
