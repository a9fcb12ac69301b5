// Declarations and argument checks shared by the CPU and CUDA entry points.
//
// Shapes (N batch, S = sum_l H_l * W_l value tokens, M heads, D channels per
// head, Lq queries, L levels, P points per level and head):
//   value               (N, S, M, D)
//   spatial_shapes      (L, 2) int64, rows (H, W)
//   level_start_index   (L,) int64
//   sampling_locations  (N, Lq, M, L, P, 2) normalized (x, y)
//   attention_weights   (N, Lq, M, L, P)
//   output              (N, Lq, M * D)
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace dimask {

// Sizes of one call; items are the (batch, query, head) triples.
struct Dims {
  int64_t batch, tokens, heads, channels, queries, levels, points;

  int64_t items() const { return batch * queries * heads; }
};

inline Dims dims_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {value.size(0),
          value.size(1),
          value.size(2),
          value.size(3),
          sampling_locations.size(1),
          sampling_locations.size(3),
          sampling_locations.size(4)};
}

// Shapes, dtypes, contiguity, and every tensor on value's device, which must
// be of `device_type` (the kernel's).
inline void check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                         const at::Tensor& level_start_index,
                         const at::Tensor& sampling_locations,
                         const at::Tensor& attention_weights, c10::DeviceType device_type) {
  TORCH_CHECK(value.device().type() == device_type, "the ", c10::DeviceTypeName(device_type),
              " kernel got tensors on ", value.device());
  TORCH_CHECK(value.dim() == 4, "value must be (N, S, M, D), got ", value.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "spatial_shapes must be (L, 2), got ", spatial_shapes.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong, "spatial_shapes must be int64");
  TORCH_CHECK(level_start_index.scalar_type() == at::kLong, "level_start_index must be int64");
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "sampling_locations must be (N, Lq, M, L, P, 2), got ", sampling_locations.sizes());
  TORCH_CHECK(attention_weights.dim() == 5, "attention_weights must be (N, Lq, M, L, P), got ",
              attention_weights.sizes());
  TORCH_CHECK(sampling_locations.size(0) == value.size(0) &&
                  sampling_locations.size(2) == value.size(2) &&
                  sampling_locations.size(3) == spatial_shapes.size(0),
              "sampling_locations ", sampling_locations.sizes(), " does not match value ",
              value.sizes(), " and ", spatial_shapes.size(0), " levels");
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "attention_weights ", attention_weights.sizes(),
              " does not match sampling_locations ", sampling_locations.sizes());
  TORCH_CHECK(value.scalar_type() == sampling_locations.scalar_type() &&
                  value.scalar_type() == attention_weights.scalar_type(),
              "value, sampling_locations and attention_weights must share a dtype");
  for (const auto* t : {&value, &spatial_shapes, &level_start_index, &sampling_locations,
                        &attention_weights}) {
    TORCH_CHECK(t->is_contiguous(), "ms_deform_attn expects contiguous tensors");
    TORCH_CHECK(t->device() == value.device(), "ms_deform_attn expects all tensors on ",
                value.device(), ", got one on ", t->device());
  }
}

at::Tensor ms_deform_attn_cpu_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights);

std::vector<at::Tensor> ms_deform_attn_cpu_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
    const at::Tensor& grad_output);

at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights);

std::vector<at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
    const at::Tensor& grad_output);

}  // namespace dimask
