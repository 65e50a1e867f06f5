// CUDA kernels of detbench::sigmoid_focal_loss and its backward: one thread per element
// in a grid-stride loop, computed in the accumulation type (float for float16/bfloat16),
// with the formula of cpu/sigmoid_focal_loss_common.h.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "cuda/launch_utils.cuh"
#include "cpu/sigmoid_focal_loss_common.h"

namespace detbench {
namespace {

using cuda::kThreads;
using cuda::num_blocks;

template <typename T>
__global__ void focal_forward_kernel(int64_t n, const T* logits, const T* targets, T* out,
                                     at::acc_type<T, true> gamma, at::acc_type<T, true> alpha) {
  using A = at::acc_type<T, true>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{blockDim.x} * gridDim.x) {
    out[i] = static_cast<T>(focal_loss<A>(static_cast<A>(logits[i]), static_cast<A>(targets[i]), gamma, alpha));
  }
}

template <typename T>
__global__ void focal_backward_kernel(int64_t n, const T* grad, const T* logits, const T* targets, T* out,
                                      at::acc_type<T, true> gamma, at::acc_type<T, true> alpha) {
  using A = at::acc_type<T, true>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{blockDim.x} * gridDim.x) {
    const A d = focal_loss_grad<A>(static_cast<A>(logits[i]), static_cast<A>(targets[i]), gamma, alpha);
    out[i] = static_cast<T>(static_cast<A>(grad[i]) * d);
  }
}

at::Tensor focal_loss_forward_cuda(const at::Tensor& logits, const at::Tensor& targets, double gamma,
                                   double alpha) {
  check_focal_args(logits, targets, "sigmoid_focal_loss");
  check_focal_gamma(gamma, "sigmoid_focal_loss");
  const c10::cuda::CUDAGuard device_guard(logits.device());
  const at::Tensor x = logits.contiguous(), t = targets.contiguous();
  at::Tensor out = at::empty(logits.sizes(), logits.options());
  const int64_t n = out.numel();
  if (n == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "sigmoid_focal_loss_cuda", [&] {
    using A = at::acc_type<scalar_t, true>;
    focal_forward_kernel<scalar_t><<<num_blocks(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        n, x.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), static_cast<A>(gamma),
        static_cast<A>(alpha));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor focal_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& targets,
                                    double gamma, double alpha) {
  check_focal_args(logits, targets, "sigmoid_focal_loss_backward");
  check_focal_args(logits, grad, "sigmoid_focal_loss_backward");
  check_focal_gamma(gamma, "sigmoid_focal_loss_backward");
  const c10::cuda::CUDAGuard device_guard(logits.device());
  const at::Tensor x = logits.contiguous(), t = targets.contiguous(), g = grad.contiguous();
  at::Tensor out = at::empty(logits.sizes(), logits.options());
  const int64_t n = out.numel();
  if (n == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(),
                                  "sigmoid_focal_loss_backward_cuda", [&] {
    using A = at::acc_type<scalar_t, true>;
    focal_backward_kernel<scalar_t><<<num_blocks(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        n, g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
        static_cast<A>(gamma), static_cast<A>(alpha));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(detbench, CUDA, m) {
  m.impl("sigmoid_focal_loss", &focal_loss_forward_cuda);
  m.impl("sigmoid_focal_loss_backward", &focal_loss_backward_cuda);
}

}  // namespace detbench
