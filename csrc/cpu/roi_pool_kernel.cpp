// CPU kernels of detbench::roi_pool and detbench::roi_pool_backward.
// Forward: parallel over RoIs; a RoI's bin ranges are computed once and reused for every
// channel. Backward: parallel over channels, so threads never write the same grad_input
// element, and each channel adds the RoIs in their order: results do not depend on the
// number of threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu/kernel_utils.h"
#include "cpu/roi_pool_common.h"

namespace detbench {
namespace {

using cpu::check_batch_indices;
using cpu::grain;

// Pixel ranges of every bin of one RoI: rows [h0, h1) and columns [w0, w1) per bin.
struct BinRanges {
  std::vector<int64_t> h0, h1, w0, w1;

  template <typename T>
  void build(const T* roi, T scale, int64_t ph, int64_t pw, int64_t height, int64_t width) {
    const PoolGeometry<T> g = pool_geometry(roi, scale, ph, pw);
    h0.assign(ph, 0), h1.assign(ph, 0), w0.assign(pw, 0), w1.assign(pw, 0);
    if (!g.valid) {
      return;  // every bin empty
    }
    for (int64_t y = 0; y < ph; ++y) {
      pool_bin_range(g.start_h, y, g.bin_h, height, h0[y], h1[y]);
    }
    for (int64_t x = 0; x < pw; ++x) {
      pool_bin_range(g.start_w, x, g.bin_w, width, w0[x], w1[x]);
    }
  }
};

template <typename T>
void forward_impl(const at::Tensor& input, const at::Tensor& rois, at::Tensor& output, at::Tensor& argmax,
                  double scale, int64_t ph, int64_t pw) {
  const int64_t channels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t plane = height * width, bins = ph * pw;
  const T* in = input.data_ptr<T>();
  const T* roi_data = rois.data_ptr<T>();
  T* out = output.data_ptr<T>();
  int32_t* arg = argmax.data_ptr<int32_t>();
  at::parallel_for(0, rois.size(0), grain(channels * bins), [&](int64_t begin, int64_t end) {
    BinRanges r;
    for (int64_t k = begin; k < end; ++k) {
      const T* roi = roi_data + k * 5;
      r.build(roi, static_cast<T>(scale), ph, pw, height, width);
      const int64_t batch = static_cast<int64_t>(roi[0]);
      for (int64_t c = 0; c < channels; ++c) {
        const T* src = in + (batch * channels + c) * plane;
        T* dst = out + (k * channels + c) * bins;
        int32_t* dst_arg = arg + (k * channels + c) * bins;
        for (int64_t y = 0; y < ph; ++y) {
          for (int64_t x = 0; x < pw; ++x) {
            const bool empty = r.h1[y] <= r.h0[y] || r.w1[x] <= r.w0[x];
            T best = empty ? T(0) : static_cast<T>(-FLT_MAX);
            int64_t best_index = -1;
            const int64_t h0 = r.h0[y], h1 = r.h1[y], w0 = r.w0[x], w1 = r.w1[x];
            for (int64_t h = h0; h < h1; ++h) {
              for (int64_t w = w0; w < w1; ++w) {
                // Branch-free: with noisy features the comparison is unpredictable.
                const T v = src[h * width + w];
                const bool take = v > best;
                best = take ? v : best;
                best_index = take ? h * width + w : best_index;
              }
            }
            dst[y * pw + x] = best;
            dst_arg[y * pw + x] = static_cast<int32_t>(best_index);
          }
        }
      }
    }
  });
}

// Each thread owns a block of channels and walks the RoIs in order, reading its part of
// every RoI's gradient (contiguous runs of block * bins values).
template <typename T>
void backward_impl(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                   at::Tensor& grad_input) {
  const int64_t channels = grad_input.size(1), plane = grad_input.size(2) * grad_input.size(3);
  const int64_t bins = grad.size(2) * grad.size(3), num_rois = rois.size(0);
  const int64_t threads = at::get_num_threads();
  const int64_t block = std::max<int64_t>(1, (channels + threads - 1) / threads);
  const int64_t blocks = (channels + block - 1) / block;
  const T* g = grad.data_ptr<T>();
  const T* roi_data = rois.data_ptr<T>();
  const int32_t* arg = argmax.data_ptr<int32_t>();
  T* gin = grad_input.data_ptr<T>();
  at::parallel_for(0, blocks, grain(block * num_rois * bins), [&](int64_t b_begin, int64_t b_end) {
    const int64_t c0 = b_begin * block, c1 = std::min(b_end * block, channels);
    for (int64_t k = 0; k < num_rois; ++k) {
      T* image = gin + static_cast<int64_t>(roi_data[k * 5]) * channels * plane;
      for (int64_t c = c0; c < c1; ++c) {
        T* dst = image + c * plane;
        const int64_t offset = (k * channels + c) * bins;
        for (int64_t b = 0; b < bins; ++b) {
          const int32_t index = arg[offset + b];
          if (index >= 0 && index < plane) {
            dst[index] += g[offset + b];
          } else {  // rare: an empty bin (-1) or a corrupt argmax, checked only here
            TORCH_CHECK(index == -1, "roi_pool_backward: argmax ", index, " is outside [-1, ", plane, ")");
          }
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_cpu(const at::Tensor& input, const at::Tensor& rois,
                                                        double spatial_scale, int64_t pooled_height,
                                                        int64_t pooled_width) {
  check_roi_pool_args(input, rois, pooled_height, pooled_width);
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  at::Tensor output = at::empty({num_rois, channels, pooled_height, pooled_width}, input.options());
  at::Tensor argmax = at::empty(output.sizes(), input.options().dtype(at::kInt));
  if (num_rois == 0) {
    return {output, argmax};
  }
  const at::Tensor rois_c = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_pool_forward_cpu", [&] {
    check_batch_indices(rois_c.data_ptr<scalar_t>(), num_rois, input.size(0), "roi_pool");
    if (output.numel() == 0) {
      return;
    }
    forward_impl<scalar_t>(input.contiguous(), rois_c, output, argmax, spatial_scale, pooled_height, pooled_width);
  });
  return {output, argmax};
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                                 double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                 int64_t batch_size, int64_t channels, int64_t height, int64_t width) {
  check_roi_pool_backward_args(grad, rois, argmax, pooled_height, pooled_width, batch_size, channels, height, width);
  at::Tensor grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  if (rois.size(0) == 0 || grad.numel() == 0) {
    return grad_input;
  }
  const at::Tensor rois_c = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_pool_backward_cpu", [&] {
    check_batch_indices(rois_c.data_ptr<scalar_t>(), rois.size(0), batch_size, "roi_pool_backward");
    backward_impl<scalar_t>(grad.contiguous(), rois_c, argmax.contiguous(), grad_input);
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(detbench, CPU, m) {
  m.impl("roi_pool", &roi_pool_forward_cpu);
  m.impl("roi_pool_backward", &roi_pool_backward_cpu);
}

}  // namespace detbench
