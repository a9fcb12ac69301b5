"""Run a model written by ``dimask export`` on onnxruntime (CPU execution provider), reporting
exactly as :meth:`DIMaskDINO.predict` does.

:class:`ExportedModel` has the inference interface the evaluation, the layer probe and
:func:`~dimaskdino.engine.inference.predictions` read from a model (``config``, ``predict``,
``eval`` / ``train``): the images are normalized and padded by the model's own
:func:`~dimaskdino.modeling.preprocess.batch_images`, then up to the exported size; the
runtime's per-layer outputs go through :func:`~dimaskdino.modeling.model.finish_prediction`,
the post-processing of ``predict``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from dimaskdino.checkpoint import CheckpointError, load_model
from dimaskdino.config import ConfigError, ExperimentConfig, config_from_dict
from dimaskdino.engine.export import (
    FORMAT,
    FORMAT_VERSION,
    INPUT_NAME,
    LAYER_OUTPUTS,
    METADATA_KEY,
    require,
)
from dimaskdino.engine.precision import Precision, check_precision
from dimaskdino.errors import one_line
from dimaskdino.modeling.model import Prediction, finish_prediction, requested_sizes
from dimaskdino.modeling.postprocess import MaskFormat
from dimaskdino.modeling.preprocess import batch_images

SUFFIX = ".onnx"


def read_metadata(text: str | None, path: str | Path) -> dict:
    """The ``dimask`` metadata entry of the ONNX file ``path`` (see
    :func:`~dimaskdino.engine.export.export_metadata`); CheckpointError for a file dimask
    did not export."""
    try:
        metadata = json.loads(text) if text else None
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is an ONNX model, but not one dimask exported (no "
                              f"'{METADATA_KEY}' metadata); dimask runs the files of "
                              "dimask export")
    if metadata.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is in dimask's ONNX format version "
                              f"{metadata.get('version')}; this dimask reads version "
                              f"{FORMAT_VERSION}")
    return metadata


class ExportedModel:
    """An exported model on onnxruntime: ``config`` (the :class:`ModelConfig`), ``layers``
    (those the file holds), ``input_size`` ``(H, W)``, ``class_names`` and ``metadata`` (the
    file's whole description)."""

    training = False

    def __init__(self, path: Path, session, metadata: dict, experiment: ExperimentConfig):
        self.path, self.session, self.metadata = path, session, metadata
        self.config = experiment.model
        self.layers: list[int] = list(metadata["layers"])
        self.input_size: tuple[int, int] = tuple(metadata["input_size"])
        self.class_names: list[str] | None = metadata["class_names"]
        self.pixel_mean = torch.tensor(metadata["pixel_mean"])
        self.pixel_std = torch.tensor(metadata["pixel_std"])
        self.output_names = [output.name for output in session.get_outputs()]

    def eval(self) -> ExportedModel:
        return self

    def train(self, mode: bool = True) -> ExportedModel:
        """Inference only: an exported graph has no training mode."""
        if mode:
            raise ConfigError(f"{self.path} is an exported model: it does not train")
        return self

    def resolve_precision(self, precision: str) -> Precision:
        """The file runs in float32 whatever ``auto`` would pick for a checkpoint; bf16 is
        a ConfigError."""
        if check_precision(precision) == "bf16":
            raise ConfigError(f"{self.path} runs in float32 on onnxruntime; --precision bf16 "
                              "is for checkpoints")
        return Precision("fp32", "cpu", "onnxruntime, exported in float32")

    def predict(self, images: Sequence[torch.Tensor],
                output_sizes: Sequence[tuple[int, int]] | None = None,
                all_layers: bool = False, masks: MaskFormat = "bitmap") -> Prediction:
        """:meth:`DIMaskDINO.predict` through the runtime (arguments and result alike), in
        float32 (:meth:`resolve_precision`). A file of the last layer only cannot give
        ``all_layers``; an image larger than the exported size is a ConfigError."""
        last = self.config.predictor.dec_layers
        if all_layers and self.layers != list(range(last + 1)):
            raise ConfigError(f"{self.path} holds layer {last} only (exported with --layers "
                              "last); export with --layers all for every layer")
        sizes_out = requested_sizes(images, output_sizes)
        batch, image_sizes = batch_images(images, self.pixel_mean, self.pixel_std,
                                          self.config.size_divisibility)
        height, width = self.input_size
        tallest, widest = max(h for h, _ in image_sizes), max(w for _, w in image_sizes)
        if tallest > height or widest > width:
            raise ConfigError(f"an image of {tallest}x{widest} does not fit {self.path}, "
                              f"exported for {height}x{width} inputs; export again with "
                              "--height / --width")
        batch = F.pad(batch, (0, width - batch.shape[-1], 0, height - batch.shape[-2]))
        found = self.session.run(None, {INPUT_NAME: batch.numpy()})
        tensors = {name: torch.from_numpy(value)
                   for name, value in zip(self.output_names, found, strict=True)}
        outputs: dict = {"layers": [{key: tensors[key][:, s] for key in LAYER_OUTPUTS}
                                    for s in range(len(self.layers))]}
        if "ti_logits" in tensors:
            outputs["di"] = {"aux": [{"pred_logits": tensors["ti_logits"][:, t],
                                      "pred_boxes": tensors["ti_boxes"][:, t]}
                                     for t in range(tensors["ti_logits"].shape[1])]}
        return finish_prediction(outputs, (height, width), image_sizes, sizes_out,
                                 self.config.detections_per_image, all_layers, masks)


def load_exported(path: str | Path) -> tuple[ExportedModel, ExperimentConfig]:
    """The model in ``path`` (written by ``dimask export``) on onnxruntime's CPU provider,
    with as many threads as torch uses, and the experiment config it was exported with;
    CheckpointError for a missing file, a file that is not ONNX, or one not dimask's."""
    ort = require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model not found: {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only: no notes on the graph's rewrites
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types (InvalidProtobuf, Fail, ...)
        raise CheckpointError(f"{path} is not an ONNX model onnxruntime can load "
                              f"({one_line(exc)})") from None
    metadata = read_metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY),
                             path)
    experiment = config_from_dict(ExperimentConfig, metadata["config"])
    return ExportedModel(path, session, metadata, experiment), experiment


def load_inference_model(path: str | Path, official_config: str | Path | None = None):
    """What ``dimask eval`` and ``dimask layer-probe`` run: an exported ``.onnx`` file
    (:func:`load_exported`), else a checkpoint
    (:func:`~dimaskdino.checkpoint.load_model`); the model and its experiment config."""
    if Path(path).suffix.lower() != SUFFIX:
        return load_model(path, official_config)
    if official_config is not None:
        raise ConfigError(f"--official-config is for official .pth checkpoints; {path} "
                          "carries its own config")
    return load_exported(path)
