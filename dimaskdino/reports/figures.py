"""The report's figures, drawn with seaborn on matplotlib's Agg canvas in one style: the
Figure 1-style first / last layer bars, per-layer AP curves, the per-layer gap
(AP mask - AP box), the training loss and, from the layer probe during training, the
imbalance over training (first / last layer AP and the gap against iteration, the gap per
layer and iteration); each is kept as PNG bytes and SVG text.

Figures are built on :class:`matplotlib.figure.Figure` objects (no pyplot state), inside
:func:`style` (seaborn's whitegrid theme and colour-blind palette as an rc context).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import matplotlib as mpl
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dimaskdino.reports.runs import Section

MODEL_NAMES = {"maskdino": "MaskDINO", "dimaskdino": "DI-MaskDINO"}
TASKS = {"ap_box": "detection (AP box)", "ap_mask": "segmentation (AP mask)"}
# Figure 1 adds the box AP of each detection's mask's tight box (the probe's mask-box task)
MASK_BOX = {"ap_mask_box": "boxes of the masks (AP mask-box)"}
DPI = 110


@dataclass(frozen=True)
class Chart:
    """A rendered figure: file-name ``stem``, ``title``, ``caption``, ``png`` bytes and
    ``svg`` text."""

    stem: str
    title: str
    caption: str
    png: bytes
    svg: str


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The report's look: seaborn whitegrid + notebook context, colour-blind palette."""
    palette = sns.color_palette("colorblind")
    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85),
          "axes.prop_cycle": mpl.cycler(color=palette), "svg.hashsalt": "dimask",
          "figure.dpi": DPI}
    with mpl.rc_context(rc):
        yield


def _render(figure: Figure, stem: str, title: str, caption: str) -> Chart:
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontweight="bold")
    png, svg = io.BytesIO(), io.StringIO()
    figure.savefig(png, format="png", dpi=DPI)
    figure.savefig(svg, format="svg", metadata={"Date": None})
    return Chart(stem, title, caption, png.getvalue(), svg.getvalue())


def _tidy_layers(layers: pd.DataFrame, tasks: dict[str, str] = TASKS) -> pd.DataFrame:
    """Long form: the columns other than those of ``tasks``, task (its label), AP; the
    tasks a run did not log (no column, or NaN) left out."""
    keep = [c for c in layers.columns if c not in {**TASKS, **MASK_BOX}]
    found = [task for task in tasks if task in layers.columns]
    long = layers.melt(keep, found, "task", "AP").dropna(subset=["AP"])
    return long.assign(task=long["task"].map(tasks))


def _panels(count: int, width: float = 3.2, height: float = 2.8) -> tuple[Figure, list]:
    """A figure of ``count`` panels, at most four a row, each with its own y-axis (a cell
    whose AP is far above another's must not be cut by that one's scale); the unused
    panels hidden."""
    columns = min(4, count)
    rows = -(-count // columns)
    figure = Figure(layout="constrained", figsize=(width * columns + 0.6, height * rows + 0.8))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return figure, list(axes[:count])


def figure_one_cells(section: Section) -> tuple[str, str] | None:
    """The (MaskDINO, DI-MaskDINO) cells of ``section`` for Figure 1: its first MaskDINO
    cell and its DI-MaskDINO cell without overrides (else its first one), both with runs;
    None if it lacks either."""
    ran = set(section.runs["cell"])
    cells = [c for c in section.study.cells if c.name in ran]
    mask = [c.name for c in cells if c.model == "maskdino"]
    di = sorted((c for c in cells if c.model == "dimaskdino"), key=lambda c: len(c.overrides))
    return (mask[0], di[0].name) if mask and di else None


def figure_one(section: Section, cells: tuple[str, str]) -> Chart:
    """Figure 1 (c, d): AP box and AP mask at the first and at the last decoder layer of
    the MaskDINO and the DI-MaskDINO ``cells`` of ``section`` (mean over seeds, bars ±
    std)."""
    layers = section.layers[section.layers["cell"].isin(cells)]
    last = layers.groupby("cell")["layer"].transform("max")
    ends = layers[(layers["layer"] == 0) | (layers["layer"] == last)]
    ends = ends.assign(position=["first layer" if layer == 0 else "last layer"
                                 for layer in ends["layer"]])
    tidy = _tidy_layers(ends, {**TASKS, **MASK_BOX})
    hue_order = [label for label in (*TASKS.values(), *MASK_BOX.values())
                 if label in set(tidy["task"])]
    model = dict(zip(section.runs["cell"], section.runs["model"]))
    with style():
        figure = Figure(layout="constrained", figsize=(8, 3.6))
        axes = figure.subplots(1, 2, sharey=True)
        for ax, cell in zip(axes, cells):
            cell_rows = tidy[tidy["cell"] == cell]
            sns.barplot(cell_rows, x="position", y="AP", hue="task", errorbar="sd", ax=ax,
                        order=["first layer", "last layer"], hue_order=hue_order)
            for bars in ax.containers:
                ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
            ax.set(title=f"{MODEL_NAMES.get(model[cell], model[cell])} ({cell})", xlabel="")
            ax.legend_.remove()
        # after both panels: the shared axis then spans the taller one's bars and labels
        axes[0].set_ylim(0, axes[0].get_ylim()[1] * 1.08)
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncol=len(hue_order),
                      frameon=False)
        return _render(figure, "figure-1", "Figure 1: first vs last decoder layer",
                       f"{section.study.name} at scale {section.scale} on {section.dataset}: "
                       "AP box and AP mask at the first (0) and the last decoder layer, mean "
                       "over seeds (error bars: std); AP mask-box: the box AP of each "
                       "detection's mask's tight box (same detections and scores), well "
                       "above AP box where the box head, not the features, lags.")


def layer_curves(section: Section) -> Chart:
    """AP box and AP mask per decoder layer, one panel per cell with its own y-axis (mean ±
    std band)."""
    tidy = _tidy_layers(section.layers)
    cells = list(dict.fromkeys(section.runs["cell"]))
    with style():
        figure, axes = _panels(len(cells))
        for ax, cell in zip(axes, cells):
            sns.lineplot(tidy[tidy["cell"] == cell], x="layer", y="AP", hue="task",
                         hue_order=list(TASKS.values()), errorbar="sd", marker="o", ax=ax)
            ax.set(title=cell, xticks=sorted(set(section.layers["layer"])))
            ax.set_ylim(bottom=0)
            ax.legend_.remove()
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False)
        return _render(figure, f"{section.key}-layer-ap", "AP per decoder layer",
                       "AP box and AP mask of every decoder layer (layer probe), mean over "
                       "seeds with a ± std band; each panel has its own AP scale.")


def layer_gap(section: Section) -> Chart:
    """AP mask - AP box per decoder layer, one line per cell (mean ± std band)."""
    gap = section.layers.assign(gap=section.layers["ap_mask"] - section.layers["ap_box"])
    with style():
        figure = Figure(layout="constrained", figsize=(6, 3.6))
        ax = figure.subplots()
        sns.lineplot(gap, x="layer", y="gap", hue="cell", errorbar="sd", marker="o", ax=ax)
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set(ylabel="AP mask - AP box", xticks=sorted(set(gap["layer"])))
        return _render(figure, f"{section.key}-layer-gap", "Detection-segmentation gap per "
                       "layer", "AP mask - AP box at every decoder layer (positive: "
                       "detection lags behind segmentation), mean over seeds ± std.")


def loss_curves(section: Section) -> Chart:
    """The total training loss per iteration, one line per cell (mean ± std band)."""
    with style():
        figure = Figure(layout="constrained", figsize=(6, 3.6))
        ax = figure.subplots()
        sns.lineplot(section.losses, x="iteration", y="loss", hue="cell", errorbar="sd",
                     ax=ax)
        if (section.losses["loss"] > 0).all():
            ax.set_yscale("log")
        return _render(figure, f"{section.key}-loss", "Training loss",
                       "Total training loss (weighted sum of all terms) per iteration, mean "
                       "over seeds ± std.")


def _diagnostic(section: Section, prefix: str) -> pd.DataFrame:
    """The section's diagnostics whose metric starts with ``prefix`` (see
    :class:`~dimaskdino.reports.runs.Section`), the prefix cut from the metric names."""
    found = section.diagnostics[section.diagnostics["metric"].str.startswith(prefix)]
    return found.assign(metric=found["metric"].str.removeprefix(prefix))


def tide_bars(section: Section, cells: tuple[str, str]) -> Chart | None:
    """TIDE's delta AP per error type at the first and the last decoder layer, box vs mask,
    for the MaskDINO and the DI-MaskDINO ``cells`` (mean over seeds, bars ± std); None
    when the runs logged no errors."""
    from dimaskdino.engine.evaluator import TIDE_ERRORS

    tide = _diagnostic(section, "tide_")
    tide = tide[tide["cell"].isin(cells)]
    if tide.empty:
        return None
    parts = tide["metric"].str.rpartition("_")
    names = {e.lower(): e for e in TIDE_ERRORS}
    last = tide.groupby("cell")["layer"].transform("max")
    tide = tide.assign(error=parts[0].map(names), task=parts[2], dAP=tide["value"])
    tide = tide[(tide["layer"] == 0) | (tide["layer"] == last)]
    tide = tide.assign(position=["first layer" if layer == 0 else "last layer"
                                 for layer in tide["layer"]])
    model = dict(zip(section.runs["cell"], section.runs["model"]))
    with style():
        figure = Figure(layout="constrained", figsize=(10, 6.4))
        axes = figure.subplots(2, 2, sharey=True, sharex=True)
        for row, cell in zip(axes, cells):
            for ax, position in zip(row, ("first layer", "last layer")):
                cell_rows = tide[(tide["cell"] == cell) & (tide["position"] == position)]
                sns.barplot(cell_rows, x="error", y="dAP", hue="task", errorbar="sd", ax=ax,
                            order=list(TIDE_ERRORS), hue_order=["box", "mask"])
                ax.set(title=f"{MODEL_NAMES.get(model[cell], model[cell])} ({cell}), "
                             f"{position}", xlabel="", ylabel="TIDE dAP")
                ax.legend_.remove()
        handles, labels = axes[0][0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False)
        return _render(figure, "tide-errors", "Why detection lags: TIDE errors, first vs last "
                       "layer", f"{section.study.name} at scale {section.scale} on "
                       f"{section.dataset}: how much AP50 each error type costs (TIDE delta "
                       "AP, match IoU 0.5, background IoU 0.1) for boxes and masks, at the "
                       "first (0) and the last decoder layer, mean over seeds (error bars: "
                       "std). Loc: localization; Cls: class; Both: class and location; Dupe: "
                       "duplicate; Bkg: background; Miss: missed object; FP / FN: every "
                       "false positive / negative.")


def consistency_curve(section: Section) -> Chart | None:
    """Box-mask consistency (mean IoU of each detection's box with its mask's tight box)
    per decoder layer, one line per cell (mean ± std band); None when not logged."""
    found = _diagnostic(section, "consistency_")
    found = found[found["metric"] == "mean_iou"]
    if found.empty:
        return None
    with style():
        figure = Figure(layout="constrained", figsize=(6, 3.6))
        ax = figure.subplots()
        sns.lineplot(found, x="layer", y="value", hue="cell", errorbar="sd", marker="o", ax=ax)
        ax.set(ylabel="mean box-mask IoU", xticks=sorted(set(found["layer"])), ylim=(0, 1.02))
        return _render(figure, f"{section.key}-consistency", "Box-mask consistency per layer",
                       "Mean IoU between each detection's box and the tight box of its own "
                       "mask at every decoder layer (no labels needed; 1 = the box fits its "
                       "mask), mean over seeds ± std.")


HISTORY_TASKS = {"box": TASKS["ap_box"], "mask": TASKS["ap_mask"]}


def _first_last(history: pd.DataFrame) -> pd.DataFrame:
    """The box and mask rows of ``history`` at the first layer and at each cell's last one,
    with ``position`` (first / last layer) and ``task`` as its :data:`TASKS` label."""
    found = history[history["task"].isin(list(HISTORY_TASKS))]
    last = found.groupby("cell")["layer"].transform("max")
    found = found[(found["layer"] == 0) | (found["layer"] == last)]
    return found.assign(position=["first layer" if layer == 0 else "last layer"
                                  for layer in found["layer"]],
                        task=found["task"].map(HISTORY_TASKS))


def _first_layer_gap(history: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, seed, iteration, layer): ``gap`` = AP mask - AP box."""
    wide = history.pivot_table(index=["cell", "seed", "iteration", "layer"], columns="task",
                               values="AP").reset_index()
    return wide.assign(gap=wide["mask"] - wide["box"])


def training_curves(section: Section) -> Chart | None:
    """AP box and AP mask of the first and the last decoder layer against iteration, one
    panel per cell (mean over seeds, ± std band); None without a probe history."""
    if section.history.empty:
        return None
    tidy = _first_last(section.history)
    cells = [c for c in dict.fromkeys(section.runs["cell"]) if c in set(tidy["cell"])]
    with style():
        figure, axes = _panels(len(cells), width=3.6)
        for ax, cell in zip(axes, cells):
            sns.lineplot(tidy[tidy["cell"] == cell], x="iteration", y="AP", hue="task",
                         style="position", hue_order=list(HISTORY_TASKS.values()),
                         style_order=["first layer", "last layer"], errorbar="sd", ax=ax)
            ax.set(title=cell)
            ax.set_ylim(bottom=0)
            ax.legend_.remove()
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False)
        return _render(figure, f"{section.key}-training-ap", "AP of the first and the last "
                       "layer over training", "Layer probe during training "
                       "(solver.probe_period): AP box and AP mask of the first (0) and the "
                       "last decoder layer at every probed iteration, mean over seeds with a "
                       "± std band; each panel has its own AP scale.")


def gap_over_training(section: Section, cells: tuple[str, str]) -> Chart | None:
    """The first-layer gap (AP mask - AP box) against iteration of the MaskDINO and the
    DI-MaskDINO ``cells`` on one plot (mean over seeds, ± std band); None without their
    histories."""
    history = section.history[section.history["cell"].isin(cells)]
    if history.empty:
        return None
    gap = _first_layer_gap(history)
    gap = gap[gap["layer"] == 0]
    model = dict(zip(section.runs["cell"], section.runs["model"]))
    gap = gap.assign(model=[f"{MODEL_NAMES.get(model[c], model[c])} ({c})" for c in gap["cell"]])
    with style():
        figure = Figure(layout="constrained", figsize=(6, 3.6))
        ax = figure.subplots()
        sns.lineplot(gap, x="iteration", y="gap", hue="model", errorbar="sd", marker="o", ax=ax)
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set(ylabel="first-layer AP mask - AP box")
        caption = ("AP mask - AP box of the first decoder layer at every probed iteration "
                   "(positive: detection lags behind segmentation), mean over seeds ± std.")
        return _render(figure, f"{section.key}-training-gap",
                       "The first-layer gap over training", caption)


def gap_heatmap(section: Section, cells: tuple[str, str]) -> Chart | None:
    """The gap (AP mask - AP box) per decoder layer and probed iteration, one heat map per
    cell of ``cells`` (mean over seeds); None without their histories."""
    history = section.history[section.history["cell"].isin(cells)]
    if history.empty:
        return None
    gap = _first_layer_gap(history).groupby(["cell", "layer", "iteration"])["gap"].mean()
    limit = max(float(gap.abs().max()), 1e-6)
    shown = [c for c in cells if c in set(history["cell"])]
    with style():
        figure, axes = _panels(len(shown), width=4.2, height=3.0)
        for ax, cell in zip(axes, shown):
            grid = gap.loc[cell].unstack("iteration").sort_index(ascending=False)
            sns.heatmap(grid, cmap="RdBu_r", center=0, vmin=-limit, vmax=limit, ax=ax,
                        annot=grid.shape[1] <= 12, fmt=".1f", annot_kws={"fontsize": 7},
                        cbar_kws={"label": "AP mask - AP box"})
            ax.set(title=cell, xlabel="iteration", ylabel="decoder layer")
        return _render(figure, f"{section.key}-training-gap-map", "The gap per layer and "
                       "iteration", "AP mask - AP box of every decoder layer (rows, the last "
                       "on top) at every probed iteration (columns), mean over seeds; red: "
                       "detection lags, blue: segmentation lags.")
