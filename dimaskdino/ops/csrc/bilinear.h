// Bilinear sampling math of multi-scale deformable attention, shared by the
// C++ CPU kernel and the CUDA kernel so that CPU tests exercise the exact
// arithmetic the GPU runs.
//
// Conventions (those of the official Deformable DETR / MaskDINO op):
//   * a normalized location (x, y) in [0, 1] maps to the image coordinate
//     (x * W - 0.5, y * H - 0.5): pixel centres sit at integer coordinates;
//   * a location whose image coordinate is not inside (-1, W) x (-1, H)
//     contributes nothing; inside it, each of the four corners that falls
//     outside the map contributes zero (zero padding).
//
// Memory layout: `value` points at channel 0 of spatial position 0 of one
// level for one (batch, head); consecutive spatial positions are `stride`
// elements apart (stride = heads * channels), channels are contiguous.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DIMASK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DIMASK_HOST_DEVICE inline
#endif

namespace dimask {

// The four corners of one bilinear sample: their row-major positions in the
// level (-1 for a corner outside the map), their interpolation weights, and
// the derivatives of those weights with respect to the normalized x and y.
template <typename acc_t>
struct BilinearTaps {
  int64_t index[4];
  acc_t weight[4];
  acc_t dweight_dx[4];
  acc_t dweight_dy[4];
};

template <typename acc_t>
DIMASK_HOST_DEVICE BilinearTaps<acc_t> bilinear_taps(acc_t loc_x, acc_t loc_y,
                                                     int64_t height, int64_t width) {
  BilinearTaps<acc_t> taps;
  const acc_t x = loc_x * static_cast<acc_t>(width) - acc_t(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(height) - acc_t(0.5);
  if (!(x > acc_t(-1) && y > acc_t(-1) && x < static_cast<acc_t>(width) &&
        y < static_cast<acc_t>(height))) {
    for (int k = 0; k < 4; ++k) taps.index[k] = -1;
    return taps;
  }
  // x, y > -1 here, so floor is truncation except on (-1, 0).
  const int64_t x0 = x < acc_t(0) ? -1 : static_cast<int64_t>(x);
  const int64_t y0 = y < acc_t(0) ? -1 : static_cast<int64_t>(y);
  const int64_t x1 = x0 + 1;
  const int64_t y1 = y0 + 1;
  const acc_t fx = x - static_cast<acc_t>(x0);  // weight of the right column
  const acc_t fy = y - static_cast<acc_t>(y0);  // weight of the lower row
  const acc_t gx = acc_t(1) - fx;
  const acc_t gy = acc_t(1) - fy;
  const acc_t w = static_cast<acc_t>(width);   // d(image x) / d(normalized x)
  const acc_t h = static_cast<acc_t>(height);  // d(image y) / d(normalized y)

  const bool left = x0 >= 0, right = x1 < width, top = y0 >= 0, bottom = y1 < height;
  // Corner order: (y0, x0), (y0, x1), (y1, x0), (y1, x1).
  taps.index[0] = (top && left) ? y0 * width + x0 : -1;
  taps.index[1] = (top && right) ? y0 * width + x1 : -1;
  taps.index[2] = (bottom && left) ? y1 * width + x0 : -1;
  taps.index[3] = (bottom && right) ? y1 * width + x1 : -1;
  taps.weight[0] = gy * gx;
  taps.weight[1] = gy * fx;
  taps.weight[2] = fy * gx;
  taps.weight[3] = fy * fx;
  taps.dweight_dx[0] = -gy * w;
  taps.dweight_dx[1] = gy * w;
  taps.dweight_dx[2] = -fy * w;
  taps.dweight_dx[3] = fy * w;
  taps.dweight_dy[0] = -gx * h;
  taps.dweight_dy[1] = -fx * h;
  taps.dweight_dy[2] = gx * h;
  taps.dweight_dy[3] = fx * h;
  return taps;
}

// out[c] += coef * sample[c] for the `channels` channels starting at `value`.
// `out` never aliases `value` (likewise below: value, grad_value and grad_out
// are distinct buffers), which lets compilers vectorise without runtime checks.
template <typename scalar_t, typename acc_t>
DIMASK_HOST_DEVICE void add_weighted_sample(const scalar_t* __restrict__ value, int64_t stride,
                                            const BilinearTaps<acc_t>& taps, acc_t coef,
                                            acc_t* __restrict__ out, int64_t channels) {
  for (int k = 0; k < 4; ++k) {
    if (taps.index[k] < 0) continue;
    const acc_t c = coef * taps.weight[k];
    const scalar_t* src = value + taps.index[k] * stride;
    for (int64_t ch = 0; ch < channels; ++ch) out[ch] += c * static_cast<acc_t>(src[ch]);
  }
}

// Gradient of `attn * sample` for the `channels` channels starting at `value`,
// given the gradient `grad_out` of those output channels.
//   * grad_value receives attn * weight_k * grad_out through `add(ptr, v)`, which
//     is a plain `+=` on the CPU (race-free by construction of the caller) and an
//     atomic add on the GPU;
//   * grad_attn, grad_x, grad_y (normalized location) are accumulated in place.
template <typename scalar_t, typename acc_t, typename grad_t, typename AddFn>
DIMASK_HOST_DEVICE void weighted_sample_backward(const scalar_t* __restrict__ value,
                                                 grad_t* __restrict__ grad_value,
                                                 int64_t stride, const BilinearTaps<acc_t>& taps,
                                                 acc_t attn, const scalar_t* __restrict__ grad_out,
                                                 int64_t channels, acc_t& grad_attn,
                                                 acc_t& grad_x, acc_t& grad_y, AddFn add) {
  for (int k = 0; k < 4; ++k) {
    if (taps.index[k] < 0) continue;
    const int64_t offset = taps.index[k] * stride;
    const scalar_t* src = value + offset;
    grad_t* dst = grad_value + offset;
    const acc_t c = attn * taps.weight[k];
    acc_t dot = acc_t(0);  // <grad_out, corner value>
    for (int64_t ch = 0; ch < channels; ++ch) {
      const acc_t g = static_cast<acc_t>(grad_out[ch]);
      dot += g * static_cast<acc_t>(src[ch]);
      add(dst + ch, c * g);
    }
    grad_attn += taps.weight[k] * dot;
    grad_x += attn * taps.dweight_dx[k] * dot;
    grad_y += attn * taps.dweight_dy[k] * dot;
  }
}

}  // namespace dimask
