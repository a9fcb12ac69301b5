"""The multi-scale deformable attention op: argument checks and backend dispatch."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch.autograd.function import once_differentiable

from dimaskdino.ops.build import ExtensionBuildError, load_cpu_extension, load_cuda_extension
from dimaskdino.ops.reference import ms_deform_attn_reference

Backend = Literal["reference", "cpu", "cuda"]
BACKENDS: tuple[str, ...] = ("reference", "cpu", "cuda")
KERNEL_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
}
REDUCED_DTYPES = (torch.float16, torch.bfloat16)


class KernelUnavailableWarning(UserWarning):
    """A compiled kernel could not be built; the slower reference backend is used instead."""


_warned: set[str] = set()


def _kernel(backend: str):
    return load_cpu_extension() if backend == "cpu" else load_cuda_extension()


class _MSDeformAttnFunction(torch.autograd.Function):
    """Autograd wrapper of a compiled kernel (first-order gradients)."""

    @staticmethod
    def forward(ctx, backend, value, spatial_shapes, level_start_index, sampling_locations,
                attention_weights):
        ctx.backend = backend
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights)
        return _kernel(backend).forward(value, spatial_shapes, level_start_index,
                                        sampling_locations, attention_weights)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        grads = _kernel(ctx.backend).backward(*ctx.saved_tensors, grad_output.contiguous())
        grad_value, grad_locations, grad_weights = grads
        return None, grad_value, None, None, grad_locations, grad_weights


def _check_shapes(value, spatial_shapes, level_start_index, sampling_locations,
                  attention_weights) -> None:
    if value.dim() != 4:
        raise ValueError(f"value must be (N, S, M, D), got {tuple(value.shape)}")
    n, tokens, heads, _ = value.shape
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be (L, 2), got {tuple(spatial_shapes.shape)}")
    levels = spatial_shapes.shape[0]
    if tuple(level_start_index.shape) != (levels,):
        raise ValueError(
            f"level_start_index must be ({levels},), got {tuple(level_start_index.shape)}"
        )
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2 or (
        sampling_locations.shape[0], sampling_locations.shape[2], sampling_locations.shape[3]
    ) != (n, heads, levels):
        raise ValueError(
            f"sampling_locations must be (N={n}, Lq, M={heads}, L={levels}, P, 2), "
            f"got {tuple(sampling_locations.shape)}"
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f"attention_weights must be {tuple(sampling_locations.shape[:-1])}, "
            f"got {tuple(attention_weights.shape)}"
        )
    if spatial_shapes.device.type == "cpu" and int(spatial_shapes.prod(1).sum()) != tokens:
        raise ValueError(
            f"value has {tokens} tokens but spatial_shapes {spatial_shapes.tolist()} "
            "describe a different number"
        )


def cpu_float32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` in float32 when any is half / bfloat16 on the CPU (bf16 autocast): the
    fp32 kernel reads each once, where the reference would run its many sampling ops in
    bf16 (0.62x the fp32 model, measured); else unchanged."""
    if tensors[0].device.type != "cpu" or not any(t.dtype in REDUCED_DTYPES for t in tensors):
        return tensors
    return tuple(t.float() for t in tensors)


def _auto_backend(value: torch.Tensor) -> str:
    backend = "cuda" if value.is_cuda else "cpu" if value.device.type == "cpu" else "reference"
    if backend == "reference" or value.dtype not in KERNEL_DTYPES[backend]:
        return "reference"
    try:
        _kernel(backend)
    except ExtensionBuildError as exc:
        if backend not in _warned:
            _warned.add(backend)
            warnings.warn(
                f"dimask: using the slow pure-PyTorch deformable attention: {exc}",
                KernelUnavailableWarning,
                stacklevel=3,
            )
        return "reference"
    return backend


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    *,
    backend: Backend | None = None,
) -> torch.Tensor:
    """Multi-scale deformable attention (Deformable DETR), the official op's semantics.

    Each query, head, level and point bilinearly samples ``value`` at a normalized
    location ``(x, y)`` (pixel centres at ``(x * W - 0.5, y * H - 0.5)``; corners
    outside the map contribute zero) and sums the samples with its attention weights.

    Args:
        value: ``(N, S, M, D)``: batch, ``S = sum_l H_l * W_l`` tokens, heads, channels.
        spatial_shapes: ``(L, 2)`` int64, ``(H_l, W_l)`` of each level.
        level_start_index: ``(L,)`` int64, offset of each level in ``S``.
        sampling_locations: ``(N, Lq, M, L, P, 2)`` normalized ``(x, y)``; may lie
            outside ``[0, 1]``.
        attention_weights: ``(N, Lq, M, L, P)``.
        backend: ``"reference"`` (pure PyTorch), ``"cpu"`` (C++ kernel), ``"cuda"``
            (CUDA kernel) or ``None``: the kernel matching the tensors' device, or the
            reference with one :class:`KernelUnavailableWarning` when it cannot be
            built. On the CPU, half / bfloat16 inputs are computed in float32 by any backend
            but an explicit ``"reference"`` (the op stays fp32 under bf16 autocast).

    Returns:
        ``(N, Lq, M * D)``, differentiable in ``value``, ``sampling_locations`` and
        ``attention_weights`` on every backend; float32 for half / bfloat16 CPU inputs.
    """
    _check_shapes(value, spatial_shapes, level_start_index, sampling_locations,
                  attention_weights)
    if backend != "reference":
        value, sampling_locations, attention_weights = cpu_float32(
            value, sampling_locations, attention_weights)
    if backend is None:
        backend = _auto_backend(value)
    elif backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "reference":
        return ms_deform_attn_reference(value, spatial_shapes, level_start_index,
                                        sampling_locations, attention_weights)
    if value.dtype not in KERNEL_DTYPES[backend]:
        raise TypeError(f"the {backend} kernel does not support {value.dtype}")
    return _MSDeformAttnFunction.apply(
        backend,
        value.contiguous(),
        spatial_shapes.to(device=value.device, dtype=torch.long).contiguous(),
        level_start_index.to(device=value.device, dtype=torch.long).contiguous(),
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
    )
