"""Precision: names checked, native bf16 detected from the CPU's flags (never assumed),
``auto`` resolved per device and model, fp32 never entering autocast, the deformable op in
fp32 under bf16, the outputs handed on in fp32."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dimaskdino.config import ConfigError, apply_overrides, preset
from dimaskdino.engine import precision as P
from dimaskdino.ops import MSDeformAttn, dispatch

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2 avx2 avx512f {extra}
bogomips\t: 4000.00

processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f {extra}
"""


def r50() -> object:
    return preset("r50-coco-12ep").model


def tiny() -> object:
    return preset("tiny").model


@pytest.mark.parametrize("name", ["auto", "fp32", "bf16"])
def test_known_names_pass(name):
    assert P.check_precision(name) == name


@pytest.mark.parametrize("name", ["fp16", "BF16", "float32", ""])
def test_unknown_names_are_one_config_error(name):
    with pytest.raises(ConfigError, match=f"precision {name!r} is not supported; choose one "
                                          "of auto, fp32, bf16"):
        P.check_precision(name)


def test_solver_precision_is_checked_with_the_other_overrides():
    assert apply_overrides(preset("tiny"), ["solver.precision=bf16"]).solver.precision == "bf16"
    assert preset("tiny").solver.precision == "auto"
    with pytest.raises(ConfigError, match=r"solver\.precision='fp16': must be one of 'auto', "
                                          "'fp32', 'bf16'"):
        apply_overrides(preset("tiny"), ["solver.precision=fp16"])


@pytest.mark.parametrize(("extra", "unit"), [
    ("avx512_bf16 amx_bf16 amx_tile", "AMX-BF16"),
    ("avx512_bf16", "AVX512_BF16"),
    ("avx512_vnni amx_int8", None),   # AMX without its bf16 part, VNNI: no native bf16
    ("", None),
])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, extra, unit):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    flags = P.cpu_flags(cpuinfo)
    assert {"fpu", "avx512f"} <= flags and "bogomips" not in flags
    assert P.native_bf16_of(flags) == unit


def test_no_cpuinfo_means_no_flags(tmp_path):
    assert P.cpu_flags(tmp_path / "missing") == set()
    assert P.native_bf16_of(set()) is None


def test_this_machine_agrees_with_torch():
    """What this machine reports: torch's own detection and /proc/cpuinfo agree."""
    flags = P.cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo here")
    assert P.native_bf16_of(flags) == P.native_bf16_of(P.torch_cpu_flags())


@pytest.fixture
def bf16_unit(monkeypatch):
    """Pretend the CPU has the given native bf16 unit (or none)."""
    def pretend(unit):
        monkeypatch.setattr(P, "native_bf16", lambda: unit)
    return pretend


def test_auto_on_a_cpu_with_amx_is_bf16_for_the_paper_models(bf16_unit):
    bf16_unit("AMX-BF16")
    mode = P.resolve_precision("auto", "cpu", r50())
    assert (mode.name, mode.dtype) == ("bf16", torch.bfloat16)
    assert mode.describe() == "precision: bf16 (CPU has AMX-BF16)"


def test_auto_is_fp32_without_native_bf16_or_for_small_models(bf16_unit):
    bf16_unit(None)
    mode = P.resolve_precision("auto", "cpu", r50())
    assert mode.describe() == "precision: fp32 (the CPU has no native bf16)"
    bf16_unit("AVX512_BF16")
    mode = P.resolve_precision("auto", "cpu", tiny())
    assert mode.name == "fp32" and "CPU has AVX512_BF16, but" in mode.describe()


def test_explicit_names_win_over_detection(bf16_unit):
    bf16_unit(None)
    assert P.resolve_precision("bf16", "cpu", tiny()).name == "bf16"
    bf16_unit("AMX-BF16")
    assert P.resolve_precision("fp32", "cpu", r50()).name == "fp32"


def test_auto_on_cuda_is_the_fp16_amp_when_solver_amp(bf16_unit):
    bf16_unit("AMX-BF16")
    amp = P.resolve_precision("auto", "cuda", r50(), amp=True)
    assert (amp.name, amp.device_type, amp.dtype) == ("fp16", "cuda", torch.float16)
    assert P.resolve_precision("auto", "cuda", r50(), amp=False).name == "fp32"
    assert P.resolve_precision("auto", "cuda", r50()).name == "fp32"  # inference


def test_fp32_never_enters_autocast(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("autocast entered on an fp32 path")

    monkeypatch.setattr(torch, "autocast", refuse)
    with P.resolve_precision("fp32", "cpu", r50()).autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_autocasts_and_lays_the_batch_out_channels_last():
    mode = P.resolve_precision("bf16", "cpu", tiny())
    batch = torch.randn(2, 3, 8, 8)
    with mode.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert mode.batch(batch).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(mode.batch(batch), batch)
    assert P.resolve_precision("fp32", "cpu", tiny()).batch(batch) is batch


def test_float64_models_stay_exact():
    model = torch.nn.Linear(2, 2).double()
    model.config = tiny()
    assert P.model_precision("auto", model).name == "fp32"
    assert P.model_precision("fp32", model).name == "fp32"


def test_outputs_are_handed_on_in_fp32():
    @dataclasses.dataclass
    class Stage:
        boxes: torch.Tensor

    @dataclasses.dataclass
    class Outputs:  # the fields of ModelOutput that matter here
        layers: list
        di: Stage
        backbone: dict

    maps = torch.ones(2, dtype=torch.bfloat16)
    kept = P.float32_predictions(Outputs([{"m": maps}], Stage(maps), {"res2": maps}),
                                 P.INFERENCE_KEYS)
    assert kept.layers[0]["m"].dtype == torch.float32 and kept.di.boxes.dtype == torch.float32
    assert kept.backbone["res2"] is maps
    half = torch.ones(2, dtype=torch.bfloat16)
    exact, labels = torch.ones(2, dtype=torch.float64), torch.arange(2)
    out = P.float32_outputs({"layers": [{"a": half, "b": exact}], "pair": (half, labels),
                             "n": 3})
    assert out["layers"][0]["a"].dtype == torch.float32
    assert out["layers"][0]["b"] is exact and out["pair"][1] is labels and out["n"] == 3
    assert isinstance(out["pair"], tuple) and out["pair"][0].dtype == torch.float32


def test_the_deformable_op_runs_in_fp32_under_bf16_autocast(monkeypatch):
    """Under bf16 autocast the layer's op gets float32 inputs and runs the CPU kernel (not
    the bf16 reference)."""
    torch.manual_seed(0)
    layer = MSDeformAttn(32, n_levels=2, n_heads=2, n_points=2).eval()
    torch.nn.init.normal_(layer.sampling_offsets.weight, std=0.1)
    shapes, starts = torch.tensor([[6, 8], [3, 4]]), torch.tensor([0, 48])
    query, value, points = torch.randn(1, 5, 32), torch.randn(1, 60, 32), torch.rand(1, 5, 2, 2)
    seen = []
    real = dispatch._MSDeformAttnFunction.apply

    def spy(backend, v, s, i, loc, w):
        seen.append((backend, v.dtype, loc.dtype, w.dtype))
        return real(backend, v, s, i, loc, w)

    monkeypatch.setattr(dispatch._MSDeformAttnFunction, "apply", spy)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        out = layer(query, points, value, shapes, starts)
    assert seen == [("cpu", torch.float32, torch.float32, torch.float32)]
    assert out.dtype == torch.bfloat16   # output_proj is a bf16 linear

