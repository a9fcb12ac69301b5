"""Dataset specs: one string names a dataset for every command.

* ``synthetic``: the built-in synthetic shapes (:mod:`dimaskdino.data.synthetic`), generated
  once into the cache directory (``$DIMASK_CACHE``, else ``~/.cache/dimask``) under
  ``synthetic-<hash of the SyntheticSpec>`` and reused by later runs. It is generated in a
  temporary folder that is renamed into place when complete, so a killed run or two runs
  starting together never leave (or read) half a dataset.
* ``coco:ROOT``: COCO 2017 as distributed: ``ROOT/annotations/instances_{split}2017.json``
  with the images in ``ROOT/{split}2017``.
* ``bdd100k:ROOT``: BDD100K instance segmentation (the 10K images), images in
  ``ROOT/images/10k/{split}``. The COCO labels are ``ROOT/coco/instances_{split}.json``
  when that file exists (e.g. written by ``dimask data prepare-bdd100k ROOT --out
  ROOT/coco``); otherwise the labels under ``ROOT/labels/ins_seg`` are converted on first
  use into the cache directory, ``bdd100k-<hash of ROOT's absolute path>``, and reused
  from there (delete that folder to convert again after the labels change).
* ``coco-json:ANN.json:IMAGE_DIR``: any COCO-format file and image folder, used for both
  splits.
* ``images:DIR``: a folder of JPEG / PNG images without annotations, for both splits
  (:class:`~dimaskdino.data.images.ImageFolder`): it can be predicted, probed for
  box-mask consistency and drawn, not trained on or scored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from dimaskdino.data.coco import DatasetError
from dimaskdino.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from dimaskdino.data.synthetic import SyntheticSpec, write_synthetic_dataset

SPLITS = ("train", "val")
FORMS = "synthetic, coco:ROOT, bdd100k:ROOT, coco-json:ANN.json:IMAGE_DIR, images:DIR"


@dataclass(frozen=True)
class DatasetSource:
    """One split of a dataset: the spec it came from, its COCO JSON (None for ``images:``)
    and its image folder."""

    spec: str
    split: str
    annotation_file: Path | None
    image_dir: Path


def default_cache_dir() -> Path:
    """Where generated and converted datasets live: ``$DIMASK_CACHE`` or ``~/.cache/dimask``."""
    configured = os.environ.get("DIMASK_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "dimask"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def synthetic_root(spec: SyntheticSpec, cache_dir: Path) -> Path:
    """The folder holding the synthetic dataset of ``spec``, generated on the first call.

    Generation happens in a fresh temporary folder beside the final one and ends with a
    rename; if another process finished first, its copy is kept and ours removed.
    """
    root = cache_dir / f"synthetic-{_short_hash(json.dumps(asdict(spec), sort_keys=True))}"
    if root.is_dir():
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=cache_dir))
    try:
        write_synthetic_dataset(staging, spec)
        os.rename(staging, root)
    except OSError:
        if not root.is_dir():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _bdd100k_annotations(root: Path, split: str, cache_dir: Path) -> Path:
    """``ROOT/coco/instances_{split}.json`` if present, else the cached conversion (made now
    when missing)."""
    from dimaskdino.data.bdd100k import prepare_bdd100k

    prepared = root / "coco" / f"instances_{split}.json"
    if prepared.is_file():
        return prepared
    out_dir = cache_dir / f"bdd100k-{_short_hash(str(root.resolve()))}"
    converted = out_dir / f"instances_{split}.json"
    if not converted.is_file():
        prepare_bdd100k(root, out_dir)
    return converted


def is_dataset_spec(spec) -> bool:
    """Whether ``spec`` has one of the forms of :data:`FORMS` (no file is looked at)."""
    if not isinstance(spec, str):
        return False
    scheme, _, rest = spec.partition(":")
    if scheme == "coco-json":
        return bool(rest.rpartition(":")[0])
    return spec == "synthetic" or (scheme in ("coco", "bdd100k", "images") and bool(rest))


def resolve_dataset(spec: str, split: str, *, synthetic_spec: SyntheticSpec | None = None,
                    cache_dir: Path | None = None) -> DatasetSource:
    """The annotation file and image folder of ``split`` (``train`` or ``val``) of ``spec``.

    ``synthetic_spec`` sets what ``synthetic`` generates (default :class:`SyntheticSpec`);
    ``cache_dir`` overrides :func:`default_cache_dir`. Raises DatasetError, one line, for
    an unknown split or form and for a missing annotation file or image folder.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose train or val")
    if not is_dataset_spec(spec):
        raise DatasetError(f"unknown dataset spec {spec!r}; valid forms: {FORMS}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    scheme, _, rest = spec.partition(":")
    if spec == "synthetic":
        root = synthetic_root(synthetic_spec or SyntheticSpec(), cache)
        annotations = root / "annotations" / f"instances_{split}.json"
        images = root / split
    elif scheme == "coco":
        root = Path(rest).expanduser()
        annotations = root / "annotations" / f"instances_{split}2017.json"
        images = root / f"{split}2017"
    elif scheme == "bdd100k":
        root = Path(rest).expanduser()
        images = root / "images" / "10k" / split
        if not images.is_dir():
            raise DatasetError(f"image folder not found: {images} (dataset {spec})")
        annotations = _bdd100k_annotations(root, split, cache)
    elif scheme == "images":
        images = Path(rest).expanduser()
        if not images.is_dir():
            raise DatasetError(f"image folder not found: {images} (dataset {spec})")
        return DatasetSource(spec, split, None, images)
    else:  # coco-json
        annotation_file, _, image_dir = rest.rpartition(":")
        annotations, images = Path(annotation_file).expanduser(), Path(image_dir).expanduser()
    if not annotations.is_file():
        raise DatasetError(f"annotation file not found: {annotations} (dataset {spec})")
    if not images.is_dir():
        raise DatasetError(f"image folder not found: {images} (dataset {spec})")
    return DatasetSource(spec, split, annotations, images)


COCO_CATEGORIES = 80  # COCO 2017's instance categories


def num_categories(spec: str) -> int:
    """The categories of ``spec``'s training split, without reading the large files of
    COCO and BDD100K (80 and 8) or generating the synthetic data (6); checks that both
    splits of the others exist."""
    from dimaskdino.data.bdd100k import CLASSES as BDD100K_CLASSES

    if spec == "synthetic":
        return len(SYNTHETIC_CLASSES)
    resolve_dataset(spec, "val")
    source = resolve_dataset(spec, "train")
    known = {"coco": COCO_CATEGORIES, "bdd100k": len(BDD100K_CLASSES)}
    kind = spec.partition(":")[0]
    if kind in known:
        return known[kind]
    with open(source.annotation_file) as handle:
        return len(json.load(handle).get("categories", []))
