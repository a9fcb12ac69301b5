"""Compiling the kernels: cache keys, toolchain errors, and the CUDA kernel for sm_80/sm_90."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from dimaskdino.ops import build


def test_missing_compiler_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DIMASK_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(build.ExtensionBuildError, match="no C\\+\\+ compiler found"):
        build.load_cpu_extension.__wrapped__()
    assert not any(tmp_path.iterdir())


def test_compile_errors_name_the_first_error_and_keep_the_log(monkeypatch, tmp_path):
    broken = tmp_path / "csrc"
    shutil.copytree(build.CSRC, broken)
    (broken / "ms_deform_attn_cpu.cpp").write_text("int main( { return 0; }\n")
    monkeypatch.setattr(build, "CSRC", broken)
    monkeypatch.setenv("DIMASK_EXTENSIONS_DIR", str(tmp_path / "cache"))
    with pytest.raises(build.ExtensionBuildError) as info:
        build.load_cpu_extension.__wrapped__()
    message = str(info.value)
    assert "error" in message and "\n" not in message
    assert "full log:" in message
    assert len(list((tmp_path / "cache").glob("*/build-error.log"))) == 1


def test_cache_key_follows_sources_and_flags():
    key = build._digest(build.CPU_SOURCES, build.CPU_CFLAGS)
    assert key == build._digest(build.CPU_SOURCES, build.CPU_CFLAGS)
    assert key != build._digest(build.CPU_SOURCES, ("-O2",))
    assert key != build._digest(build.CUDA_SOURCES, build.CPU_CFLAGS)


def test_each_extension_depends_on_the_headers_it_includes():
    assert build.included_headers(build.CPU_SOURCES) == ("bilinear.h", "ms_deform_attn.h")
    assert build.included_headers(build.CUDA_SOURCES) == ("bilinear.h", "ms_deform_attn.h")
    assert build.included_headers(build.MASK_SOURCES) == ("mask_rle.h",)


def test_two_checkouts_of_the_same_sources_build_from_the_same_paths(monkeypatch, tmp_path):
    """ninja keys rules by absolute path: the build reads staged copies, so a second
    checkout (e.g. a git worktree) reuses the first one's cached build."""
    staged = []
    for checkout in ("a", "b"):
        csrc = tmp_path / checkout / "csrc"
        shutil.copytree(build.CSRC, csrc)
        monkeypatch.setattr(build, "CSRC", csrc)
        folder = tmp_path / "cache" / f"x-{build._digest(build.CPU_SOURCES, ())}"
        staged.append(build.stage_sources(folder, build.CPU_SOURCES))
    assert staged[0] == staged[1]
    assert all(path.is_relative_to(tmp_path / "cache") for path in staged[0])
    for name in build.CPU_SOURCES + build.included_headers(build.CPU_SOURCES):
        assert (staged[0][0].parent / name).read_text() == (build.CSRC / name).read_text()


def test_cache_root_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DIMASK_EXTENSIONS_DIR", str(tmp_path / "x"))
    assert build.cache_root() == tmp_path / "x"
    monkeypatch.delenv("DIMASK_EXTENSIONS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert build.cache_root() == tmp_path / "xdg" / "dimask" / "extensions"


def test_find_cuda_home_prefers_cuda_home(monkeypatch, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "include").mkdir()
    (tmp_path / "bin" / "nvcc").touch()
    (tmp_path / "include" / "cuda_runtime.h").touch()
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    assert build.find_cuda_home() == tmp_path


CUDA_HOME = build.find_cuda_home()


@pytest.mark.slow
@pytest.mark.skipif(CUDA_HOME is None,
                    reason="nvcc not found (set CUDA_HOME): CUDA kernel compile test skipped")
@pytest.mark.skipif(torch.version.cuda is None,
                    reason="CPU-only torch: CUDA kernel compile test skipped")
def test_cuda_kernel_compiles_for_sm80_and_sm90(monkeypatch, tmp_path):
    monkeypatch.setenv("DIMASK_EXTENSIONS_DIR", str(tmp_path))
    module = build.load_cuda_extension.__wrapped__("8.0;9.0")
    assert callable(module.forward) and callable(module.backward)
    ninja_file = (Path(module.__file__).parent / "build.ninja").read_text()
    for arch in ("80", "90"):
        assert f"-gencode=arch=compute_{arch},code=sm_{arch}" in ninja_file
    if not torch.cuda.is_available():
        value = torch.zeros(1, 1, 1, 1)
        with pytest.raises(RuntimeError, match="CUDA"):
            module.forward(value, torch.tensor([[1, 1]]), torch.tensor([0]),
                           torch.zeros(1, 1, 1, 1, 1, 2), torch.zeros(1, 1, 1, 1, 1))
