// C++ CPU mask encoder: stride-4 mask logits -> each mask's COCO RLE at the
// output size, its mask score and the tight box of its pixels, in one pass
// that never materialises the full-size masks.
//
// A resized logit is a convex combination of stride-4 logits, so it can only
// be positive next to a positive stride-4 logit: the encoder evaluates only the
// output columns whose stride-4 footprint holds a positive logit and, in each,
// the rows whose footprint meets the positive rows of those stride-4 columns
// (exact: every other pixel is <= 0). Columns are visited in COCO's
// column-major order, so the runs come out in order. The loops over a column's
// pixels have no branches on their values (vectorised sigmoid sums, branch-free
// flip records), which keeps noisy masks (random weights) cheap as well.
// Parallelism: at::parallel_for over masks.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "mask_rle.h"

namespace dimask {
namespace {

struct Sizes {
  int64_t low_h, low_w, padded_h, padded_w, image_h, image_w, out_h, out_w;
};

// Resizes one mask column by column; scratch buffers are reused across columns.
class ColumnResizer {
 public:
  ColumnResizer(const AxisTaps& rows, const AxisTaps& cols, const float* logits, int64_t low_w)
      : rows_(rows), cols_(cols), logits_(logits), low_w_(low_w) {}

  // Resized logits of output column `p` at output rows [o_lo, o_hi]: a pointer to
  // o_hi - o_lo + 1 values, valid until the next call (no copies where a stage is the
  // identity).
  const float* column(int64_t p, int64_t o_lo, int64_t o_hi) {
    const LinearTap& across = cols_.second[p];
    const int64_t i_lo = rows_.second[o_lo].index0, i_hi = rows_.second[o_hi].index1;
    intermediate(across.index0, i_lo, i_hi, mid0_);
    const float* mix = mid0_.data();  // the column at intermediate rows [i_lo, i_hi]
    if (!cols_.identity) {
      intermediate(across.index1, i_lo, i_hi, mid1_);
      mix_.resize(i_hi - i_lo + 1);
      for (int64_t i = 0; i <= i_hi - i_lo; ++i)
        mix_[i] = mid0_[i] * across.weight0 + mid1_[i] * across.weight1;
      mix = mix_.data();
    }
    if (rows_.identity) return mix + (o_lo - i_lo);
    values_.resize(o_hi - o_lo + 1);
    for (int64_t o = o_lo; o <= o_hi; ++o) {
      const LinearTap& down = rows_.second[o];
      values_[o - o_lo] = mix[down.index0 - i_lo] * down.weight0 +
                          mix[down.index1 - i_lo] * down.weight1;
    }
    return values_.data();
  }

 private:
  // Stage-1 values of intermediate column `k` at intermediate rows [i_lo, i_hi].
  void intermediate(int64_t k, int64_t i_lo, int64_t i_hi, std::vector<float>& out) {
    const LinearTap& across = cols_.first[k];
    const int64_t r_lo = rows_.first[i_lo].index0, r_hi = rows_.first[i_hi].index1;
    low_.resize(r_hi - r_lo + 1);
    for (int64_t r = r_lo; r <= r_hi; ++r) {
      const float* row = logits_ + r * low_w_;
      low_[r - r_lo] = row[across.index0] * across.weight0 + row[across.index1] * across.weight1;
    }
    out.resize(i_hi - i_lo + 1);
    for (int64_t i = i_lo; i <= i_hi; ++i) {
      const LinearTap& down = rows_.first[i];
      out[i - i_lo] = low_[down.index0 - r_lo] * down.weight0 +
                      low_[down.index1 - r_lo] * down.weight1;
    }
  }

  const AxisTaps& rows_;
  const AxisTaps& cols_;
  const float* logits_;
  int64_t low_w_;
  std::vector<float> low_, mid0_, mid1_, mix_, values_;
};

// Where a column-major binary mask flips, zeros first (COCO's convention): the
// run lengths are the gaps between flips. Two flips at one pixel cancel out (a
// run that ends where the next one starts, across a column boundary).
class Flips {
 public:
  void reset() {
    at_.clear();
    bit_ = false;
  }
  // The pixels from `start` on are `bit`.
  void set(int64_t start, bool bit) {
    if (bit == bit_) return;
    bit_ = bit;
    if (!at_.empty() && at_.back() == static_cast<uint32_t>(start)) {
      at_.pop_back();
    } else {
      at_.push_back(static_cast<uint32_t>(start));
    }
  }
  // Pixels start, start + 1, ... are `values[i] > 0`, then 0 (branch-free: every pixel
  // writes its index, a flip keeps it).
  void pixels(int64_t start, const float* values, int64_t count) {
    set(start, values[0] > 0.0f);
    const size_t kept = at_.size();
    at_.resize(kept + count + 1);
    uint32_t* out = at_.data() + kept;
    bool bit = bit_;
    for (int64_t i = 1; i < count; ++i) {
      const bool inside = values[i] > 0.0f;
      *out = static_cast<uint32_t>(start + i);
      out += inside != bit;
      bit = inside;
    }
    at_.resize(out - at_.data());
    bit_ = bit;
    set(start + count, false);
  }
  // Run lengths of a mask of `total` pixels (a flip at `total`, after a run that
  // ends with the mask, starts nothing).
  std::vector<uint32_t> counts(int64_t total) const {
    const size_t flips = at_.size() - (!at_.empty() && at_.back() == total ? 1 : 0);
    std::vector<uint32_t> runs(flips + 1);
    uint32_t previous = 0;
    for (size_t k = 0; k < flips; ++k) {
      runs[k] = at_[k] - previous;
      previous = at_[k];
    }
    runs.back() = static_cast<uint32_t>(total) - previous;
    return runs;
  }

 private:
  std::vector<uint32_t> at_;
  bool bit_ = false;
};

struct Encoded {
  std::string counts;
  double score_sum = 0.0;
  int64_t area = 0;
  int64_t x_min = std::numeric_limits<int64_t>::max(), x_max = -1;
  int64_t y_min = std::numeric_limits<int64_t>::max(), y_max = -1;
};

// Buffers one thread reuses from mask to mask.
struct Scratch {
  std::vector<int64_t> top, bottom;
  Flips flips;
};

class MaskEncoder {
 public:
  explicit MaskEncoder(const Sizes& s)
      : s_(s),
        rows_(s.low_h, s.padded_h, s.image_h, s.out_h),
        cols_(s.low_w, s.padded_w, s.image_w, s.out_w) {}

  Encoded encode(const float* logits, Scratch& scratch) const {
    // positive stride-4 rows of each stride-4 column: [top, bottom], empty if top > bottom
    std::vector<int64_t>& top = scratch.top;
    std::vector<int64_t>& bottom = scratch.bottom;
    top.assign(s_.low_w, s_.low_h);
    bottom.assign(s_.low_w, -1);
    int64_t j_first = s_.low_w, j_last = -1;  // stride-4 columns with a positive logit
    for (int64_t r = 0; r < s_.low_h; ++r) {
      const float* row = logits + r * s_.low_w;
      for (int64_t j = 0; j < s_.low_w; ++j) {
        if (row[j] > 0.0f) {
          top[j] = std::min(top[j], r);
          bottom[j] = r;
          j_first = std::min(j_first, j);
          j_last = std::max(j_last, j);
        }
      }
    }
    Encoded e;
    Flips& flips = scratch.flips;
    flips.reset();
    ColumnResizer resizer(rows_, cols_, logits, s_.low_w);
    const int64_t p_end = j_last < 0 ? -1 : cols_.reach_end[j_last];
    for (int64_t p = j_last < 0 ? 0 : cols_.reach_begin[j_first]; p <= p_end; ++p) {
      int64_t r_top = s_.low_h, r_bottom = -1;
      for (int64_t j = cols_.low_first[p]; j <= cols_.low_last[p]; ++j) {
        r_top = std::min(r_top, top[j]);
        r_bottom = std::max(r_bottom, bottom[j]);
      }
      if (r_top > r_bottom) continue;
      const int64_t o_lo = rows_.reach_begin[r_top], o_hi = rows_.reach_end[r_bottom];
      if (o_lo > o_hi) continue;
      const float* v = resizer.column(p, o_lo, o_hi);
      const int64_t count = o_hi - o_lo + 1, start = p * s_.out_h + o_lo;
      float sum = 0.0f, area = 0.0f;  // area: exact, a column has far fewer than 2^24 pixels
#pragma omp simd reduction(+ : sum, area)
      for (int64_t i = 0; i < count; ++i) {
        const float inside = static_cast<float>(v[i] > 0.0f);
        sum += inside * positive_sigmoid(v[i]);
        area += inside;
      }
      if (area == 0.0f) continue;
      flips.pixels(start, v, count);
      e.score_sum += sum;
      e.area += static_cast<int64_t>(area);
      int64_t first = 0, last = count - 1;
      while (!(v[first] > 0.0f)) ++first;
      while (!(v[last] > 0.0f)) --last;
      e.y_min = std::min(e.y_min, o_lo + first);
      e.y_max = std::max(e.y_max, o_lo + last);
      e.x_min = std::min(e.x_min, p);
      e.x_max = p;
    }
    e.counts = rle_string(flips.counts(s_.out_h * s_.out_w));
    return e;
  }

  // Every resized logit of one mask -> out (out_h x out_w, row-major).
  void resize(const float* logits, float* out) const {
    ColumnResizer resizer(rows_, cols_, logits, s_.low_w);
    for (int64_t p = 0; p < s_.out_w; ++p) {
      const float* values = resizer.column(p, 0, s_.out_h - 1);
      for (int64_t o = 0; o < s_.out_h; ++o) out[o * s_.out_w + p] = values[o];
    }
  }

 private:
  Sizes s_;
  AxisTaps rows_, cols_;
};

Sizes check_and_size(const at::Tensor& logits, const std::vector<int64_t>& padded,
                     const std::vector<int64_t>& image, const std::vector<int64_t>& output) {
  TORCH_CHECK(logits.device().is_cpu() && logits.scalar_type() == at::kFloat &&
                  logits.dim() == 3 && logits.is_contiguous(),
              "mask logits must be a contiguous float32 (N, h, w) CPU tensor");
  TORCH_CHECK(padded.size() == 2 && image.size() == 2 && output.size() == 2,
              "padded, image and output sizes must be (H, W)");
  const Sizes s{logits.size(1), logits.size(2), padded[0], padded[1],
                image[0],       image[1],       output[0], output[1]};
  TORCH_CHECK(s.low_h > 0 && s.low_w > 0 && s.image_h > 0 && s.image_w > 0 &&
                  s.image_h <= s.padded_h && s.image_w <= s.padded_w && s.out_h > 0 &&
                  s.out_w > 0,
              "need 0 < image size <= padded size, a positive output size and non-empty logits");
  TORCH_CHECK(s.out_h * s.out_w <= std::numeric_limits<uint32_t>::max(),
              "output size too large for COCO's 32-bit run lengths");
  return s;
}

}  // namespace

// -> (scores (N,) float32: mean probability inside each mask, 0 for an empty
// one; boxes (N, 4) float64: the tight [x, y, w, h] of each mask, zeros for an
// empty one; counts: each mask's compressed RLE string)
std::tuple<at::Tensor, at::Tensor, std::vector<std::string>> encode_masks(
    const at::Tensor& logits, const std::vector<int64_t>& padded,
    const std::vector<int64_t>& image, const std::vector<int64_t>& output) {
  const Sizes s = check_and_size(logits, padded, image, output);
  const int64_t count = logits.size(0);
  const MaskEncoder encoder(s);
  std::vector<Encoded> found(count);
  const float* data = logits.data_ptr<float>();
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    for (int64_t n = begin; n < end; ++n)
      found[n] = encoder.encode(data + n * s.low_h * s.low_w, scratch);
  });
  auto scores = at::empty({count}, at::kFloat);
  auto boxes = at::zeros({count, 4}, at::kDouble);
  auto score = scores.accessor<float, 1>();
  auto box = boxes.accessor<double, 2>();
  std::vector<std::string> counts(count);
  for (int64_t n = 0; n < count; ++n) {
    Encoded& e = found[n];
    score[n] = static_cast<float>(e.score_sum / (static_cast<double>(e.area) + 1e-6));
    if (e.area > 0) {
      box[n][0] = static_cast<double>(e.x_min);
      box[n][1] = static_cast<double>(e.y_min);
      box[n][2] = static_cast<double>(e.x_max - e.x_min + 1);
      box[n][3] = static_cast<double>(e.y_max - e.y_min + 1);
    }
    counts[n] = std::move(e.counts);
  }
  return {scores, boxes, counts};
}

// The encoder's resized logits (N, out_h, out_w): what it thresholds, for tests.
at::Tensor resize_masks(const at::Tensor& logits, const std::vector<int64_t>& padded,
                        const std::vector<int64_t>& image, const std::vector<int64_t>& output) {
  const Sizes s = check_and_size(logits, padded, image, output);
  const int64_t count = logits.size(0);
  const MaskEncoder encoder(s);
  auto out = at::empty({count, s.out_h, s.out_w}, at::kFloat);
  const float* data = logits.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      encoder.resize(data + n * s.low_h * s.low_w, dst + n * s.out_h * s.out_w);
  });
  return out;
}

}  // namespace dimask

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dimask mask encoder, C++ CPU kernel";
  m.def("encode_masks", &dimask::encode_masks,
        "stride-4 mask logits -> (scores, tight boxes, compressed RLE strings)");
  m.def("resize_masks", &dimask::resize_masks, "the encoder's resized logits (for tests)");
}
