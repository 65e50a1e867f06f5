// CUDA kernels of detbench::roi_align and detbench::roi_align_backward.
//
// Forward: one thread per output element [k, c, ph, pw], sampling the bin's grid
// of bilinear samples directly. Backward: one thread per gradient element, adding
// each sample's share into grad_input with atomics (several bins and RoIs may read
// the same pixel). float16 and bfloat16 are read and written in their own type and
// computed in float (at::acc_type). Sampling rules are those of the CPU kernel.
//
// Work per thread is bounded by the map, not the box: a thread visits only the run of
// samples of its bin that can land on the map, found by bisection as in the CPU kernel
// (sample_range there). With adaptive sampling a 1e9-pixel box asks for ~1e8 samples
// per bin axis; without the bound one thread would loop over all of them (up to the
// 2^30 x 2^30 cap for inf-sized boxes). Skipped samples would be dropped anyway, so the
// result is unchanged.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/native/cuda/KernelUtils.cuh>  // at::native::fastAtomicAdd
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "cuda/launch_utils.cuh"
#include "cpu/roi_align_common.h"

namespace detbench {
namespace {

using cuda::check_batch_indices;
using cuda::kThreads;
using cuda::num_blocks;

// One axis of a bilinear sample at `pos` on `size` pixels: the two pixels read and
// the weight of the upper one. Returns false when the sample lies outside [-1, size]
// (or is NaN) and contributes nothing. Same rules as add_axis_taps in cpu/roi_align_kernel.cpp.
template <typename A>
__device__ __forceinline__ bool axis_sample(A pos, int64_t size, int64_t& lo, int64_t& hi, A& frac) {
  if (!(pos >= A(-1) && pos <= static_cast<A>(size))) {  // written so that NaN is outside too
    return false;
  }
  pos = pos <= A(0) ? A(0) : pos;
  lo = static_cast<int64_t>(pos);  // pos >= 0: truncation is floor
  hi = lo + 1;
  if (lo >= size - 1) {
    lo = hi = size - 1;
    pos = static_cast<A>(lo);
  }
  frac = pos - static_cast<A>(lo);
  return true;
}

// Geometry of RoI k, read in the accumulation type.
template <typename T, typename A>
__device__ __forceinline__ RoiGeometry<A> load_geometry(const T* rois, int64_t k, A scale, int64_t ph,
                                                      int64_t pw, int64_t sampling_ratio, bool aligned,
                                                      int64_t& batch) {
  A roi[5];
  for (int j = 0; j < 5; ++j) {
    roi[j] = static_cast<A>(rois[k * 5 + j]);
  }
  batch = static_cast<int64_t>(roi[0]);
  return roi_geometry(roi, scale, ph, pw, sampling_ratio, aligned);
}

// One bin along one axis: its first edge `start` (the CPU kernel's start + bin * bin_size,
// rounded to A before the sample offset is added, as there) and `grid` samples.
template <typename A>
struct BinAxis {
  A start, size;
  int64_t grid;

  // Coordinate of sample i; same expression (and evaluation order) as the CPU kernel
  // and torchvision.
  __device__ __forceinline__ A pos(int64_t i) const {
    return start + static_cast<A>(i + .5f) * size / static_cast<A>(grid);
  }

  // First i in [0, grid) whose sample has reached `bound` (inclusive) or passed it
  // (!inclusive) in the direction in which positions move: up for size >= 0, down for
  // a negative size (aligned, inverted box). Positions are monotone in i (every
  // rounding step is), so the predicate is false and then true; NaN positions never
  // satisfy it, which gives grid (no sample).
  __device__ __forceinline__ int64_t first_reaching(A bound, bool inclusive) const {
    const bool up = size >= A(0);
    int64_t lo = 0, hi = grid;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      const A p = pos(mid);
      const bool reached = up ? (inclusive ? p >= bound : p > bound) : (inclusive ? p <= bound : p < bound);
      if (reached) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return lo;
  }

  // The samples [begin, end) that can land in [-1, map_size]: the CPU kernel's
  // sample_range, with the same predicates, so both visit the same samples.
  __device__ __forceinline__ void range(int64_t map_size, int64_t& begin, int64_t& end) const {
    const A low = A(-1), high = static_cast<A>(map_size);
    const bool up = size >= A(0);
    begin = first_reaching(up ? low : high, true);
    end = first_reaching(up ? high : low, false);
  }
};

// Axis `bin` of a RoI whose bins start at `start` and measure `bin_size`.
template <typename A>
__device__ __forceinline__ BinAxis<A> bin_axis(A start, int64_t bin, A bin_size, int64_t grid) {
  return BinAxis<A>{start + static_cast<A>(bin) * bin_size, bin_size, grid};
}

// Bilinear interpolation of `plane` (width columns) between rows y_lo/y_hi and
// columns x_lo/x_hi with upper weights ly and lx.
template <typename T, typename A>
__device__ __forceinline__ A interpolate(const T* plane, int64_t width, int64_t y_lo, int64_t y_hi, A ly,
                                         int64_t x_lo, int64_t x_hi, A lx) {
  const A top = (A(1) - lx) * static_cast<A>(plane[y_lo * width + x_lo]) +
                lx * static_cast<A>(plane[y_lo * width + x_hi]);
  const A bottom = (A(1) - lx) * static_cast<A>(plane[y_hi * width + x_lo]) +
                   lx * static_cast<A>(plane[y_hi * width + x_hi]);
  return (A(1) - ly) * top + ly * bottom;
}

// Adds `value` spread bilinearly over the 4 pixels to grad_input (`numel` elements);
// `base` is the offset of the channel plane.
template <typename T, typename A>
__device__ __forceinline__ void scatter(T* grad_input, int64_t numel, int64_t base, int64_t width, int64_t y_lo,
                                        int64_t y_hi, A ly, int64_t x_lo, int64_t x_hi, A lx, A value) {
  const A top = (A(1) - ly) * value, bottom = ly * value;
  // fastAtomicAdd packs float16/bfloat16 pairs when it can; plain atomics otherwise.
  using at::native::fastAtomicAdd;
  fastAtomicAdd(grad_input, base + y_lo * width + x_lo, numel, static_cast<T>(top * (A(1) - lx)), true);
  fastAtomicAdd(grad_input, base + y_lo * width + x_hi, numel, static_cast<T>(top * lx), true);
  fastAtomicAdd(grad_input, base + y_hi * width + x_lo, numel, static_cast<T>(bottom * (A(1) - lx)), true);
  fastAtomicAdd(grad_input, base + y_hi * width + x_hi, numel, static_cast<T>(bottom * lx), true);
}

template <typename T>
__global__ void roi_align_forward_kernel(int64_t total, const T* input, const T* rois, T* output,
                                         at::acc_type<T, true> scale, int64_t channels, int64_t height,
                                         int64_t width, int64_t ph, int64_t pw, int64_t sampling_ratio,
                                         bool aligned) {
  using A = at::acc_type<T, true>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    // i enumerates the output [K, C, ph, pw] in memory order.
    const int64_t x = i % pw, y = (i / pw) % ph, c = (i / (pw * ph)) % channels, k = i / (pw * ph * channels);
    int64_t batch;
    const RoiGeometry<A> g = load_geometry(rois, k, scale, ph, pw, sampling_ratio, aligned, batch);
    const T* plane = input + (batch * channels + c) * height * width;
    const BinAxis<A> row = bin_axis(g.start_h, y, g.bin_h, g.grid_h);
    const BinAxis<A> col = bin_axis(g.start_w, x, g.bin_w, g.grid_w);
    int64_t iy_begin, iy_end, ix_begin, ix_end;
    row.range(height, iy_begin, iy_end);
    col.range(width, ix_begin, ix_end);
    A sum = 0;
    for (int64_t iy = iy_begin; iy < iy_end; ++iy) {
      int64_t y_lo, y_hi;
      A ly;
      if (!axis_sample(row.pos(iy), height, y_lo, y_hi, ly)) {
        continue;  // the whole row of samples is outside the map
      }
      for (int64_t ix = ix_begin; ix < ix_end; ++ix) {
        int64_t x_lo, x_hi;
        A lx;
        if (axis_sample(col.pos(ix), width, x_lo, x_hi, lx)) {
          sum += interpolate(plane, width, y_lo, y_hi, ly, x_lo, x_hi, lx);
        }
      }
    }
    output[i] = static_cast<T>(sum / g.count);
  }
}

template <typename T>
__global__ void roi_align_backward_kernel(int64_t total, const T* grad, const T* rois, T* grad_input,
                                          int64_t grad_input_numel, at::acc_type<T, true> scale,
                                          int64_t channels, int64_t height, int64_t width, int64_t ph,
                                          int64_t pw, int64_t sampling_ratio, bool aligned) {
  using A = at::acc_type<T, true>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    // i enumerates grad [K, C, ph, pw] in memory order (grad is contiguous).
    const int64_t x = i % pw, y = (i / pw) % ph, c = (i / (pw * ph)) % channels, k = i / (pw * ph * channels);
    int64_t batch;
    const RoiGeometry<A> g = load_geometry(rois, k, scale, ph, pw, sampling_ratio, aligned, batch);
    const int64_t base = (batch * channels + c) * height * width;
    const A share = static_cast<A>(grad[i]) / g.count;  // every sample's part of the bin gradient
    const BinAxis<A> row = bin_axis(g.start_h, y, g.bin_h, g.grid_h);
    const BinAxis<A> col = bin_axis(g.start_w, x, g.bin_w, g.grid_w);
    int64_t iy_begin, iy_end, ix_begin, ix_end;
    row.range(height, iy_begin, iy_end);
    col.range(width, ix_begin, ix_end);
    for (int64_t iy = iy_begin; iy < iy_end; ++iy) {
      int64_t y_lo, y_hi;
      A ly;
      if (!axis_sample(row.pos(iy), height, y_lo, y_hi, ly)) {
        continue;
      }
      for (int64_t ix = ix_begin; ix < ix_end; ++ix) {
        int64_t x_lo, x_hi;
        A lx;
        if (axis_sample(col.pos(ix), width, x_lo, x_hi, lx)) {
          scatter(grad_input, grad_input_numel, base, width, y_lo, y_hi, ly, x_lo, x_hi, lx, share);
        }
      }
    }
  }
}

at::Tensor roi_align_forward_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                  bool aligned) {
  TORCH_CHECK(input.dim() == 4, "roi_align: input must be [N, C, H, W], got ", input.sizes());
  check_rois(rois, input, pooled_height, pooled_width, "roi_align");
  const c10::cuda::CUDAGuard device_guard(input.device());
  const int64_t num_rois = rois.size(0);
  at::Tensor output = at::empty({num_rois, input.size(1), pooled_height, pooled_width}, input.options());
  if (num_rois == 0) {
    return output;
  }
  check_batch_indices(rois, input.size(0), "roi_align");
  if (output.numel() == 0 || input.numel() == 0) {
    return output.zero_();  // no channel, or an empty map: every sample is zero
  }
  const at::Tensor input_c = input.contiguous(), rois_c = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_forward_cuda", [&] {
    const int64_t total = output.numel();
    roi_align_forward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        total, input_c.data_ptr<scalar_t>(), rois_c.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(),
        static_cast<at::acc_type<scalar_t, true>>(spatial_scale), input.size(1), input.size(2), input.size(3),
        pooled_height, pooled_width, sampling_ratio, aligned);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                   int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned, bool channels_last) {
  check_backward_args(grad, rois, pooled_height, pooled_width, batch_size, channels, height, width);
  const c10::cuda::CUDAGuard device_guard(grad.device());
  at::Tensor grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  // The kernel scatters into NCHW planes; a channels-last result is one conversion after it.
  const auto layout = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  if (rois.size(0) == 0) {
    return grad_input.contiguous(layout);
  }
  check_batch_indices(rois, batch_size, "roi_align_backward");
  if (grad.numel() == 0 || grad_input.numel() == 0) {
    return grad_input.contiguous(layout);
  }
  const at::Tensor grad_c = grad.contiguous(), rois_c = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_backward_cuda", [&] {
    const int64_t total = grad_c.numel();
    roi_align_backward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        total, grad_c.data_ptr<scalar_t>(), rois_c.data_ptr<scalar_t>(), grad_input.data_ptr<scalar_t>(),
        grad_input.numel(), static_cast<at::acc_type<scalar_t, true>>(spatial_scale), channels, height, width,
        pooled_height, pooled_width, sampling_ratio, aligned);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input.contiguous(layout);
}

}  // namespace

TORCH_LIBRARY_IMPL(detbench, CUDA, m) {
  m.impl("roi_align", &roi_align_forward_cuda);
  m.impl("roi_align_backward", &roi_align_backward_cuda);
}

}  // namespace detbench
