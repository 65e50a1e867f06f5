// CPU kernels of detbench::sigmoid_focal_loss and its backward: one pass over the
// elements (cpu/sigmoid_focal_loss_common.h), parallel over contiguous chunks. Each
// element's result depends on that element only, so the output does not depend on the
// number of threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/sigmoid_focal_loss_common.h"

namespace detbench {
namespace {

// Elements per parallel chunk: a few transcendental calls each, so chunks of this size
// take tens of microseconds, well above the cost of handing one to a thread.
constexpr int64_t kGrain = 16384;

at::Tensor focal_loss_forward_cpu(const at::Tensor& logits, const at::Tensor& targets, double gamma,
                                  double alpha) {
  check_focal_args(logits, targets, "sigmoid_focal_loss");
  check_focal_gamma(gamma, "sigmoid_focal_loss");
  const at::Tensor x = logits.contiguous(), t = targets.contiguous();
  at::Tensor out = at::empty(logits.sizes(), logits.options());
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "sigmoid_focal_loss_cpu", [&] {
    const scalar_t* xs = x.data_ptr<scalar_t>();
    const scalar_t* ts = t.data_ptr<scalar_t>();
    scalar_t* os = out.data_ptr<scalar_t>();
    const auto g = static_cast<scalar_t>(gamma), a = static_cast<scalar_t>(alpha);
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        os[i] = focal_loss<scalar_t>(xs[i], ts[i], g, a);
      }
    });
  });
  return out;
}

at::Tensor focal_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& targets,
                                   double gamma, double alpha) {
  check_focal_args(logits, targets, "sigmoid_focal_loss_backward");
  check_focal_args(logits, grad, "sigmoid_focal_loss_backward");
  check_focal_gamma(gamma, "sigmoid_focal_loss_backward");
  const at::Tensor x = logits.contiguous(), t = targets.contiguous(), gr = grad.contiguous();
  at::Tensor out = at::empty(logits.sizes(), logits.options());
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "sigmoid_focal_loss_backward_cpu", [&] {
    const scalar_t* xs = x.data_ptr<scalar_t>();
    const scalar_t* ts = t.data_ptr<scalar_t>();
    const scalar_t* gs = gr.data_ptr<scalar_t>();
    scalar_t* os = out.data_ptr<scalar_t>();
    const auto g = static_cast<scalar_t>(gamma), a = static_cast<scalar_t>(alpha);
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        os[i] = gs[i] * focal_loss_grad<scalar_t>(xs[i], ts[i], g, a);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(detbench, CPU, m) {
  m.impl("sigmoid_focal_loss", &focal_loss_forward_cpu);
  m.impl("sigmoid_focal_loss_backward", &focal_loss_backward_cpu);
}

}  // namespace detbench
