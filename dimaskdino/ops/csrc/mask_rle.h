// Math of the mask encoder: resizing stride-4 mask logits to an image's output
// size, and COCO's compressed RLE strings.
//
// The resize is the one instance inference does with two F.interpolate calls
// (bilinear, align_corners=False): stride-4 logits (h, w) are upsampled to the
// padded batch size (Hp, Wp), cropped to the image (Hi, Wi) and resized to the
// output size (Ho, Wo); a same-size resize is skipped, as F.interpolate makes
// it the identity. Both stages are separable, so a row (or column) of either
// stage depends on two rows (columns) of the stage before it, with PyTorch's
// indices and weights (LinearTap); the encoder evaluates the same products and
// sums in the same order as ATen's CPU kernel.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace dimask {

// Output index `dst` of a linear resize from `in_size` to `out_size` samples:
// value = weight0 * src[index0] + weight1 * src[index1] (ATen's source index
// with half-pixel centres, clamped at 0; the upper neighbour clamped to the
// last sample). A same-size resize maps every index to itself with weight 1.
struct LinearTap {
  int64_t index0, index1;
  float weight0, weight1;
};

inline LinearTap linear_tap(int64_t dst, int64_t in_size, int64_t out_size) {
  if (in_size == out_size) return {dst, dst, 1.0f, 0.0f};
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  float real = scale * (static_cast<float>(dst) + 0.5f) - 0.5f;
  if (real < 0.0f) real = 0.0f;
  int64_t i0 = static_cast<int64_t>(real);  // real >= 0: truncation is floor
  if (i0 > in_size - 1) i0 = in_size - 1;
  const int64_t i1 = i0 + (i0 < in_size - 1 ? 1 : 0);
  float lambda1 = real - static_cast<float>(i0);
  lambda1 = lambda1 < 0.0f ? 0.0f : (lambda1 > 1.0f ? 1.0f : lambda1);
  return {i0, i1, 1.0f - lambda1, lambda1};
}

inline std::vector<LinearTap> linear_taps(int64_t count, int64_t in_size, int64_t out_size) {
  std::vector<LinearTap> taps(count);
  for (int64_t i = 0; i < count; ++i) taps[i] = linear_tap(i, in_size, out_size);
  return taps;
}

// One axis of the two-stage resize: `first` maps the cropped intermediate
// samples (the first `image` of `padded`) to stride-4 samples, `second` maps
// output samples to intermediate ones; `identity` when the second stage is
// skipped (image == output). Output sample o reads the stride-4 samples
// [low_first[o], low_last[o]] (its footprint); those whose footprint meets
// [a, b] are [reach_begin[a], reach_end[b]] (both tables are monotone).
struct AxisTaps {
  std::vector<LinearTap> first, second;
  bool identity;
  std::vector<int64_t> low_first, low_last, reach_begin, reach_end;

  AxisTaps(int64_t low, int64_t padded, int64_t image, int64_t output)
      : first(linear_taps(image, low, padded)),
        second(linear_taps(output, image, output)),
        identity(image == output),
        low_first(output),
        low_last(output),
        reach_begin(low, output),
        reach_end(low, -1) {
    for (int64_t o = 0; o < output; ++o) {
      low_first[o] = first[second[o].index0].index0;
      low_last[o] = first[second[o].index1].index1;
    }
    for (int64_t r = 0, o = 0; r < low; ++r) {  // first o whose footprint ends at or after r
      while (o < output && low_last[o] < r) ++o;
      reach_begin[r] = o;
    }
    for (int64_t r = low - 1, o = output - 1; r >= 0; --r) {  // last o starting at or before r
      while (o >= 0 && low_first[o] > r) --o;
      reach_end[r] = o;
    }
  }
};

// The logistic sigmoid of v > 0 in plain float arithmetic, so that a loop over it
// vectorises: exp(-v) = 2^n exp(r) with n = round(-v / ln 2) and |r| <= ln(2) / 2
// (ln 2 split in two for an exact reduction), exp(r) by its degree-7 Taylor
// polynomial (truncation error below 6e-9 relative), 2^n through the exponent
// bits; -v is clamped to [-87, 0] (below -87 exp leaves float's normal range, and
// the sigmoid rounds to 1 anyway). Within 1 ulp of the exact sigmoid for v > 0.
inline float positive_sigmoid(float v) {
  const float x = std::min(std::max(-v, -87.0f), 0.0f);
  const int32_t n = static_cast<int32_t>(x * 1.44269504f - 0.5f);  // x <= 0: rounds
  const float r = (x - static_cast<float>(n) * 0.693359375f) +
                  static_cast<float>(n) * 2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return 1.0f / (1.0f + p * scale);
}

// COCO's compressed RLE of run lengths `counts` (zeros first, column-major):
// each count, after the first two minus the count two before it, is written in
// 5-bit groups, least significant first, as characters '0' + group, with 0x20
// set on every group but the last; a group is the last once the rest of the
// (sign-extended) value carries no information beyond that group's sign bit.
inline std::string rle_string(const std::vector<uint32_t>& counts) {
  std::string out;
  out.reserve(counts.size() * 2);
  for (size_t i = 0; i < counts.size(); ++i) {
    int64_t x = counts[i];
    if (i > 2) x -= counts[i - 2];
    bool more = true;
    while (more) {
      int64_t group = x & 0x1f;
      x >>= 5;  // arithmetic shift: negative deltas stay negative
      more = (group & 0x10) ? x != -1 : x != 0;
      if (more) group |= 0x20;
      out.push_back(static_cast<char>(group + 48));
    }
  }
  return out;
}

}  // namespace dimask
