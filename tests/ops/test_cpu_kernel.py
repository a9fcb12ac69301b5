"""The C++ CPU kernel against the pure-PyTorch reference: values and all three gradients."""

from __future__ import annotations

import pytest
import torch

from dimaskdino.ops import ms_deform_attn
from tests.ops.conftest import Case, random_cases

CASES = random_cases(24)


def forward_and_grads(case: Case, dtype: torch.dtype, backend: str):
    value, shapes, starts, locations, weights = case.inputs(dtype, seed=11, requires_grad=True)
    out = ms_deform_attn(value, shapes, starts, locations, weights, backend=backend)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(5),
                           dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad(out, (value, locations, weights), grad_out)
    return (out.detach(), *grads)


NAMES = ("output", "grad_value", "grad_sampling_locations", "grad_attention_weights")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_float64_matches_reference(case: Case, cpu_kernel):
    kernel = forward_and_grads(case, torch.float64, "cpu")
    reference = forward_and_grads(case, torch.float64, "reference")
    for name, got, want in zip(NAMES, kernel, reference):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=name)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_float32_matches_reference(case: Case, cpu_kernel):
    kernel = forward_and_grads(case, torch.float32, "cpu")
    reference = forward_and_grads(case, torch.float64, "reference")
    for name, got, want in zip(NAMES, kernel, reference):
        scale = max(want.abs().max().item(), 1e-30)
        error = (got.double() - want).abs().max().item()
        assert error <= 1e-4 * scale, f"{name}: max error {error:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("case", random_cases(4, seed=99), ids=str)
def test_gradcheck_float64(case: Case, cpu_kernel):
    inputs = case.inputs(torch.float64, seed=21, requires_grad=True)

    def op(value, locations, weights):
        return ms_deform_attn(value, inputs[1], inputs[2], locations, weights, backend="cpu")

    assert torch.autograd.gradcheck(op, (inputs[0], inputs[3], inputs[4]), eps=1e-6,
                                    atol=1e-7)


def run_with_threads(threads: int, case: Case):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return forward_and_grads(case, torch.float64, "cpu")
    finally:
        torch.set_num_threads(previous)


# The kernel reads a head-major copy of value when queries x levels x points >= tokens
# (encoder-like calls), value itself otherwise (decoder-like calls): test both.
ENCODER_LIKE = dict(shapes=((9, 11), (5, 6), (3, 3)), queries=300, points=4)
DECODER_LIKE = dict(shapes=((40, 50), (20, 25)), queries=40, points=2)


@pytest.mark.parametrize("sizes", [ENCODER_LIKE, DECODER_LIKE], ids=["encoder", "decoder"])
def test_backward_by_head_slices_is_bitwise_thread_independent(sizes, cpu_kernel):
    """batch x heads >= threads: each thread owns whole (batch, head) slices of grad_value."""
    case = Case(batch=2, heads=4, channels=8, **sizes)
    serial, parallel = run_with_threads(1, case), run_with_threads(2, case)
    for a, b in zip(serial, parallel):
        assert torch.equal(a, b)


@pytest.mark.parametrize("sizes", [ENCODER_LIKE, DECODER_LIKE], ids=["encoder", "decoder"])
def test_backward_with_private_buffers_is_reproducible(sizes, cpu_kernel):
    """batch x heads < threads: per-thread grad_value copies, reduced in thread order."""
    case = Case(batch=1, heads=1, channels=32, **sizes)
    first, second = run_with_threads(4, case), run_with_threads(4, case)
    serial = run_with_threads(1, case)
    reference = forward_and_grads(case, torch.float64, "reference")
    for a, b, c, r in zip(first, second, serial, reference):
        assert torch.equal(a, b)  # bitwise, for a fixed thread count
        torch.testing.assert_close(a, c, rtol=0, atol=1e-12)
        torch.testing.assert_close(a, r, rtol=0, atol=1e-10)


def test_empty_query_set(cpu_kernel):
    case = Case(batch=1, shapes=((2, 3),), heads=2, channels=4, queries=0, points=2)
    out = ms_deform_attn(*case.inputs(torch.float32), backend="cpu")
    assert out.shape == (1, 0, 8)
