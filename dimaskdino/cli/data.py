"""``dimask data``: convert BDD100K to COCO JSON and check a dataset before training on it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dimaskdino.cli.errors import fail
from dimaskdino.data.coco import DatasetError

out = Console(soft_wrap=True)

data_app = typer.Typer(
    help="Prepare and check datasets (specs: synthetic, coco:ROOT, bdd100k:ROOT, "
         "coco-json:ANN.json:IMAGE_DIR, images:DIR).",
    no_args_is_help=True,
)


@data_app.command("prepare-bdd100k")
def prepare_bdd100k_command(
    root: Annotated[Path, typer.Argument(
        help="BDD100K folder with images/10k/{train,val} and labels/ins_seg/{bitmasks,rles}.",
        show_default=False)],
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Where to write instances_train.json and instances_val.json "
                      "(ROOT/coco is where bdd100k:ROOT looks first).", show_default=False)],
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Convert BDD100K instance-segmentation labels (bitmasks or RLE JSON) to COCO JSON."""
    from dimaskdino.data.bdd100k import prepare_bdd100k

    try:
        summary = prepare_bdd100k(root, out_dir, progress=not quiet)
    except DatasetError as exc:
        raise fail(str(exc)) from None
    splits = summary["splits"]
    table = Table(title=f"BDD100K {summary['root']}")
    table.add_column("")
    for split in splits:
        table.add_column(split, justify="right")
    rows = (("labels", "labels"), ("images", "images"), ("annotations", "annotations"),
            ("crowd or ignore", "crowd"), ("empty masks", "empty_masks"),
            ("missing images", "missing_images"))
    for title, key in rows:
        table.add_row(title, *(str(row[key]) for row in splits.values()))
    table.add_row("dropped", *(", ".join(f"{name}: {n}" for name, n in row["dropped"].items())
                               or "-" for row in splits.values()))
    out.print(table)
    for split, row in splits.items():
        out.print(f"{split}: {row['annotation_file']}", markup=False, highlight=False)


def summary_table(spec: str, split: str, report) -> Table:
    """The counts of a :class:`~dimaskdino.data.check.CheckReport`: a COCO dataset's
    images, annotations and categories, or an image folder's images, modes and sizes."""
    folder = report.annotation_file is None
    source = report.image_dir if folder else report.annotation_file
    table = Table(title=f"{spec} ({split}): {source}", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    if folder:
        rows = [("images", report.images), ("turned upright (EXIF)", report.rotated),
                *((f"  mode {mode}", n) for mode, n in report.modes.items())]
        if report.sizes:
            rows += [(f"{what} (W x H)", f"{w} x {h}")
                     for what, (w, h) in zip(("smallest", "largest"), report.sizes)]
    else:
        rows = [("images", report.images), ("annotations", report.annotations),
                ("categories", report.categories), ("crowd annotations", report.crowd),
                ("images without annotations", report.images_without_annotations),
                *((f"  {name}", n) for name, n in report.per_category.items())]
    for what, count in rows:
        table.add_row(what, str(count))
    return table


@data_app.command("check")
def check_command(
    spec: Annotated[str, typer.Argument(
        help="Dataset spec: synthetic, coco:ROOT, bdd100k:ROOT, coco-json:ANN.json:IMAGE_DIR "
             "or images:DIR (a folder of images without annotations).",
        show_default=False)],
    split: Annotated[str, typer.Option(help="train | val")] = "train",
    quick: Annotated[bool, typer.Option(
        "--quick", help="Only read image headers (PIL verify) instead of decoding every image; "
                        "misses truncated JPEGs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Check a dataset split: print a summary and every problem; exit 1 if any problem."""
    from dimaskdino.data.check import check_dataset
    from dimaskdino.data.specs import resolve_dataset

    try:
        source = resolve_dataset(spec, split)
    except DatasetError as exc:
        raise fail(str(exc)) from None
    report = check_dataset(source, decode_images=not quick, progress=not quiet)
    out.print(summary_table(spec, split, report))
    if report.images_without_annotations:
        out.print(f"warning: {report.images_without_annotations} images have no annotations",
                  markup=False, highlight=False)
    for problem in report.problems:
        out.print(str(problem), markup=False, highlight=False)
    if not report.ok:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(report.kinds().items()))
        out.print(f"{len(report.problems)} problems ({kinds})", markup=False, highlight=False)
        raise typer.Exit(code=1)
    out.print("no problems found", markup=False, highlight=False)
