"""Compile the deformable-attention kernels on first use, with a cache.

The CPU kernel (C++, OpenMP) and the CUDA kernel are separate extensions, built
with ``torch.utils.cpp_extension.load`` into a cache directory keyed by a hash of
the sources, the flags, and the torch and Python versions, so a changed source
or a new torch rebuilds and an unchanged one loads in milliseconds. The CUDA
kernel is only built where ``nvcc`` is found and a CUDA tensor asks for it (or a
caller asks explicitly, as ``dimask build-ops --cuda`` does).

Cache directory: ``$DIMASK_EXTENSIONS_DIR``, else
``$XDG_CACHE_HOME/dimask/extensions``, else ``~/.cache/dimask/extensions``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import torch

from dimaskdino.fileio import atomic_write_text

CSRC = Path(__file__).resolve().parent / "csrc"
CPU_SOURCES = ("ms_deform_attn_cpu.cpp",)
CUDA_SOURCES = ("ms_deform_attn_cuda.cu", "ms_deform_attn_cuda_module.cpp")
MASK_SOURCES = ("mask_rle_cpu.cpp",)
# -march=native: the kernel is built on the machine that runs it (the cache key
# includes the processor), and vector instructions gain ~15% here.
CPU_CFLAGS = ("-O3", "-march=native", "-fopenmp")
CPU_LDFLAGS = ("-fopenmp",)
# -fno-trapping-math lets the mask encoder's loops with comparisons vectorise (12x on its
# sigmoid sums, measured); it changes no result, as nothing here reads FP exceptions
MASK_CFLAGS = (*CPU_CFLAGS, "-fno-trapping-math")
CUDA_CFLAGS = ("-O3",)
DEFAULT_CUDA_ARCHS = "8.0;9.0"


class ExtensionBuildError(RuntimeError):
    """The kernel could not be compiled or loaded; the message says why in one line."""


def cache_root() -> Path:
    """Directory under which every build of the kernels is cached."""
    if env := os.environ.get("DIMASK_EXTENSIONS_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dimask" / "extensions"


def find_cuda_home() -> Path | None:
    """The CUDA toolkit root (holding ``bin/nvcc`` and ``include/cuda_runtime.h``), or None.

    ``CUDA_HOME`` / ``CUDA_PATH`` win; otherwise ``/usr/local/cuda``, then the
    directory of the ``nvcc`` on ``PATH`` (resolved through symlinks).
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    if nvcc := shutil.which("nvcc"):
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    for candidate in filter(None, candidates):
        root = Path(candidate)
        if (root / "bin" / "nvcc").exists() and (root / "include" / "cuda_runtime.h").exists():
            return root
    return None


@functools.cache
def _cpu_signature() -> str:
    """Processor model and instruction-set flags: ``-march=native`` builds are only
    valid on processors like the one that compiled them, so they key the cache."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(dict.fromkeys(line for line in lines if line.startswith(wanted)))


def included_headers(sources: tuple[str, ...]) -> tuple[str, ...]:
    """The ``csrc`` headers that ``sources`` include, directly or through each other: an
    extension rebuilds when one of them changes, and only then."""
    found: set[str] = set()
    pending = list(sources)
    while pending:
        text = (CSRC / pending.pop()).read_text()
        for name in re.findall(r'^#include "([^"]+)"', text, flags=re.MULTILINE):
            if name not in found:
                found.add(name)
                pending.append(name)
    return tuple(sorted(found))


def _digest(sources: tuple[str, ...], flags: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    h.update(_cpu_signature().encode())
    for name in sorted(sources + included_headers(sources)):
        h.update(name.encode())
        h.update((CSRC / name).read_bytes())
    h.update(" ".join(flags).encode())
    h.update(torch.__version__.encode())
    # the build links this environment's torch: environments (one venv per git worktree)
    # that shared a folder rebuilt it over each other at every load
    h.update(str(Path(torch.__file__).parent).encode())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def _require_toolchain() -> None:
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise ExtensionBuildError(
            f"no C++ compiler found ('{compiler}' is not on PATH): install g++ "
            "(e.g. `apt-get install g++`) or set CXX"
        )
    try:
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        if shutil.which("ninja") is None:
            raise ExtensionBuildError(
                "ninja is needed to compile the kernels: `pip install ninja`"
            ) from None


def _cpp_extension() -> ModuleType:
    """``torch.utils.cpp_extension``, imported with the CUDA toolkit dimask found.

    torch resolves CUDA_HOME once at import (taking a wrapper script's folder for
    the toolkit) and logs a warning on machines without a GPU; point it at the
    real toolkit and keep that import quiet.
    """
    if "CUDA_HOME" not in os.environ and (cuda_home := find_cuda_home()) is not None:
        os.environ["CUDA_HOME"] = str(cuda_home)
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


def _first_error(output: str) -> str:
    """The compiler's first error line, else the first line of ``output``."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() and not line.startswith("[")]
    return (errors or lines or ["unknown error"])[0]


def stage_sources(build_dir: Path, sources: tuple[str, ...]) -> list[Path]:
    """Copies of ``sources`` and the headers in ``build_dir/src`` -> the sources' paths.

    The build reads these copies, not the checkout: ninja keys its rules by absolute path,
    so two checkouts of the same sources (e.g. git worktrees) in one Python environment
    share one cached build instead of each recompiling it."""
    folder = build_dir / "src"
    folder.mkdir(parents=True, exist_ok=True)
    for name in sources + included_headers(sources):
        text = (CSRC / name).read_text()
        target = folder / name
        if not target.exists() or target.read_text() != text:
            atomic_write_text(target, text)
    return [folder / name for name in sources]


def _build(name: str, sources: tuple[str, ...], flags: tuple[str, ...], what: str,
           **load_kwargs) -> ModuleType:
    cpp_extension = _cpp_extension()
    _require_toolchain()
    build_dir = cache_root() / f"{name}-{_digest(sources, flags)}"
    build_dir.mkdir(parents=True, exist_ok=True)
    if not (build_dir / f"{name}.so").exists():
        print(f"dimask: compiling the {what} (once; cached in {build_dir})", file=sys.stderr)
    staged = stage_sources(build_dir, sources)
    try:
        return cpp_extension.load(
            name=name,
            sources=[str(path) for path in staged],
            extra_include_paths=[str(staged[0].parent)],
            build_directory=str(build_dir),
            verbose=bool(os.environ.get("DIMASK_VERBOSE_BUILD")),
            **load_kwargs,
        )
    except Exception as exc:  # compiler output is long: keep it in a log, say one line
        log = build_dir / "build-error.log"
        atomic_write_text(log, str(exc))
        raise ExtensionBuildError(
            f"could not build the {what}: {_first_error(str(exc))} (full log: {log})"
        ) from exc


@functools.cache
def load_cpu_extension() -> ModuleType:
    """The C++ CPU kernel module (``forward``, ``backward``), compiled on first call."""
    return _build(
        "dimask_msda_cpu", CPU_SOURCES, CPU_CFLAGS + CPU_LDFLAGS,
        "deformable-attention CPU kernel",
        extra_cflags=list(CPU_CFLAGS), extra_ldflags=list(CPU_LDFLAGS),
    )


@functools.cache
def load_mask_extension() -> ModuleType:
    """The C++ mask encoder module (``encode_masks``, ``resize_masks``), compiled on first
    call."""
    return _build(
        "dimask_masks_cpu", MASK_SOURCES, MASK_CFLAGS + CPU_LDFLAGS, "mask encoder",
        extra_cflags=list(MASK_CFLAGS), extra_ldflags=list(CPU_LDFLAGS),
    )


def default_cuda_archs() -> str:
    """``TORCH_CUDA_ARCH_LIST`` if set, else the visible GPUs' capabilities, else sm_80 + sm_90."""
    if env := os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return env
    if torch.cuda.is_available():
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{major}.{minor}" for major, minor in sorted(caps))
    return DEFAULT_CUDA_ARCHS


@functools.cache
def load_cuda_extension(archs: str | None = None) -> ModuleType:
    """The CUDA kernel module, compiled for ``archs`` (e.g. ``"8.0;9.0"``) on first call.

    Compiling needs nvcc (see :func:`find_cuda_home`) but no GPU, so this also
    serves to check that the kernel compiles on a CPU-only machine.
    """
    cuda_home = find_cuda_home()
    if cuda_home is None:
        raise ExtensionBuildError(
            "nvcc not found: set CUDA_HOME to a CUDA toolkit to build the CUDA kernel"
        )
    if torch.version.cuda is None:
        raise ExtensionBuildError(
            f"this torch ({torch.__version__}) is a CPU-only build; the CUDA kernel needs a "
            "CUDA build of torch"
        )
    archs = archs or default_cuda_archs()
    _cpp_extension().CUDA_HOME = str(cuda_home)  # resolved once at import; keep in step
    previous = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    try:
        return _build(
            "dimask_msda_cuda", CUDA_SOURCES, (*CUDA_CFLAGS, archs),
            f"deformable-attention CUDA kernel for sm {archs}",
            extra_cuda_cflags=list(CUDA_CFLAGS),
        )
    finally:
        if previous is None:
            del os.environ["TORCH_CUDA_ARCH_LIST"]
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = previous
