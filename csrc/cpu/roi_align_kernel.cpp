// CPU kernels of detbench::roi_align and detbench::roi_align_backward.
//
// Bilinear sampling is separable: a sample at (y, x) reads rows {y_lo, y_hi} with
// weights {1 - ly, ly} and columns {x_lo, x_hi} with {1 - lx, lx}, and a sample is
// dropped when y or x is out of range. The sum over the grid_h x grid_w samples of a
// bin is therefore (sum of row taps) x (sum of column taps). For each RoI we build
// the row taps of every bin row and the column taps of every bin column once, merge
// taps that hit the same pixel, and expand them into one (offset, weight) list per
// bin. Every channel then costs one short dot product per bin: at most 16 terms with
// sampling_ratio=2, fewer when samples share pixels, and about (g + 1)^2 instead of
// 4 g^2 with g x g adaptive samples.
//
// Both directions build the lists for a group of RoIs, then loop over channels, then
// over the RoIs of the group (see forward_impl for why).
// Forward: parallel over RoIs (each writes its own output rows).
// Backward: parallel over channels, so threads never write the same grad_input
// element; each thread rebuilds the RoI tap lists it needs (cheap next to C / threads
// channels of work). Results do not depend on the number of threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "cpu/roi_align_common.h"

namespace detbench {
namespace {

template <typename T>
struct Tap {
  int64_t index;  // row or column of the feature map
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
  taps.insert(taps.begin() + static_cast<std::ptrdiff_t>(k), Tap<T>{index, weight});
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

// Tap lists of a group of RoIs: per bin, the (pixel offset, weight) pairs whose dot
// product with a channel plane is the bin's value. Reused across groups (one per thread).
template <typename T>
struct GroupTaps {
  std::vector<Tap<T>> rows, cols;           // scratch: taps of every bin row / column of one RoI
  std::vector<size_t> row_start, col_start;  // [pooled + 1] ranges into rows / cols
  std::vector<int32_t> offset;              // y * width + x (plane size checked < 2^31)
  std::vector<T> weight;                    // already divided by the sample count
  std::vector<size_t> bin_start;            // [bins * rois + 1] ranges into offset / weight
  std::vector<int64_t> batch;               // batch index of each RoI of the group

  void clear() {
    offset.clear();
    weight.clear();
    bin_start.assign(1, 0);
    batch.clear();
  }

  // Appends the bins of `roi` on a height x width map.
  void add_roi(const T* roi, T scale, int64_t ph, int64_t pw, int64_t sampling_ratio, bool aligned,
               int64_t height, int64_t width) {
    const RoiGeometry<T> g = roi_geometry(roi, scale, ph, pw, sampling_ratio, aligned);
    rows.clear();
    cols.clear();
    row_start.assign(1, 0);
    col_start.assign(1, 0);
    for (int64_t y = 0; y < ph; ++y) {
      add_axis_taps(rows, g.start_h + static_cast<T>(y) * g.bin_h, g.bin_h, g.grid_h, height);
      row_start.push_back(rows.size());
    }
    for (int64_t x = 0; x < pw; ++x) {
      add_axis_taps(cols, g.start_w + static_cast<T>(x) * g.bin_w, g.bin_w, g.grid_w, width);
      col_start.push_back(cols.size());
    }
    const T inv_count = T(1) / g.count;
    for (int64_t y = 0; y < ph; ++y) {
      for (int64_t x = 0; x < pw; ++x) {
        for (size_t r = row_start[y]; r < row_start[y + 1]; ++r) {
          for (size_t c = col_start[x]; c < col_start[x + 1]; ++c) {
            offset.push_back(static_cast<int32_t>(rows[r].index * width + cols[c].index));
            weight.push_back(rows[r].weight * cols[c].weight * inv_count);
          }
        }
        bin_start.push_back(offset.size());
      }
    }
    batch.push_back(static_cast<int64_t>(roi[0]));
  }

  // Adds RoIs first, first + 1, ... until the lists hold about 4 MiB; returns the end.
  // Larger groups load each channel plane from memory fewer times (measured on a
  // 1x256x200x336 map: 32k-term groups took 1.5x the time of 512k-term ones); the
  // lists themselves are read sequentially and stay in the last-level cache.
  int64_t fill(const T* rois, int64_t first, int64_t end, T scale, int64_t ph, int64_t pw,
               int64_t sampling_ratio, bool aligned, int64_t height, int64_t width) {
    constexpr size_t kTerms = (size_t{4} << 20) / (sizeof(int32_t) + sizeof(T));
    clear();
    int64_t k = first;
    while (k < end && offset.size() < kTerms) {
      add_roi(rois + k * 5, scale, ph, pw, sampling_ratio, aligned, height, width);
      ++k;
    }
    return k;
  }
};

// Fewest output bins (forward) or gradient bins (backward) worth a thread of their own:
// below that a parallel region costs more than it saves, and on a busy machine it can
// wait milliseconds for a free core (float64 gradcheck went from 0.05 s to 9 s).
constexpr int64_t kBinsPerThread = 32768;

inline int64_t grain(int64_t bins_per_item) {
  return std::max<int64_t>(1, (kBinsPerThread + bins_per_item - 1) / std::max<int64_t>(bins_per_item, 1));
}

// Rejects RoIs whose batch index is not in [0, batch_size) before any thread starts.
template <typename T>
void check_batch_indices(const T* rois, int64_t num_rois, int64_t batch_size, const char* op) {
  for (int64_t k = 0; k < num_rois; ++k) {
    TORCH_CHECK(batch_index_ok(rois[k * 5], batch_size), op, ": roi ", k, " has batch index ",
                static_cast<double>(rois[k * 5]), ", expected an integer in [0, ", batch_size, ")");
  }
}

// Loop order for both directions: groups of RoIs, then channels, then the RoIs of the
// group. Many RoIs overlap, so the part of a channel plane that a group reads (or
// writes) is loaded into the cache once per group instead of once per RoI.
template <typename T>
void forward_impl(const at::Tensor& input, const at::Tensor& rois, at::Tensor& output, double scale,
                  int64_t ph, int64_t pw, int64_t sampling_ratio, bool aligned) {
  const int64_t channels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t plane = height * width, bins = ph * pw;
  const T* in = input.data_ptr<T>();
  const T* roi_data = rois.data_ptr<T>();
  T* out = output.data_ptr<T>();
  at::parallel_for(0, rois.size(0), grain(channels * bins), [&](int64_t begin, int64_t end) {
    GroupTaps<T> taps;
    for (int64_t first = begin; first < end;) {
      const int64_t last = taps.fill(roi_data, first, end, static_cast<T>(scale), ph, pw, sampling_ratio,
                                     aligned, height, width);
      const int32_t* off = taps.offset.data();
      const T* w = taps.weight.data();
      for (int64_t c = 0; c < channels; ++c) {
        for (int64_t k = first; k < last; ++k) {
          const size_t* bin_start = taps.bin_start.data() + (k - first) * bins;
          const T* src = in + (taps.batch[k - first] * channels + c) * plane;
          T* dst = out + (k * channels + c) * bins;
          for (int64_t b = 0; b < bins; ++b) {
            T acc = 0;
            for (size_t t = bin_start[b]; t < bin_start[b + 1]; ++t) {
              acc += w[t] * src[off[t]];
            }
            dst[b] = acc;
          }
        }
      }
      first = last;
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& grad, const at::Tensor& rois, at::Tensor& grad_input, double scale,
                   int64_t ph, int64_t pw, int64_t sampling_ratio, bool aligned) {
  const int64_t channels = grad_input.size(1), height = grad_input.size(2), width = grad_input.size(3);
  const int64_t plane = height * width, bins = ph * pw, num_rois = rois.size(0);
  const T* g = grad.data_ptr<T>();
  const T* roi_data = rois.data_ptr<T>();
  T* gin = grad_input.data_ptr<T>();
  at::parallel_for(0, channels, grain(num_rois * bins), [&](int64_t c_begin, int64_t c_end) {
    GroupTaps<T> taps;
    for (int64_t first = 0; first < num_rois;) {
      const int64_t last = taps.fill(roi_data, first, num_rois, static_cast<T>(scale), ph, pw,
                                     sampling_ratio, aligned, height, width);
      const int32_t* off = taps.offset.data();
      const T* w = taps.weight.data();
      for (int64_t c = c_begin; c < c_end; ++c) {
        for (int64_t k = first; k < last; ++k) {
          const size_t* bin_start = taps.bin_start.data() + (k - first) * bins;
          T* dst = gin + (taps.batch[k - first] * channels + c) * plane;
          const T* src = g + (k * channels + c) * bins;
          for (int64_t b = 0; b < bins; ++b) {
            const T value = src[b];
            for (size_t t = bin_start[b]; t < bin_start[b + 1]; ++t) {
              dst[off[t]] += w[t] * value;
            }
          }
        }
      }
      first = last;
    }
  });
}

at::Tensor roi_align_forward_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                 int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                 bool aligned) {
  TORCH_CHECK(input.dim() == 4, "roi_align: input must be [N, C, H, W], got ", input.sizes());
  check_rois(rois, input, pooled_height, pooled_width, "roi_align");
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  TORCH_CHECK(input.size(2) * input.size(3) <= INT32_MAX, "roi_align: feature planes above 2^31 pixels");
  at::Tensor output = at::empty({num_rois, channels, pooled_height, pooled_width}, input.options());
  if (num_rois == 0) {
    return output;
  }
  const at::Tensor rois_c = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_forward_cpu", [&] {
    check_batch_indices(rois_c.data_ptr<scalar_t>(), num_rois, input.size(0), "roi_align");
    if (output.numel() == 0 || input.numel() == 0) {
      output.zero_();  // no channel, or an empty map: every sample is zero
      return;
    }
    forward_impl<scalar_t>(input.contiguous(), rois_c, output, spatial_scale, pooled_height, pooled_width,
                           sampling_ratio, aligned);
  });
  return output;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                  int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                  bool aligned) {
  check_backward_args(grad, rois, pooled_height, pooled_width, batch_size, channels, height, width);
  TORCH_CHECK(height * width <= INT32_MAX, "roi_align_backward: feature planes above 2^31 pixels");
  at::Tensor grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  if (rois.size(0) == 0) {
    return grad_input;
  }
  const at::Tensor rois_c = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cpu", [&] {
    check_batch_indices(rois_c.data_ptr<scalar_t>(), rois.size(0), batch_size, "roi_align_backward");
    if (grad.numel() == 0 || grad_input.numel() == 0) {
      return;
    }
    backward_impl<scalar_t>(grad.contiguous(), rois_c, grad_input, spatial_scale, pooled_height,
                            pooled_width, sampling_ratio, aligned);
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(detbench, CPU, m) {
  m.impl("roi_align", &roi_align_forward_cpu);
  m.impl("roi_align_backward", &roi_align_backward_cpu);
}

}  // namespace detbench
