// CUDA kernel of multi-scale deformable attention, forward and backward.
//
// One thread per output element (batch, query, head, channel), channels
// fastest, so that neighbouring threads read neighbouring value channels and
// write neighbouring outputs. The sampling math is the same header the CPU
// kernel uses (bilinear.h), called on a single channel.
//
// Backward: grad_value is scattered with atomic adds. The attention-weight and
// location gradients of one (batch, query, head, level, point) are sums over
// the head's channels: when the channel count is a power of two up to the warp
// size, the channels of one head are lanes of one warp and are summed with
// warp shuffles, then written by the head's first lane; otherwise every thread
// adds its share atomically. Half and bfloat16 inputs compute and accumulate
// gradients in float.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "bilinear.h"
#include "ms_deform_attn.h"

namespace dimask {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;

struct AtomicAdd {
  template <typename T>
  __device__ __forceinline__ void operator()(T* ptr, T v) const { gpuAtomicAdd(ptr, v); }
};

template <typename scalar_t>
__global__ void forward_kernel(Dims d, const scalar_t* __restrict__ value,
                               const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts,
                               const scalar_t* __restrict__ loc,
                               const scalar_t* __restrict__ attn, scalar_t* __restrict__ out,
                               int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int64_t ch = index % d.channels;
  const int64_t item = index / d.channels;  // (n, q, m) flattened
  const int64_t m = item % d.heads;
  const int64_t n = item / (d.heads * d.queries);
  const int64_t stride = d.heads * d.channels;
  const scalar_t* head_value = value + n * d.tokens * stride + m * d.channels + ch;
  const scalar_t* item_loc = loc + item * d.levels * d.points * 2;
  const scalar_t* item_attn = attn + item * d.levels * d.points;
  acc_t acc = acc_t(0);
  for (int64_t l = 0; l < d.levels; ++l) {
    const scalar_t* level_value = head_value + starts[l] * stride;
    for (int64_t p = 0; p < d.points; ++p) {
      const int64_t lp = l * d.points + p;
      const auto taps = bilinear_taps<acc_t>(static_cast<acc_t>(item_loc[2 * lp]),
                                             static_cast<acc_t>(item_loc[2 * lp + 1]),
                                             shapes[2 * l], shapes[2 * l + 1]);
      add_weighted_sample<scalar_t, acc_t>(level_value, stride, taps,
                                           static_cast<acc_t>(item_attn[lp]), &acc, 1);
    }
  }
  out[index] = static_cast<scalar_t>(acc);
}

// kGroupReduce: channels is a power of two <= 32, so each head's channels are
// `channels` consecutive lanes of one warp. Threads past `total` stay alive
// (without touching memory) so that every lane takes part in the shuffles.
template <typename scalar_t, bool kGroupReduce>
__global__ void backward_kernel(Dims d, const scalar_t* __restrict__ value,
                                const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts,
                                const scalar_t* __restrict__ loc,
                                const scalar_t* __restrict__ attn,
                                const scalar_t* __restrict__ grad_out,
                                at::opmath_type<scalar_t>* grad_value,
                                at::opmath_type<scalar_t>* grad_loc,
                                at::opmath_type<scalar_t>* grad_attn, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = index < total;
  if (!kGroupReduce && !active) return;
  const int64_t safe = active ? index : 0;
  const int64_t ch = safe % d.channels;
  const int64_t item = safe / d.channels;
  const int64_t m = item % d.heads;
  const int64_t n = item / (d.heads * d.queries);
  const int64_t stride = d.heads * d.channels;
  const int64_t head_offset = n * d.tokens * stride + m * d.channels + ch;
  const scalar_t* item_loc = loc + item * d.levels * d.points * 2;
  const scalar_t* item_attn = attn + item * d.levels * d.points;
  acc_t* item_grad_loc = grad_loc + item * d.levels * d.points * 2;
  acc_t* item_grad_attn = grad_attn + item * d.levels * d.points;
  for (int64_t l = 0; l < d.levels; ++l) {
    const int64_t level_offset = head_offset + starts[l] * stride;
    for (int64_t p = 0; p < d.points; ++p) {
      const int64_t lp = l * d.points + p;
      acc_t ga = acc_t(0), gx = acc_t(0), gy = acc_t(0);
      if (active) {
        const auto taps = bilinear_taps<acc_t>(static_cast<acc_t>(item_loc[2 * lp]),
                                               static_cast<acc_t>(item_loc[2 * lp + 1]),
                                               shapes[2 * l], shapes[2 * l + 1]);
        weighted_sample_backward<scalar_t, acc_t>(
            value + level_offset, grad_value + level_offset, stride, taps,
            static_cast<acc_t>(item_attn[lp]), grad_out + safe, 1, ga, gx, gy, AtomicAdd{});
      }
      if (kGroupReduce) {
        for (int offset = static_cast<int>(d.channels) / 2; offset > 0; offset /= 2) {
          ga += __shfl_down_sync(kFullMask, ga, offset, static_cast<int>(d.channels));
          gx += __shfl_down_sync(kFullMask, gx, offset, static_cast<int>(d.channels));
          gy += __shfl_down_sync(kFullMask, gy, offset, static_cast<int>(d.channels));
        }
        if (active && ch == 0) {
          item_grad_attn[lp] = ga;
          item_grad_loc[2 * lp] = gx;
          item_grad_loc[2 * lp + 1] = gy;
        }
      } else {
        gpuAtomicAdd(item_grad_attn + lp, ga);
        gpuAtomicAdd(item_grad_loc + 2 * lp, gx);
        gpuAtomicAdd(item_grad_loc + 2 * lp + 1, gy);
      }
    }
  }
}

unsigned blocks_for(int64_t total) {
  return static_cast<unsigned>((total + kThreads - 1) / kThreads);
}

}  // namespace

at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
               c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(value.device());
  const Dims d = dims_of(value, sampling_locations);
  auto out = at::empty({d.batch, d.queries, d.heads * d.channels}, value.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_forward", [&] {
        forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
            d, value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
            level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<scalar_t>(),
            attention_weights.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), total);
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::vector<at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
    const at::Tensor& grad_output) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
               c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(value.device());
  const Dims d = dims_of(value, sampling_locations);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.device() == value.device() &&
                  grad_output.scalar_type() == value.scalar_type() &&
                  grad_output.numel() == d.batch * d.queries * d.heads * d.channels,
              "grad_output must be a contiguous (N, Lq, M * D) tensor like value");
  const auto acc_dtype = at::toOpMathType(value.scalar_type());
  auto grad_value = at::zeros(value.sizes(), value.options().dtype(acc_dtype));
  auto grad_loc = at::zeros(sampling_locations.sizes(), value.options().dtype(acc_dtype));
  auto grad_attn = at::zeros(attention_weights.sizes(), value.options().dtype(acc_dtype));
  const int64_t total = grad_output.numel();
  if (total > 0) {
    const bool group_reduce = d.channels <= 32 && (d.channels & (d.channels - 1)) == 0;
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_backward", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          auto launch = [&](auto kernel) {
            kernel<<<blocks_for(total), kThreads, 0, stream>>>(
                d, value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
                level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<scalar_t>(),
                attention_weights.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(),
                grad_value.data_ptr<acc_t>(), grad_loc.data_ptr<acc_t>(),
                grad_attn.data_ptr<acc_t>(), total);
          };
          if (group_reduce) {
            launch(backward_kernel<scalar_t, true>);
          } else {
            launch(backward_kernel<scalar_t, false>);
          }
        });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const auto dtype = value.scalar_type();
  return {grad_value.to(dtype), grad_loc.to(dtype), grad_attn.to(dtype)};
}

}  // namespace dimask
