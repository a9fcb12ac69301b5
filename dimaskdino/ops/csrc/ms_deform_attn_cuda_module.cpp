// Python bindings of the CUDA kernel (kept out of the .cu file so that nvcc
// never compiles pybind11).
#include <torch/extension.h>

#include "ms_deform_attn.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dimask multi-scale deformable attention, CUDA kernel";
  m.def("forward", &dimask::ms_deform_attn_cuda_forward, "forward (CUDA)");
  m.def("backward", &dimask::ms_deform_attn_cuda_backward,
        "backward (CUDA): grad_value, grad_sampling_locations, grad_attention_weights");
}
