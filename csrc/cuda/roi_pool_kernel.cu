// CUDA kernels of detbench::roi_pool and detbench::roi_pool_backward.
//
// Forward: one thread per output element [k, c, ph, pw], scanning its bin (rules in
// cpu/roi_pool_common.h, as the CPU kernel). Backward: one thread per gradient element,
// adding it to the pixel its argmax names with an atomic (bins of several RoIs may have
// taken the same pixel). float16 and bfloat16 are read and written in their own type
// and compared in float (at::acc_type).
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/native/cuda/KernelUtils.cuh>  // at::native::fastAtomicAdd
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "cuda/launch_utils.cuh"
#include "cpu/roi_pool_common.h"

namespace detbench {
namespace {

using cuda::kThreads;
using cuda::check_batch_indices;
using cuda::num_blocks;

template <typename T>
__global__ void roi_pool_forward_kernel(int64_t total, const T* input, const T* rois, T* output, int32_t* argmax,
                                        at::acc_type<T, true> scale, int64_t channels, int64_t height,
                                        int64_t width, int64_t ph, int64_t pw) {
  using A = at::acc_type<T, true>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    const int64_t x = i % pw, y = (i / pw) % ph, c = (i / (pw * ph)) % channels, k = i / (pw * ph * channels);
    A roi[5];
    for (int j = 0; j < 5; ++j) {
      roi[j] = static_cast<A>(rois[k * 5 + j]);
    }
    const PoolGeometry<A> g = pool_geometry(roi, scale, ph, pw);
    int64_t h0 = 0, h1 = 0, w0 = 0, w1 = 0;
    if (g.valid) {
      pool_bin_range(g.start_h, y, g.bin_h, height, h0, h1);
      pool_bin_range(g.start_w, x, g.bin_w, width, w0, w1);
    }
    const bool empty = h1 <= h0 || w1 <= w0;
    const T* plane = input + (static_cast<int64_t>(roi[0]) * channels + c) * height * width;
    A best = empty ? A(0) : static_cast<A>(-FLT_MAX);
    int64_t best_index = -1;
    for (int64_t h = h0; h < h1; ++h) {
      for (int64_t w = w0; w < w1; ++w) {
        const A v = static_cast<A>(plane[h * width + w]);
        if (v > best) {
          best = v;
          best_index = h * width + w;
        }
      }
    }
    output[i] = static_cast<T>(best);
    argmax[i] = static_cast<int32_t>(best_index);
  }
}

template <typename T>
__global__ void roi_pool_backward_kernel(int64_t total, const T* grad, const T* rois, const int32_t* argmax,
                                         T* grad_input, int64_t grad_input_numel, int64_t channels, int64_t plane,
                                         int64_t bins) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    const int32_t index = argmax[i];
    if (index < 0) {
      continue;
    }
    const int64_t c = (i / bins) % channels, k = i / (bins * channels);
    const int64_t batch = static_cast<int64_t>(static_cast<at::acc_type<T, true>>(rois[k * 5]));
    at::native::fastAtomicAdd(grad_input, (batch * channels + c) * plane + index, grad_input_numel, grad[i], true);
  }
}

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_cuda(const at::Tensor& input, const at::Tensor& rois,
                                                         double spatial_scale, int64_t pooled_height,
                                                         int64_t pooled_width) {
  check_roi_pool_args(input, rois, pooled_height, pooled_width);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const int64_t num_rois = rois.size(0);
  at::Tensor output = at::empty({num_rois, input.size(1), pooled_height, pooled_width}, input.options());
  at::Tensor argmax = at::empty(output.sizes(), input.options().dtype(at::kInt));
  if (num_rois == 0) {
    return {output, argmax};
  }
  check_batch_indices(rois, input.size(0), "roi_pool");
  if (output.numel() == 0) {
    return {output, argmax};
  }
  const at::Tensor input_c = input.contiguous(), rois_c = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_pool_forward_cuda", [&] {
    const int64_t total = output.numel();
    roi_pool_forward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        total, input_c.data_ptr<scalar_t>(), rois_c.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(),
        argmax.data_ptr<int32_t>(), static_cast<at::acc_type<scalar_t, true>>(spatial_scale), input.size(1),
        input.size(2), input.size(3), pooled_height, pooled_width);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {output, argmax};
}

at::Tensor roi_pool_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                                  double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                  int64_t batch_size, int64_t channels, int64_t height, int64_t width) {
  check_roi_pool_backward_args(grad, rois, argmax, pooled_height, pooled_width, batch_size, channels, height, width);
  const c10::cuda::CUDAGuard device_guard(grad.device());
  at::Tensor grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  if (rois.size(0) == 0 || grad.numel() == 0) {
    return grad_input;
  }
  check_batch_indices(rois, batch_size, "roi_pool_backward");
  const bool argmax_ok = at::logical_and(argmax.ge(-1), argmax.lt(height * width)).all().item<bool>();
  TORCH_CHECK(argmax_ok, "roi_pool_backward: every argmax must lie in [-1, ", height * width, ")");
  const at::Tensor grad_c = grad.contiguous(), rois_c = rois.contiguous(), arg_c = argmax.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_pool_backward_cuda", [&] {
    const int64_t total = grad_c.numel();
    roi_pool_backward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        total, grad_c.data_ptr<scalar_t>(), rois_c.data_ptr<scalar_t>(), arg_c.data_ptr<int32_t>(),
        grad_input.data_ptr<scalar_t>(), grad_input.numel(), channels, height * width,
        pooled_height * pooled_width);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(detbench, CUDA, m) {
  m.impl("roi_pool", &roi_pool_forward_cuda);
  m.impl("roi_pool_backward", &roi_pool_backward_cuda);
}

}  // namespace detbench
