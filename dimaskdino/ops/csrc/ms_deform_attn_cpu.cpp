// C++ CPU kernel of multi-scale deformable attention, forward and backward.
//
// Parallelism: at::parallel_for (OpenMP in standard PyTorch builds, honouring
// torch.set_num_threads) over (batch, head, query) items, queries fastest, so
// that a thread stays on one head's value for long runs; each item owns its
// output row. Encoder-sized calls read a head-major copy of value (see
// kernel_value).
//
// Backward: each item owns its attention-weight and location gradients, but
// grad_value is scattered (many queries sample the same tokens). Race-free
// accumulation, in one of two ways:
//   * slice ownership (the usual case, batch x heads >= threads): the work is
//     split by (batch, head); a task processes every query of its slices and
//     is the only writer of grad_value[n, :, m, :]. No extra memory, and the
//     result is bitwise identical for any thread count.
//   * private buffers (batch x heads < threads): items are split as in the
//     forward pass; thread 0 accumulates into grad_value, thread t > 0 into a
//     zeroed copy t - 1, and the copies are then added into grad_value in
//     thread order by a parallel pass over its elements. Each thread's chunk is
//     fixed by the thread count, so the result is bitwise reproducible for a
//     given thread count. Extra memory: (threads - 1) copies of value.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <type_traits>

#include "bilinear.h"
#include "ms_deform_attn.h"

namespace dimask {
namespace {

// Items per task: enough work to amortise scheduling, small enough to balance.
constexpr int64_t kGrain = 16;

// Element strides of value: between batches, heads and tokens (channels: 1).
struct Strides {
  int64_t batch, head, token;
};

struct PlainAdd {
  template <typename T>
  void operator()(T* ptr, T v) const { *ptr += v; }
};

// kChannels > 0 fixes the channels per head at compile time (32, the width of
// every MaskDINO / DI-MaskDINO config), so that a query's accumulator stays in
// registers and channel loops unroll; 0 handles any width.
template <typename scalar_t, int64_t kChannels>
struct Kernel {
  Dims d;
  Strides strides;  // of value and of the grad_value buffers
  const scalar_t* value;
  const int64_t* shapes;
  const int64_t* starts;
  const scalar_t* loc;
  const scalar_t* attn;

  int64_t channels() const { return kChannels > 0 ? kChannels : d.channels; }
  int64_t stride() const { return strides.token; }

  // Offset of token 0 of the item's (batch, head) slice.
  int64_t slice_offset(int64_t item) const {
    const int64_t slice = item / d.queries;
    return slice / d.heads * strides.batch + slice % d.heads * strides.head;
  }

  // Row of item (n, m, q) (head-major order) in the (N, Lq, M) query tensors.
  int64_t row(int64_t item) const {
    const int64_t q = item % d.queries, slice = item / d.queries;
    return (slice / d.heads * d.queries + q) * d.heads + slice % d.heads;
  }

  // Calls fn(level, lp, taps) for every level and point of query row `row`.
  template <typename Fn>
  void for_each_sample(int64_t row, Fn&& fn) const {
    const scalar_t* item_loc = loc + row * d.levels * d.points * 2;
    for (int64_t l = 0; l < d.levels; ++l) {
      for (int64_t p = 0; p < d.points; ++p) {
        const int64_t lp = l * d.points + p;
        fn(l, lp, bilinear_taps<scalar_t>(item_loc[2 * lp], item_loc[2 * lp + 1],
                                          shapes[2 * l], shapes[2 * l + 1]));
      }
    }
  }

  void forward_item(int64_t item, scalar_t* out) const {
    const int64_t r = row(item);
    const scalar_t* head_value = value + slice_offset(item);
    const scalar_t* item_attn = attn + r * d.levels * d.points;
    scalar_t* item_out = out + r * channels();
    scalar_t local[kChannels > 0 ? kChannels : 1] = {};
    scalar_t* acc = kChannels > 0 ? local : item_out;
    for_each_sample(r, [&](int64_t l, int64_t lp, const BilinearTaps<scalar_t>& taps) {
      add_weighted_sample<scalar_t, scalar_t>(head_value + starts[l] * stride(), stride(), taps,
                                              item_attn[lp], acc, channels());
    });
    if constexpr (kChannels > 0) std::copy(local, local + kChannels, item_out);
  }

  // Gradients of item `item`; grad_value is a head-major (N, M, S, D) buffer
  // this caller owns for the item's slice.
  void backward_item(int64_t item, const scalar_t* grad_out, scalar_t* grad_value,
                     scalar_t* grad_loc, scalar_t* grad_attn) const {
    const int64_t r = row(item);
    const int64_t offset = slice_offset(item);
    const scalar_t* item_attn = attn + r * d.levels * d.points;
    const scalar_t* item_grad_out = grad_out + r * channels();
    scalar_t* item_grad_loc = grad_loc + r * d.levels * d.points * 2;
    scalar_t* item_grad_attn = grad_attn + r * d.levels * d.points;
    for_each_sample(r, [&](int64_t l, int64_t lp, const BilinearTaps<scalar_t>& taps) {
      const int64_t level_offset = offset + starts[l] * stride();
      scalar_t ga = 0, gx = 0, gy = 0;
      weighted_sample_backward<scalar_t, scalar_t>(
          value + level_offset, grad_value + level_offset, stride(), taps, item_attn[lp],
          item_grad_out, channels(), ga, gx, gy, PlainAdd{});
      item_grad_attn[lp] = ga;
      item_grad_loc[2 * lp] = gx;
      item_grad_loc[2 * lp + 1] = gy;
    });
  }

  void forward(scalar_t* out) const {
    at::parallel_for(0, d.items(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) forward_item(item, out);
    });
  }

  void backward(const scalar_t* grad_out, scalar_t* grad_value, scalar_t* grad_loc,
                scalar_t* grad_attn) const {
    // Threads at::parallel_for would use; inside an outer parallel region it
    // runs the whole range inline on the calling thread.
    const int64_t threads =
        at::in_parallel_region()
            ? 1
            : std::min<int64_t>(at::get_num_threads(), (d.items() + kGrain - 1) / kGrain);
    const int64_t slices = d.batch * d.heads;
    if (slices >= threads) {
      at::parallel_for(0, slices, 1, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin * d.queries; item < end * d.queries; ++item) {
          backward_item(item, grad_out, grad_value, grad_loc, grad_attn);
        }
      });
      return;
    }
    std::vector<at::Tensor> copies;
    for (int64_t t = 1; t < threads; ++t) {
      copies.push_back(at::zeros({d.batch * d.tokens * d.heads * d.channels},
                                 at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>())));
    }
    at::parallel_for(0, d.items(), kGrain, [&](int64_t begin, int64_t end) {
      const auto thread = static_cast<size_t>(at::get_thread_num());
      scalar_t* own = (thread == 0 || thread > copies.size())
                          ? grad_value
                          : copies[thread - 1].data_ptr<scalar_t>();
      for (int64_t item = begin; item < end; ++item) {
        backward_item(item, grad_out, own, grad_loc, grad_attn);
      }
    });
    const int64_t numel = d.batch * d.heads * d.tokens * channels();
    at::parallel_for(0, numel, 1 << 14, [&](int64_t begin, int64_t end) {
      for (const auto& copy : copies) {
        const scalar_t* src = copy.data_ptr<scalar_t>();
        for (int64_t i = begin; i < end; ++i) grad_value[i] += src[i];
      }
    });
  }
};

// `value` is (N, S, M, D), dense with unit channel stride, in either memory
// order that kernel_value() produces.
template <typename scalar_t, int64_t kChannels>
Kernel<scalar_t, kChannels> make_kernel(const at::Tensor& value,
                                        const at::Tensor& spatial_shapes,
                                        const at::Tensor& level_start_index,
                                        const at::Tensor& sampling_locations,
                                        const at::Tensor& attention_weights) {
  return {dims_of(value, sampling_locations),
          {value.stride(0), value.stride(2), value.stride(1)},
          value.data_ptr<scalar_t>(),
          spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(),
          sampling_locations.data_ptr<scalar_t>(),
          attention_weights.data_ptr<scalar_t>()};
}

// value as the kernel reads it: when every head samples at least as many
// points as there are tokens (encoder layers), a head-major copy, (N, S, M, D)
// viewed over (N, M, S, D) memory, so that a thread working through one head
// touches one contiguous S x D block instead of a strided one spread over all
// of value; otherwise (decoder layers, few queries) value itself, as the copy
// would cost more than it saves.
at::Tensor kernel_value(const at::Tensor& value, const Dims& d) {
  if (d.queries * d.levels * d.points < d.tokens) return value;
  return value.permute({0, 2, 1, 3}).contiguous().permute({0, 2, 1, 3});
}

// fn(std::integral_constant<int64_t, W>{}) with W = 32 for 32 channels per
// head, else W = 0 (runtime width).
template <typename Fn>
void with_channel_width(int64_t channels, Fn&& fn) {
  if (channels == 32) {
    fn(std::integral_constant<int64_t, 32>{});
  } else {
    fn(std::integral_constant<int64_t, 0>{});
  }
}

}  // namespace

at::Tensor ms_deform_attn_cpu_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
               c10::DeviceType::CPU);
  const Dims d = dims_of(value, sampling_locations);
  const auto source = kernel_value(value, d);
  auto out = at::zeros({d.batch, d.queries, d.heads * d.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
    with_channel_width(d.channels, [&](auto width) {
      make_kernel<scalar_t, decltype(width)::value>(source, spatial_shapes, level_start_index,
                                                    sampling_locations, attention_weights)
          .forward(out.data_ptr<scalar_t>());
    });
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_cpu_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
    const at::Tensor& grad_output) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
               c10::DeviceType::CPU);
  const Dims d = dims_of(value, sampling_locations);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.scalar_type() == value.scalar_type() &&
                  grad_output.numel() == d.items() * d.channels,
              "grad_output must be a contiguous (N, Lq, M * D) tensor like value");
  const auto source = kernel_value(value, d);
  auto grad_value = at::zeros_like(source);  // same memory order as source
  auto grad_loc = at::empty_like(sampling_locations);
  auto grad_attn = at::empty_like(attention_weights);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_backward", [&] {
    with_channel_width(d.channels, [&](auto width) {
      make_kernel<scalar_t, decltype(width)::value>(source, spatial_shapes, level_start_index,
                                                    sampling_locations, attention_weights)
          .backward(grad_output.data_ptr<scalar_t>(), grad_value.data_ptr<scalar_t>(),
                    grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>());
    });
  });
  return {grad_value.contiguous(), grad_loc, grad_attn};
}

}  // namespace dimask

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dimask multi-scale deformable attention, C++ CPU kernel";
  m.def("forward", &dimask::ms_deform_attn_cpu_forward, "forward (CPU)");
  m.def("backward", &dimask::ms_deform_attn_cpu_backward,
        "backward (CPU): grad_value, grad_sampling_locations, grad_attention_weights");
}
