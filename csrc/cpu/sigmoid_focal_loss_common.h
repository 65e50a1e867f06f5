// The element-wise sigmoid focal loss (Lin et al., 2017) and its derivative, shared by the
// CPU and CUDA kernels. Only inline host/device functions: included by several units.
//
// For a logit x and a target t in [0, 1], with p = sigmoid(x) and q = 1 - p:
//   ce      = -(t log p + (1 - t) log q) = max(x, 0) - x t + log1p(exp(-|x|))
//   m       = 1 - p_t = p (1 - t) + q t            (p_t = p t + q (1 - t))
//   alpha_t = alpha t + (1 - alpha)(1 - t)         (1 when alpha < 0)
//   loss    = alpha_t * ce * m^gamma
// torchvision.ops.sigmoid_focal_loss computes the same value; p and q are both taken from
// one exp(-|x|), so neither loses precision by a subtraction from 1.
// Derivative in x (dce/dx = p - t, dm/dx = p q (1 - 2 t)):
//   dloss/dx = alpha_t * ((p - t) m^gamma + ce * gamma m^(gamma - 1) * p q (1 - 2 t))
// where gamma m^(gamma - 1) is taken as 0 for gamma = 0 and for m = 0 (then p q = 0 too,
// up to rounding, and the product's limit is 0 for gamma >= 1).
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <cmath>

namespace detbench {

// Both operators: logits and targets (and grad, when given) of one shape, dtype and device.
inline void check_focal_args(const at::Tensor& logits, const at::Tensor& targets, const char* op) {
  TORCH_CHECK(logits.sizes() == targets.sizes(), op, ": targets must have the shape of logits ",
              logits.sizes(), ", got ", targets.sizes());
  TORCH_CHECK(logits.device() == targets.device(), op, ": logits are on ", logits.device(),
              " but targets on ", targets.device());
  TORCH_CHECK(logits.scalar_type() == targets.scalar_type(), op, ": targets dtype ", targets.scalar_type(),
              " differs from the logits dtype ", logits.scalar_type());
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()), op, ": logits must be floating point, got ",
              logits.scalar_type());
}

inline void check_focal_gamma(double gamma, const char* op) {
  TORCH_CHECK(gamma >= 0, op, ": gamma must be >= 0, got ", gamma);
}

// m^gamma, with the cheap cases spelled out (0^0 = 1, as torch.pow).
template <typename A>
C10_HOST_DEVICE inline A focal_modulation(A m, A gamma) {
  if (gamma == A(0)) {
    return A(1);
  }
  if (gamma == A(1)) {
    return m;
  }
  if (gamma == A(2)) {
    return m * m;
  }
  return ::pow(m, gamma);
}

// d(m^gamma)/dm = gamma m^(gamma - 1); 0 for gamma = 0 and for m <= 0 (see the top).
template <typename A>
C10_HOST_DEVICE inline A focal_modulation_slope(A m, A gamma) {
  if (gamma == A(0)) {
    return A(0);
  }
  if (gamma == A(1)) {
    return A(1);
  }
  if (gamma == A(2)) {
    return A(2) * m;
  }
  return m > A(0) ? gamma * ::pow(m, gamma - A(1)) : A(0);
}

// The quantities of one element that both the loss and its derivative need.
template <typename A>
struct FocalTerms {
  A p, q, ce, m, alpha_t;
};

template <typename A>
C10_HOST_DEVICE inline FocalTerms<A> focal_terms(A x, A t, A alpha) {
  FocalTerms<A> f;
  const A e = ::exp(-::fabs(x));  // in (0, 1]
  const A inv = A(1) / (A(1) + e);
  f.p = x >= A(0) ? inv : e * inv;
  f.q = x >= A(0) ? e * inv : inv;
  f.ce = (x > A(0) ? x : A(0)) - x * t + ::log1p(e);
  f.m = f.p * (A(1) - t) + f.q * t;
  f.alpha_t = alpha >= A(0) ? alpha * t + (A(1) - alpha) * (A(1) - t) : A(1);
  return f;
}

template <typename A>
C10_HOST_DEVICE inline A focal_loss(A x, A t, A gamma, A alpha) {
  const FocalTerms<A> f = focal_terms(x, t, alpha);
  return f.alpha_t * f.ce * focal_modulation(f.m, gamma);
}

// d loss / d x.
template <typename A>
C10_HOST_DEVICE inline A focal_loss_grad(A x, A t, A gamma, A alpha) {
  const FocalTerms<A> f = focal_terms(x, t, alpha);
  const A p_minus_t = f.p * (A(1) - t) - f.q * t;
  const A dm_dx = f.p * f.q * (A(1) - A(2) * t);
  return f.alpha_t * (p_minus_t * focal_modulation(f.m, gamma) + f.ce * focal_modulation_slope(f.m, gamma) * dm_dx);
}

}  // namespace detbench
