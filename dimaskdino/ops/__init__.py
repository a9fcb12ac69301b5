"""Compiled ops: multi-scale deformable attention and the mask encoder.

``ms_deform_attn`` dispatches to the C++ CPU kernel, the CUDA kernel or the
pure-PyTorch reference (see its docstring); ``MSDeformAttn`` is the layer the
encoder and decoder use. :mod:`dimaskdino.ops.masks` turns stride-4 mask logits
into full-size masks or, through a C++ kernel, straight into COCO RLEs.
``dimask build-ops`` compiles the kernels ahead of first use.
"""

from dimaskdino.ops.build import ExtensionBuildError
from dimaskdino.ops.dispatch import (
    BACKENDS,
    KernelUnavailableWarning,
    ms_deform_attn,
)
from dimaskdino.ops.module import MSDeformAttn
from dimaskdino.ops.reference import ms_deform_attn_reference

__all__ = [
    "BACKENDS",
    "ExtensionBuildError",
    "KernelUnavailableWarning",
    "MSDeformAttn",
    "ms_deform_attn",
    "ms_deform_attn_reference",
]
