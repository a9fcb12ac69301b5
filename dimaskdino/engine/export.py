"""Export a model to ONNX: every decoder layer's predictions, layer 0 included.

The exported graph maps a normalized, padded image batch ``images (B, 3, H, W)`` to the
predictor's per-layer outputs (:class:`LayerOutputs`); everything after them (top-k pairs,
mask resize, RLE) stays in Python and is the code ``predict`` runs
(:func:`~dimaskdino.modeling.model.finish_prediction`), applied by the runtime in
:mod:`dimaskdino.engine.exported`. ONNX has no deformable-attention operator: the export
traces the pure-PyTorch path (``grid_sample``, ONNX ``GridSample`` from opset 16).

Exporter: torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``), which
needs only ``onnx``; the dynamo exporter would add ``onnxscript``. The batch axis is
dynamic; the image size is fixed at export, because the deformable attention reads each
feature level's size as Python numbers (``spatial_shapes.tolist()``), which a trace records
as constants. Smaller images are zero-padded up to it, as a batch with a larger image pads
them.

The file carries its own description in the metadata entry ``dimask`` (JSON, see
:func:`export_metadata`), so that ``dimask eval`` and ``dimask layer-probe`` need no
checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from dimaskdino.config import ConfigError, ExperimentConfig, config_to_dict
from dimaskdino.fileio import atomic_write
from dimaskdino.modeling.model import DIMaskDINO
from dimaskdino.ops import MSDeformAttn

FORMAT = "dimask-onnx"
FORMAT_VERSION = 1
METADATA_KEY = "dimask"
INPUT_NAME = "images"
# (B, S, Q, K), (B, S, Q, 4), (B, S, Q, H/4, W/4): S exported layers
LAYER_OUTPUTS = ("pred_logits", "pred_boxes", "pred_masks")
# DI's token-interaction stages: (B, T, k1, K), (B, T, k1, 4)
STAGE_OUTPUTS = ("ti_logits", "ti_boxes")
MIN_OPSET = 16     # ONNX GridSample
DEFAULT_OPSET = 17
MAX_OPSET = 20     # the TorchScript exporter's newest (torch 2.14)
LAYER_CHOICES = ("all", "last")
ONNX_EXTRA = "pip install 'dimask[onnx]'"


def require(module: str):
    """Import ``module`` (``onnx`` or ``onnxruntime``), or one ConfigError naming the extra:
    the core install does without them."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{module} is not installed; ONNX export and exported models need "
                          f"the onnx extra: {ONNX_EXTRA}") from None


def check_opset(opset: int) -> int:
    """``opset`` if the export can use it: GridSample needs :data:`MIN_OPSET`, the exporter
    goes up to :data:`MAX_OPSET`."""
    if opset < MIN_OPSET:
        raise ConfigError(f"--opset {opset} has no GridSample, which the deformable attention "
                          f"is exported as; use --opset {MIN_OPSET} or later")
    if opset > MAX_OPSET:
        raise ConfigError(f"--opset {opset}: torch's exporter writes opsets up to {MAX_OPSET}")
    return opset


def default_size(config: ExperimentConfig) -> tuple[int, int]:
    """The export's ``(H, W)`` when none is given: a square that holds every evaluation image
    (longer side at most ``data.test_max_size``; without a test resize, the training crop
    ``data.image_size``), rounded up to the model's size divisibility."""
    data, divisor = config.data, config.model.size_divisibility
    side = data.test_max_size if data.test_short > 0 else max(data.image_size)
    side = math.ceil(side / divisor) * divisor
    return side, side


@contextlib.contextmanager
def reference_attention(model: nn.Module) -> Iterator[None]:
    """Every deformable attention of ``model`` on the pure-PyTorch backend for the block."""
    layers = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    saved = [layer.backend for layer in layers]
    for layer in layers:
        layer.backend = "reference"
    try:
        yield
    finally:
        for layer, backend in zip(layers, saved, strict=True):
            layer.backend = backend


class LayerOutputs(nn.Module):
    """The exported graph: ``images (B, 3, H, W)`` (normalized, padded) -> the outputs of
    :data:`LAYER_OUTPUTS` for every layer 0..L (``last_only``: layer L alone), then, with
    DI, its token-interaction stages' class logits and boxes (:data:`STAGE_OUTPUTS`, what
    the layer probe scores as ``ti1``, ``ti2``...)."""

    def __init__(self, model: DIMaskDINO, last_only: bool = False) -> None:
        super().__init__()
        self.model, self.last_only = model, last_only

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images, all_layer_masks=not self.last_only)
        layers = out.layers[-1:] if self.last_only else out.layers
        stacked = [torch.stack([layer[key] for layer in layers], dim=1) for key in LAYER_OUTPUTS]
        if out.di is not None and not self.last_only:
            stacked += [torch.stack([stage[key] for stage in out.di.aux], dim=1)
                        for key in ("pred_logits", "pred_boxes")]
        return tuple(stacked)


def output_names(model: DIMaskDINO, last_only: bool) -> list[str]:
    """The exported outputs of ``model``, in :class:`LayerOutputs`' order."""
    di = model.config.predictor.first_selected_queries is not None and not last_only
    return [*LAYER_OUTPUTS, *(STAGE_OUTPUTS if di else ())]


def export_metadata(config: ExperimentConfig, layers: list[int], size: tuple[int, int],
                    opset: int, class_names: list[str] | None, source: str) -> dict:
    """What the file says about itself: the format, the experiment config (model and data),
    the exported layers, the fixed input size ``[H, W]``, the normalisation (``pixel_mean``,
    ``pixel_std`` of ``input_format`` channels, subtracted and divided before padding), the
    class names (None when the dataset could not be read at export), the opset and the
    checkpoint it came from."""
    model = config.model
    return {"format": FORMAT, "version": FORMAT_VERSION, "model": model.name,
            "layers": layers, "input_size": list(size), "input_format": model.input_format,
            "pixel_mean": list(model.pixel_mean), "pixel_std": list(model.pixel_std),
            "size_divisibility": model.size_divisibility, "opset": opset,
            "class_names": class_names, "dataset": config.data.dataset, "source": source,
            "config": config_to_dict(config)}


def export_onnx(model: DIMaskDINO, config: ExperimentConfig, path: str | Path,
                size: tuple[int, int], last_only: bool = False, opset: int = DEFAULT_OPSET,
                class_names: list[str] | None = None, source: str = "") -> dict:
    """Write ``model`` (any dtype; exported in float32, on the CPU) to ``path`` as ONNX for
    images padded to ``size`` ``(H, W)``, with :func:`export_metadata`; returns the
    metadata. ``model`` itself is left as it was."""
    onnx = require("onnx")
    check_opset(opset)
    height, width = size
    divisor = config.model.size_divisibility
    if height <= 0 or width <= 0 or height % divisor or width % divisor:
        raise ConfigError(f"--height {height} --width {width}: the export size must be "
                          f"positive multiples of the model's size divisibility ({divisor})")
    net = copy.deepcopy(model).float().cpu().eval()
    graph = LayerOutputs(net, last_only)
    names = output_names(net, last_only)
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *names)}
    with tempfile.TemporaryDirectory() as scratch, reference_attention(net), \
            torch.no_grad(), warnings.catch_warnings():
        # the trace's notes on Python numbers it records as constants: the fixed size
        warnings.simplefilter("ignore")
        buffer = str(Path(scratch) / "model.onnx")
        torch.onnx.export(graph, (torch.zeros(1, 3, height, width),), buffer, dynamo=False,
                          opset_version=opset, input_names=[INPUT_NAME], output_names=names,
                          dynamic_axes=dynamic)
        exported = onnx.load(buffer)
    last = config.model.predictor.dec_layers
    metadata = export_metadata(config, [last] if last_only else list(range(last + 1)),
                               (height, width), opset, class_names, source)
    entry = exported.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    atomic_write(path, exported.SerializeToString())
    return metadata

