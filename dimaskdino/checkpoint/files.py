"""Reading weight files: ``torch.load`` of tensors and plain containers only
(:func:`read_torch_file`: loading never runs code from the file), unpickling for
detectron2's ``.pkl`` files (:func:`unpickle`, which can run code: load only files you
trust), and :class:`CheckpointError`, the one-line error of a file that cannot be read or
does not fit the model."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from dimaskdino.errors import one_line


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; one-line message."""


def read_torch_file(path: str | Path, mmap: bool = False):
    """``torch.load`` (CPU, tensors and plain containers only: ``weights_only=True``, so
    loading never runs code from the file) with one-line errors: missing, empty, truncated
    or corrupt files, and files holding other Python objects. ``mmap``: tensors stay in the
    file until used (zip-format files only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a copy or a save that "
                              "did not finish")
    if not zipfile.is_zipfile(path) and not starts_like_a_pickle(path):
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt: it is not a complete "
                              f"PyTorch checkpoint ({path.stat().st_size} bytes; a copy or a "
                              "save that did not finish, or not written by torch.save)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL [\w.]+", str(exc))
        if found is None:  # not a pickle torch.load can read at all
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt") from None
        what = found.group(0).replace("Unsupported global: GLOBAL", "the Python class")
        raise CheckpointError(
            f"checkpoint {path} holds more than tensors and plain containers ({what}); "
            "dimask reads checkpoints with torch.load(weights_only=True) and never unpickles "
            "code from a file") from None
    except Exception as exc:
        text = str(exc)
        if "central directory" in text or isinstance(exc, EOFError):
            size = path.stat().st_size
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({size} bytes): "
                                  "a copy or a save that did not finish") from None
        raise CheckpointError(f"cannot read checkpoint {path}: {one_line(exc)}") from None


def _starts_like_a_pickle(path: Path) -> bool:
    """Pickles of protocol 2 and later (torch's legacy files, detectron2's .pkl) start with
    the PROTO opcode."""
    with path.open("rb") as f:
        return f.read(1) == b"\x80"


def starts_like_a_pickle(path: Path) -> bool:
    """Pickles of protocol 2 and later (torch's legacy files, detectron2's .pkl) start with
    the PROTO opcode."""
    with path.open("rb") as f:
        return f.read(1) == b"\x80"


def unpickle(path: Path):
    """The object pickled in ``path`` (detectron2's ``.pkl``: it can run code, load only
    files you trust); CheckpointError for a file that is not a pickle or does not load."""
    if not starts_like_a_pickle(path):
        raise CheckpointError(f"{path} is not a pickle file")
    with path.open("rb") as f:
        try:
            return pickle.load(f, encoding="latin1")
        except Exception as exc:
            raise CheckpointError(f"cannot unpickle {path}: {one_line(exc)}") from None
