"""Numeric precision of training and inference: one choice, resolved once, used everywhere.

``fp32``: the exact path, autocast is never entered (float64 models stay float64).
``bf16``: bfloat16 autocast; on the CPU the image batch is channels-last (oneDNN's fast
convolution layout; measured in ``benchmarks/RESULTS.md``); what needs the range or the
resolution of float32 stays there: the deformable-attention op (its CPU kernel is fp32:
:func:`~dimaskdino.ops.dispatch.ms_deform_attn` casts its inputs once per call), boxes
(:func:`~dimaskdino.modeling.box_ops.box_dtype`), and everything after the model's
forward, the losses, the Hungarian matching and the mask post-processing, which read the
predictions through :func:`float32_predictions`.
``fp16``: CUDA's float16 AMP with a gradient scaler, what ``auto`` picks on a GPU when
``solver.amp`` is on (inference on a GPU stays fp32 under ``auto``).
``auto``: on the CPU, bf16 where the CPU computes bfloat16 natively (AMX-BF16 or
AVX512_BF16 in ``/proc/cpuinfo``'s flags or torch's CPU capabilities; never assumed) and
the model is one of those where bf16 measured faster (:func:`bf16_pays_off`), else fp32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from dimaskdino.config import PRECISIONS, ConfigError
from dimaskdino.modeling.model import ModelConfig, ModelOutput

Item = TypeVar("Item")

# CPU flags of native bfloat16 arithmetic, the stronger first
BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512_BF16"}
# bf16 pays off where the matmuls and convolutions are large enough for the bf16 units to
# beat the casts around them: the paper's models (hidden 256) did, the tiny preset's
# (hidden 64) did not (benchmarks/RESULTS.md, "Whole model in bf16")
BF16_MIN_HIDDEN_DIM = 256


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else one clear ConfigError."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not supported; choose one of "
                          f"{', '.join(PRECISIONS)}")
    return precision


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The ``flags`` of the first CPU in ``cpuinfo`` (empty where there is no such file)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def torch_cpu_flags() -> set[str]:
    """The bf16 flags of :data:`BF16_FLAGS` that torch's own CPU detection reports."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    found = capabilities() if capabilities is not None else {}
    return {flag for flag in BF16_FLAGS if found.get(flag)}


@functools.cache
def native_bf16() -> str | None:
    """The name of this CPU's native bfloat16 unit (``AMX-BF16``, ``AVX512_BF16``) or None."""
    return native_bf16_of(cpu_flags() | torch_cpu_flags())


def native_bf16_of(flags: set[str]) -> str | None:
    """:func:`native_bf16` of a set of CPU flags."""
    return next((name for flag, name in BF16_FLAGS.items() if flag in flags), None)


def bf16_pays_off(model: ModelConfig) -> bool:
    """Whether bf16 measured faster than fp32 on a CPU for a model like ``model``."""
    return model.predictor.hidden_dim >= BF16_MIN_HIDDEN_DIM


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` (fp32, bf16 or fp16) on ``device_type``, and why."""

    name: str
    device_type: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    @property
    def reduced(self) -> bool:
        return self.name != "fp32"

    def describe(self) -> str:
        """One line for the start of a command, e.g. ``precision: bf16 (CPU has AMX-BF16)``."""
        return f"precision: {self.name} ({self.reason})"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the model's forward runs in; fp32 enters no autocast at all."""
        if not self.reduced:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, self.dtype)

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """The model's input batch ``(B, 3, H, W)`` in this precision's memory layout:
        channels-last for bf16 on the CPU (every convolution then runs in oneDNN's NHWC
        kernels), unchanged otherwise."""
        if self.name == "bf16" and self.device_type == "cpu":
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def run(self, model: torch.nn.Module, batch: torch.Tensor,
            keys: tuple[str, ...] | None = None, **kwargs) -> ModelOutput:
        """``model(batch, **kwargs)`` in this precision: under :meth:`autocast`, the batch in
        :meth:`batch`'s layout, the outputs ``keys`` (default :data:`TRAINING_KEYS`; what is
        read after the forward) in float32 (:func:`float32_predictions`)."""
        with self.autocast():
            outputs = model(self.batch(batch), **kwargs)
        return float32_predictions(outputs, keys or TRAINING_KEYS)


# the model outputs read after the forward: in training, per-layer predictions, the
# two-stage proposals, DI's interaction outputs and the denoising queries' predictions; in
# inference, the per-layer predictions and DI's (the layer probe scores its boxes)
TRAINING_KEYS = ("layers", "interm", "di", "di_extra", "denoising")
INFERENCE_KEYS = ("layers", "di")


def resolve_precision(precision: str, device: torch.device | str, model: ModelConfig,
                      amp: bool = False) -> Precision:
    """What ``precision`` (:data:`PRECISIONS`) means for ``model`` on ``device``; ``amp``
    (training's ``solver.amp``) makes ``auto`` on CUDA the fp16 AMP."""
    check_precision(precision)
    kind = torch.device(device).type
    if precision != "auto":
        return Precision(precision, kind, "requested")
    if kind == "cuda":
        return Precision("fp16", kind, "CUDA AMP") if amp else \
            Precision("fp32", kind, "auto on CUDA without solver.amp")
    if kind != "cpu":
        return Precision("fp32", kind, f"auto on {kind}")
    unit = native_bf16()
    if unit is None:
        return Precision("fp32", kind, "the CPU has no native bf16")
    if not bf16_pays_off(model):
        return Precision("fp32", kind, f"CPU has {unit}, but bf16 is not faster for a model "
                                       f"of hidden dim {model.predictor.hidden_dim} < "
                                       f"{BF16_MIN_HIDDEN_DIM}")
    return Precision("bf16", kind, f"CPU has {unit}")


def model_precision(precision: str | Precision, model: torch.nn.Module) -> Precision:
    """:func:`resolve_precision` for a built model (``model.config``) on its parameters'
    device; a model that is not float32 (e.g. the float64 fixture models) is always fp32; an
    exported model (:class:`~dimaskdino.engine.exported.ExportedModel`) says its own. A
    :class:`Precision` is already resolved: it is returned as it is."""
    if isinstance(precision, Precision):
        return precision
    if not isinstance(model, torch.nn.Module):
        return model.resolve_precision(precision)
    parameter = next(model.parameters())
    if parameter.dtype != torch.float32 and check_precision(precision) != "bf16":
        return Precision("fp32", parameter.device.type, f"the model is {parameter.dtype}")
    return resolve_precision(precision, parameter.device, model.config)


def float32_predictions(outputs, keys: tuple[str, ...] = TRAINING_KEYS):
    """The model's outputs (:class:`~dimaskdino.modeling.model.ModelOutput`) with the fields
    ``keys`` (what the losses and the matching, :data:`TRAINING_KEYS`, or the
    post-processing, :data:`INFERENCE_KEYS`, read) in float32; the rest, feature maps and
    tokens (``backbone``, ``encoder``, ``memory``, ``bato``...), stays in the compute dtype,
    for inspection only: casting it all converted 144M elements per bf16 R50 ``predict``,
    7x what the post-processing reads."""
    return dataclasses.replace(outputs, **{key: float32_outputs(getattr(outputs, key))
                                           for key in keys})


def float32_outputs(outputs):
    """``outputs`` (nested dicts / lists / tuples / dataclasses of tensors) with every
    float16 / bfloat16 tensor cast to float32 (others untouched)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.dtype in (torch.float16, torch.bfloat16) else outputs
    if isinstance(outputs, dict):
        return {key: float32_outputs(value) for key, value in outputs.items()}
    if dataclasses.is_dataclass(outputs) and not isinstance(outputs, type):
        return dataclasses.replace(outputs, **{
            f.name: float32_outputs(getattr(outputs, f.name))
            for f in dataclasses.fields(outputs) if f.init})
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(float32_outputs(value) for value in outputs)
    return outputs


def announced(items: Iterable[Item], mode: Precision,
              announce: Callable[[str], None] | None) -> Iterator[Item]:
    """``items`` (batches being read), with ``announce(mode.describe())`` (``precision: bf16
    (CPU has AMX-BF16)``) once the first is read, so that an error before any work (a
    missing file, a damaged image) is still the only line a command prints."""
    for position, item in enumerate(items):
        if position == 0 and announce is not None:
            announce(mode.describe())
        yield item
