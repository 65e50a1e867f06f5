// CPU kernels of detbench::roi_align and detbench::roi_align_backward.
//
// Each RoI's bilinear taps (cpu/roi_align_taps.h) take a few hundred bytes and are
// rebuilt for every block of channels, instead of being kept for many RoIs at once:
// the kernels need no scratch memory beyond one RoI's taps per thread, and their peak
// memory is their output (measured by tools/benchmark.py against torchvision).
// Loop order: blocks of channels, then RoIs, then the channels of the block. Most RoIs
// overlap, so a block of planes is loaded into the cache once and read (or written) by
// every RoI there.
// Forward: parallel over (block, RoI) pairs; each pair writes its own output rows.
// Backward: parallel over channel blocks, so threads never write the same grad_input
// element, and each channel adds the RoIs in their order: results do not depend on
// the number of threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu/kernel_utils.h"
#include "cpu/roi_align_common.h"
#include "cpu/roi_align_taps.h"

namespace detbench {
namespace {

using cpu::check_batch_indices;
using cpu::grain;
using cpu::RoiTaps;

// Bytes of feature planes per channel block. On a 1x256x200x336 map with 1000 RoIs,
// blocks of 0.75 to 4 MiB ran equally fast (a 2-core EPYC with 1 MiB L2 per core);
// the taps of a RoI are rebuilt once per block, so much smaller blocks cost time.
constexpr size_t kBlockBytes = size_t{2} << 20;

// Channels per block: as many planes as fit in kBlockBytes, at least 1 and at most
// `most` (the backward keeps a block per thread).
inline int64_t channel_block(int64_t most, int64_t plane, size_t elem) {
  const int64_t fit = static_cast<int64_t>(kBlockBytes / elem) / std::max<int64_t>(plane, 1);
  return std::clamp<int64_t>(fit, 1, std::max<int64_t>(most, 1));
}

template <typename T>
void forward_impl(const at::Tensor& input, const at::Tensor& rois, at::Tensor& output, double scale,
                  int64_t ph, int64_t pw, int64_t sampling_ratio, bool aligned) {
  const int64_t channels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t plane = height * width, bins = ph * pw, num_rois = rois.size(0);
  const int64_t block = channel_block(channels, plane, sizeof(T));
  const int64_t blocks = (channels + block - 1) / block;
  const T* in = input.data_ptr<T>();
  const T* roi_data = rois.data_ptr<T>();
  T* out = output.data_ptr<T>();
  at::parallel_for(0, blocks * num_rois, grain(block * bins), [&](int64_t begin, int64_t end) {
    RoiTaps<T> taps;
    std::vector<T> line;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = item % num_rois, c0 = item / num_rois * block;
      const int64_t c1 = std::min(c0 + block, channels);
      taps.build(roi_data + k * 5, static_cast<T>(scale), ph, pw, sampling_ratio, aligned, height, width);
      for (int64_t c = c0; c < c1; ++c) {
        const T* src = in + (taps.batch * channels + c) * plane;
        taps.pool(src, ph, pw, out + (k * channels + c) * bins, line);
      }
    }
  });
}

// Forward on a channels-last (NHWC) input, which the CPU backbone produces: no NCHW
// copy of the map; one RoI at a time, all channels (contiguous) together. Parallel
// over RoIs.
template <typename T>
void forward_channels_last_impl(const at::Tensor& input, const at::Tensor& rois, at::Tensor& output,
                                double scale, int64_t ph, int64_t pw, int64_t sampling_ratio, bool aligned) {
  const int64_t channels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t bins = ph * pw, image_stride = input.stride(0);  // H * W * C
  const T* in = input.data_ptr<T>();
  const T* roi_data = rois.data_ptr<T>();
  T* out = output.data_ptr<T>();
  at::parallel_for(0, rois.size(0), grain(channels * bins), [&](int64_t begin, int64_t end) {
    RoiTaps<T> taps;
    std::vector<T> line;
    for (int64_t k = begin; k < end; ++k) {
      taps.build(roi_data + k * 5, static_cast<T>(scale), ph, pw, sampling_ratio, aligned, height, width);
      taps.pool_channels_last(in + taps.batch * image_stride, channels, ph, pw, out + k * channels * bins, line);
    }
  });
}

// The backward's loop: threads split the channels into blocks [c0, c1) (each thread writes only
// its own channels, so no two threads add to one element) and, block by block, every RoI's taps
// are built and `unpool(taps, k, c0, c1, line)` adds RoI k's gradient for those channels.
template <typename T, typename Unpool>
void unpool_by_channel_blocks(const at::Tensor& rois, int64_t channels, int64_t block, int64_t grain_size,
                              double scale, int64_t ph, int64_t pw, int64_t sampling_ratio, bool aligned,
                              int64_t height, int64_t width, Unpool unpool) {
  const int64_t blocks = (channels + block - 1) / block, num_rois = rois.size(0);
  const T* roi_data = rois.data_ptr<T>();
  at::parallel_for(0, blocks, grain_size, [&](int64_t b_begin, int64_t b_end) {
    RoiTaps<T> taps;
    std::vector<T> line;
    for (int64_t b = b_begin; b < b_end; ++b) {
      const int64_t c0 = b * block, c1 = std::min(c0 + block, channels);
      for (int64_t k = 0; k < num_rois; ++k) {
        taps.build(roi_data + k * 5, static_cast<T>(scale), ph, pw, sampling_ratio, aligned, height, width);
        unpool(taps, k, c0, c1, line);
      }
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& grad, const at::Tensor& rois, at::Tensor& grad_input, double scale,
                   int64_t ph, int64_t pw, int64_t sampling_ratio, bool aligned) {
  const int64_t channels = grad_input.size(1), height = grad_input.size(2), width = grad_input.size(3);
  const int64_t plane = height * width, bins = ph * pw;
  // Backward threads split channels only: keep at least one block per thread.
  const int64_t threads = at::get_num_threads();
  const int64_t block = channel_block((channels + threads - 1) / threads, plane, sizeof(T));
  const T* g = grad.data_ptr<T>();
  T* gin = grad_input.data_ptr<T>();
  unpool_by_channel_blocks<T>(
      rois, channels, block, grain(block * rois.size(0) * bins), scale, ph, pw, sampling_ratio, aligned, height,
      width, [&](const RoiTaps<T>& taps, int64_t k, int64_t c0, int64_t c1, std::vector<T>& line) {
        for (int64_t c = c0; c < c1; ++c) {
          taps.unpool(g + (k * channels + c) * bins, ph, pw, gin + (taps.batch * channels + c) * plane, line);
        }
      });
}

// Backward into a channels-last grad_input: one block of channels per thread (the writes are
// spread over the whole map anyway), each RoI's taps unpooled over the block's channels at once.
template <typename T>
void backward_channels_last_impl(const at::Tensor& grad, const at::Tensor& rois, at::Tensor& grad_input,
                                 double scale, int64_t ph, int64_t pw, int64_t sampling_ratio, bool aligned) {
  const int64_t channels = grad_input.size(1), height = grad_input.size(2), width = grad_input.size(3);
  const int64_t bins = ph * pw, image_stride = grad_input.stride(0);  // H * W * C
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), channels));
  const T* g = grad.data_ptr<T>();
  T* gin = grad_input.data_ptr<T>();
  unpool_by_channel_blocks<T>(
      rois, channels, (channels + threads - 1) / threads, 1, scale, ph, pw, sampling_ratio, aligned, height, width,
      [&](const RoiTaps<T>& taps, int64_t k, int64_t c0, int64_t c1, std::vector<T>& line) {
        taps.unpool_channels_last(g + k * channels * bins, channels, c0, c1, ph, pw, gin + taps.batch * image_stride,
                                  line);
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
    if (!input.is_contiguous() && input.is_contiguous(at::MemoryFormat::ChannelsLast)) {
      forward_channels_last_impl<scalar_t>(input, rois_c, output, spatial_scale, pooled_height, pooled_width,
                                           sampling_ratio, aligned);
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
                                  bool aligned, bool channels_last) {
  check_backward_args(grad, rois, pooled_height, pooled_width, batch_size, channels, height, width);
  TORCH_CHECK(height * width <= INT32_MAX, "roi_align_backward: feature planes above 2^31 pixels");
  at::Tensor grad_input =
      at::empty({batch_size, channels, height, width}, grad.options(),
                channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous)
          .zero_();
  if (rois.size(0) == 0) {
    return grad_input;
  }
  const at::Tensor rois_c = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "roi_align_backward_cpu", [&] {
    check_batch_indices(rois_c.data_ptr<scalar_t>(), rois.size(0), batch_size, "roi_align_backward");
    if (grad.numel() == 0 || grad_input.numel() == 0) {
      return;
    }
    if (channels_last) {
      backward_channels_last_impl<scalar_t>(grad.contiguous(), rois_c, grad_input, spatial_scale, pooled_height,
                                            pooled_width, sampling_ratio, aligned);
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
