// Bilinear taps of RoIAlign on the CPU: which pixels a RoI's bins read, with which
// weights, and the per-plane pooling loops built on them. Included by
// roi_align_kernel.cpp only.
//
// Bilinear sampling is separable: a sample at (y, x) reads rows {y_lo, y_hi} with
// weights {1 - ly, ly} and columns {x_lo, x_hi} with {1 - lx, lx}, and a sample is
// dropped when y or x is out of range. The sum over the grid_h x grid_w samples of a
// bin is therefore (sum of its row taps) x (sum of its column taps), taps that hit the
// same pixel merged: about (g + 1)^2 terms per bin instead of 4 g^2 with g x g samples.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "cpu/roi_align_common.h"

namespace detbench {
namespace cpu {

template <typename T>
struct Tap {
  int32_t index;  // row or column of the feature map (planes are checked < 2^31 pixels)
  T weight;
};

// Adds a tap to `taps` (sorted by index, one entry per index), merging equal indices.
// Samples arrive in increasing position, so the search stops within two steps.
template <typename T>
void add_tap(std::vector<Tap<T>>& taps, size_t first, int64_t index, T weight) {
  size_t k = taps.size();
  while (k > first && taps[k - 1].index > index) {
    --k;
  }
  if (k > first && taps[k - 1].index == index) {
    taps[k - 1].weight += weight;
    return;
  }
  taps.insert(taps.begin() + static_cast<std::ptrdiff_t>(k), Tap<T>{static_cast<int32_t>(index), weight});
}

// Position of sample i of `grid` in a bin starting at `start`; torchvision's expression.
template <typename T>
inline T sample_pos(T start, T bin, int64_t i, int64_t grid) {
  return start + static_cast<T>(i + .5f) * bin / static_cast<T>(grid);
}

// First i in [lo, hi) with pred(i), for a pred that is false and then true along i.
template <typename Pred>
int64_t first_true(int64_t lo, int64_t hi, Pred pred) {
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (pred(mid)) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// The samples [begin, end) of a bin that can land in [-1, size]. Positions are
// monotone in i (every rounding step is), increasing for bin >= 0 and decreasing for
// a negative bin (aligned, inverted box, fixed ratio), so those samples form one
// run. Finding it by bisection bounds the cost of a huge box by the map size instead
// of its sample count (a 1e12-pixel box has ~1e11 samples per bin).
template <typename T>
std::pair<int64_t, int64_t> sample_range(T start, T bin, int64_t grid, int64_t size) {
  const T low = T(-1), high = static_cast<T>(size);
  if (bin >= T(0)) {
    return {first_true(0, grid, [&](int64_t i) { return sample_pos(start, bin, i, grid) >= low; }),
            first_true(0, grid, [&](int64_t i) { return sample_pos(start, bin, i, grid) > high; })};
  }
  return {first_true(0, grid, [&](int64_t i) { return sample_pos(start, bin, i, grid) <= high; }),
          first_true(0, grid, [&](int64_t i) { return sample_pos(start, bin, i, grid) < low; })};
}

// Appends the taps of `grid` samples at start + (i + 0.5) * bin / grid, i < grid, on
// an axis of `size` pixels. Same rules as torchvision: a sample outside [-1, size]
// is dropped; one in [-1, 0] reads pixel 0; one at or past size - 1 reads the last
// pixel. A sample at a NaN position (NaN or infinite box) is dropped too.
template <typename T>
void add_axis_taps(std::vector<Tap<T>>& taps, T start, T bin, int64_t grid, int64_t size) {
  const size_t first = taps.size();
  const auto [begin, end] = sample_range(start, bin, grid, size);
  for (int64_t i = begin; i < end; ++i) {
    T pos = sample_pos(start, bin, i, grid);
    if (!(pos >= T(-1) && pos <= static_cast<T>(size))) {  // written so that NaN fails it
      continue;
    }
    pos = pos <= T(0) ? T(0) : pos;
    int64_t lo = static_cast<int64_t>(pos);  // pos >= 0: truncation is floor
    int64_t hi = lo + 1;
    if (lo >= size - 1) {
      lo = hi = size - 1;
      pos = static_cast<T>(lo);
    }
    const T frac = pos - static_cast<T>(lo);
    add_tap(taps, first, lo, T(1) - frac);
    add_tap(taps, first, hi, frac);
  }
}

// Separable taps of one RoI: the row taps of each bin row (index premultiplied by the
// width, weight divided by the sample count) and the column taps of each bin column.
// Bin (y, x) of a channel plane p is
//   sum over row taps r of y: r.weight * (sum over column taps q of x: q.weight * p[r.index + q.index]).
// That is (ph + pw) * (g + 1) taps or so instead of ph * pw * (g + 1)^2 expanded terms:
// a few hundred bytes, rebuilt for every block of channels (roi_align_kernel.cpp).
template <typename T>
struct RoiTaps {
  std::vector<Tap<T>> rows, cols;             // taps of every bin row / bin column
  std::vector<int64_t> row_start, col_start;  // [ph + 1], [pw + 1] ranges into rows / cols
  std::vector<int32_t> col_index;             // cols split into indices
  std::vector<T> col_weight;                  // and weights
  int64_t batch = 0;                          // batch index of the RoI

  // Replaces the taps by those of `roi` on a height x width map.
  void build(const T* roi, T scale, int64_t ph, int64_t pw, int64_t sampling_ratio, bool aligned,
             int64_t height, int64_t width) {
    const RoiGeometry<T> g = roi_geometry(roi, scale, ph, pw, sampling_ratio, aligned);
    const T inv_count = T(1) / g.count;
    rows.clear();
    cols.clear();
    row_start.assign(1, 0);
    col_start.assign(1, 0);
    for (int64_t y = 0; y < ph; ++y) {
      const size_t first = rows.size();
      add_axis_taps(rows, g.start_h + static_cast<T>(y) * g.bin_h, g.bin_h, g.grid_h, height);
      for (size_t r = first; r < rows.size(); ++r) {
        rows[r].index *= static_cast<int32_t>(width);  // row -> its offset in the plane (< 2^31, checked)
        rows[r].weight *= inv_count;
      }
      row_start.push_back(static_cast<int64_t>(rows.size()));
    }
    for (int64_t x = 0; x < pw; ++x) {
      add_axis_taps(cols, g.start_w + static_cast<T>(x) * g.bin_w, g.bin_w, g.grid_w, width);
      col_start.push_back(static_cast<int64_t>(cols.size()));
    }
    col_index.resize(cols.size());
    col_weight.resize(cols.size());
    for (size_t q = 0; q < cols.size(); ++q) {  // split for the inner loops
      col_index[q] = cols[q].index;
      col_weight[q] = cols[q].weight;
    }
    batch = static_cast<int64_t>(roi[0]);
  }

  // The ph x pw bins of channel plane `src` into `dst`. Per bin row, first the
  // vertical interpolation at every column tap (long loops over all the column taps,
  // two row taps at a time), then the column weights of each bin. `line`: scratch.
  void pool(const T* src, int64_t ph, int64_t pw, T* dst, std::vector<T>& line) const {
    line.resize(col_index.size());
    const int64_t n = static_cast<int64_t>(line.size());
    T* acc = line.data();
    const int32_t* ci = col_index.data();
    for (int64_t y = 0; y < ph; ++y) {
      std::fill(acc, acc + n, T(0));
      int64_t r = row_start[y];
      for (; r + 1 < row_start[y + 1]; r += 2) {
        const T *a = src + rows[r].index, *b = src + rows[r + 1].index;
        const T wa = rows[r].weight, wb = rows[r + 1].weight;
        for (int64_t q = 0; q < n; ++q) {
          acc[q] += wa * a[ci[q]] + wb * b[ci[q]];
        }
      }
      if (r < row_start[y + 1]) {  // an odd row tap left
        const T* a = src + rows[r].index;
        const T wa = rows[r].weight;
        for (int64_t q = 0; q < n; ++q) {
          acc[q] += wa * a[ci[q]];
        }
      }
      for (int64_t x = 0; x < pw; ++x) {
        T value = 0;
        for (int64_t q = col_start[x]; q < col_start[x + 1]; ++q) {
          value += col_weight[q] * acc[q];
        }
        dst[y * pw + x] = value;
      }
    }
  }

  // All channels of a channels-last map at once: pixel i of `src` holds its `channels`
  // values at src[i * channels ...], and bin b of channel c goes to dst[c * ph * pw + b]
  // (the [C, ph, pw] output of one RoI). Same two steps as pool, each one a loop over
  // contiguous channels. `line`: scratch of (column taps + 1) * channels.
  void pool_channels_last(const T* src, int64_t channels, int64_t ph, int64_t pw, T* dst,
                          std::vector<T>& line) const {
    const int64_t n = static_cast<int64_t>(col_index.size()), bins = ph * pw;
    line.resize((n + 1) * channels);
    T* acc = line.data();               // [n, channels]: vertical interpolation at each column tap
    T* bin = acc + n * channels;        // [channels]: one bin
    for (int64_t y = 0; y < ph; ++y) {
      std::fill(acc, acc + n * channels, T(0));
      for (int64_t r = row_start[y]; r < row_start[y + 1]; ++r) {
        const T w = rows[r].weight;
        for (int64_t q = 0; q < n; ++q) {
          // rows[r].index + col_index[q] is a pixel (< 2^31); times channels needs int64.
          const T* pixel = src + (static_cast<int64_t>(rows[r].index) + col_index[q]) * channels;
          T* a = acc + q * channels;
          for (int64_t c = 0; c < channels; ++c) {
            a[c] += w * pixel[c];
          }
        }
      }
      for (int64_t x = 0; x < pw; ++x) {
        std::fill(bin, bin + channels, T(0));
        for (int64_t q = col_start[x]; q < col_start[x + 1]; ++q) {
          const T w = col_weight[q];
          const T* a = acc + q * channels;
          for (int64_t c = 0; c < channels; ++c) {
            bin[c] += w * a[c];
          }
        }
        for (int64_t c = 0; c < channels; ++c) {
          dst[c * bins + y * pw + x] = bin[c];
        }
      }
    }
  }

  // Adds the gradient `grad` of the ph x pw bins into channel plane `dst`: the
  // transpose of pool. `line`: scratch.
  void unpool(const T* grad, int64_t ph, int64_t pw, T* dst, std::vector<T>& line) const {
    line.resize(col_index.size());
    const int64_t n = static_cast<int64_t>(line.size());
    T* acc = line.data();
    const int32_t* ci = col_index.data();
    for (int64_t y = 0; y < ph; ++y) {
      for (int64_t x = 0; x < pw; ++x) {
        const T value = grad[y * pw + x];
        for (int64_t q = col_start[x]; q < col_start[x + 1]; ++q) {
          acc[q] = col_weight[q] * value;
        }
      }
      // Locals, not members, in the loop: stores through `row` could alias them.
      for (int64_t r = row_start[y]; r < row_start[y + 1]; ++r) {
        T* row = dst + rows[r].index;
        const T w = rows[r].weight;
        for (int64_t q = 0; q < n; ++q) {
          row[ci[q]] += w * acc[q];
        }
      }
    }
  }

  // unpool for channels [c0, c1) of a channels-last map `dst` (pixel i at dst[i * channels]),
  // from the [C, ph, pw] gradient `grad` of one RoI: the transpose of pool_channels_last.
  // `line`: scratch of (column taps) * (c1 - c0).
  void unpool_channels_last(const T* grad, int64_t channels, int64_t c0, int64_t c1, int64_t ph, int64_t pw,
                            T* dst, std::vector<T>& line) const {
    const int64_t n = static_cast<int64_t>(col_index.size()), bins = ph * pw, width = c1 - c0;
    line.resize(n * width);
    T* acc = line.data();  // [n, width]: each column tap's share of its bin's gradient
    for (int64_t y = 0; y < ph; ++y) {
      for (int64_t x = 0; x < pw; ++x) {
        const T* g = grad + c0 * bins + y * pw + x;  // channel c0 + c at g[c * bins]
        for (int64_t q = col_start[x]; q < col_start[x + 1]; ++q) {
          const T w = col_weight[q];
          T* a = acc + q * width;
          for (int64_t c = 0; c < width; ++c) {
            a[c] = w * g[c * bins];
          }
        }
      }
      for (int64_t r = row_start[y]; r < row_start[y + 1]; ++r) {
        const T w = rows[r].weight;
        for (int64_t q = 0; q < n; ++q) {
          T* pixel = dst + (static_cast<int64_t>(rows[r].index) + col_index[q]) * channels + c0;
          const T* a = acc + q * width;
          for (int64_t c = 0; c < width; ++c) {
            pixel[c] += w * a[c];
          }
        }
      }
    }
  }
};

}  // namespace cpu
}  // namespace detbench
