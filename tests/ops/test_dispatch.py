"""Backend selection, fallback, and argument errors of ``ms_deform_attn``."""

from __future__ import annotations

import warnings

import pytest
import torch

from dimaskdino.ops import (
    ExtensionBuildError,
    KernelUnavailableWarning,
    ms_deform_attn,
    ms_deform_attn_reference,
)
from dimaskdino.ops import dispatch as op_module
from tests.ops.conftest import Case

CASE = Case(batch=1, shapes=((4, 5), (2, 3)), heads=2, channels=4, queries=3, points=2)


def kernel_name(out: torch.Tensor) -> str:
    return type(out.grad_fn).__name__


def test_auto_uses_cpu_kernel_for_cpu_float_tensors(cpu_kernel):
    out = ms_deform_attn(*CASE.inputs(torch.float32, requires_grad=True))
    assert kernel_name(out) == "_MSDeformAttnFunctionBackward"


def test_auto_falls_back_to_reference_with_one_warning(monkeypatch):
    def broken():
        raise ExtensionBuildError("no C++ compiler found")

    monkeypatch.setattr(op_module, "load_cpu_extension", broken)
    monkeypatch.setattr(op_module, "_warned", set())
    inputs = CASE.inputs(torch.float64)
    with pytest.warns(KernelUnavailableWarning, match="no C\\+\\+ compiler found"):
        out = ms_deform_attn(*inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ms_deform_attn(*inputs)  # the second call does not warn again
    torch.testing.assert_close(out, ms_deform_attn_reference(*inputs), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_on_cpu_runs_the_fp32_kernel_on_upcast_inputs(dtype):
    """bf16 autocast keeps the op in fp32: half inputs are upcast once and the CPU kernel
    runs (automatic or explicit backend); only an explicit reference computes in half."""
    value, *rest = CASE.inputs(torch.float32)
    inputs = [value.to(dtype), rest[0], rest[1], rest[2].to(dtype), rest[3].to(dtype)]
    upcast = [t.float() if t.is_floating_point() else t for t in inputs]
    want = ms_deform_attn(*upcast, backend="cpu")
    for backend in (None, "cpu"):
        out = ms_deform_attn(*inputs, backend=backend)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert ms_deform_attn(*inputs, backend="reference").dtype == dtype


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'triton'"):
        ms_deform_attn(*CASE.inputs(), backend="triton")


@pytest.mark.parametrize(
    ("index", "bad", "message"),
    [
        (0, torch.zeros(1, 26, 2), "value must be"),
        (0, torch.zeros(1, 25, 2, 4, dtype=torch.float64), "value has 25 tokens"),
        (1, torch.tensor([4, 5]), "spatial_shapes must be"),
        (2, torch.tensor([0]), "level_start_index must be"),
        (3, torch.zeros(1, 3, 2, 3, 2, 2), "sampling_locations must be"),
        (4, torch.zeros(1, 3, 2, 2, 3), "attention_weights must be"),
    ],
)
def test_shape_errors_are_clear(index, bad, message):
    inputs = list(CASE.inputs())
    inputs[index] = bad
    with pytest.raises(ValueError, match=message):
        ms_deform_attn(*inputs)
