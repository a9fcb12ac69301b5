"""The kernel check of `make gpu-check`, run on the CPU with the reference op as the kernel."""

import torch

from dimaskdino.ops import dispatch
from dimaskdino.ops.kernel_check import SHAPES, KernelShape, check_backend, random_inputs

SMALL = KernelShape("small", ((6, 8), (3, 4)), queries=20, heads=2, channels=8, points=2)


def test_the_reference_op_passes_in_float64_and_float32():
    rows = check_backend("reference", "cpu", (torch.float64, torch.float32), (SMALL,))
    assert [r["dtype"] for r in rows] == ["float64", "float32"]
    assert all(r["passed"] for r in rows), rows
    assert rows[0]["grad_value"] < 1e-12 and 0 < rows[1]["grad_value"] < 1e-5


def test_a_wrong_gradient_fails(monkeypatch):
    reference = dispatch.ms_deform_attn_reference

    def off_by_a_little(value, *args):  # forward right, grad of value 1% too large
        return reference(value * 1.01 - (value * 0.01).detach(), *args)

    monkeypatch.setattr(dispatch, "ms_deform_attn_reference", off_by_a_little)
    (row,) = check_backend("reference", "cpu", (torch.float64,), (SMALL,))
    assert row["output"] < 1e-12
    assert abs(row["grad_value"] - 0.01) < 1e-3 and not row["passed"]


def test_inputs_are_valid_kernel_inputs():
    for shape in SHAPES:
        inputs = random_inputs(shape)
        assert inputs["value"].shape == (shape.batch, shape.tokens, shape.heads, shape.channels)
        assert int(inputs["level_start_index"][-1] + inputs["spatial_shapes"][-1].prod()) \
            == shape.tokens
        torch.testing.assert_close(inputs["attention_weights"].flatten(-2).sum(-1),
                                   torch.ones(shape.batch, shape.queries, shape.heads,
                                              dtype=torch.float64))
