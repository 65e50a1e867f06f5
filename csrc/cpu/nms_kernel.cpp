// CPU kernel of detbench::nms: greedy non-maximum suppression.
//
// Boxes are copied once, in decreasing score order (stable sort: equal scores keep
// their input order), into structure-of-arrays buffers (x1, y1, x2, y2, area, index).
// The buffers hold only the boxes that are still candidates: after a box is kept, a
// branch-free (vectorised) pass flags the remaining candidates it suppresses, and,
// only if there are any, a second pass compacts the survivors to the front. Later
// passes never see suppressed boxes, and no memory is allocated inside the loop. Same decisions as torchvision: the IoU
// inter / (area_a + area_b - inter) is computed in the box dtype, areas have no +1,
// and a box is suppressed when its IoU with a kept box is > iou_threshold.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu/nms_common.h"

namespace detbench {
namespace {

// The candidate boxes, sorted by decreasing score, as parallel arrays.
template <typename T>
struct Candidates {
  std::vector<T> x1, y1, x2, y2, area;
  std::vector<int64_t> index;  // position of the box in the caller's tensor
  std::vector<int32_t> flag;   // scratch: 1 where the box being kept suppresses a candidate

  Candidates(const T* boxes, const int64_t* order, int64_t n)
      : x1(n), y1(n), x2(n), y2(n), area(n), index(order, order + n), flag(n) {
    for (int64_t r = 0; r < n; ++r) {
      const T* b = boxes + order[r] * 4;
      x1[r] = b[0];
      y1[r] = b[1];
      x2[r] = b[2];
      y2[r] = b[3];
      area[r] = (b[2] - b[0]) * (b[3] - b[1]);
    }
  }

  // Drops the candidates in [first, end) whose IoU with candidate `kept` is above
  // `threshold` by moving the survivors to the front; returns the new end.
  int64_t suppress(int64_t kept, int64_t first, int64_t end, T threshold) {
    const T kx1 = x1[kept], ky1 = y1[kept], kx2 = x2[kept], ky2 = y2[kept], karea = area[kept];
    // Pass 1, branch-free so that the compiler vectorises it: one flag per candidate.
    int32_t any = 0;
    for (int64_t r = first; r < end; ++r) {
      const T w = std::max(T(0), std::min(kx2, x2[r]) - std::max(kx1, x1[r]));
      const T h = std::max(T(0), std::min(ky2, y2[r]) - std::max(ky1, y1[r]));
      const T inter = w * h;
      flag[r] = inter / (karea + area[r] - inter) > threshold;
      any |= flag[r];
    }
    if (!any) {
      return end;  // the common case once the kept box's neighbours are gone
    }
    // Pass 2: compact the survivors, starting at the first suppressed candidate.
    int64_t out = first;
    while (!flag[out]) {
      ++out;
    }
    for (int64_t r = out + 1; r < end; ++r) {
      // Unconditional copies keep the loop branch-free; `out` only advances for survivors.
      x1[out] = x1[r];
      y1[out] = y1[r];
      x2[out] = x2[r];
      y2[out] = y2[r];
      area[out] = area[r];
      index[out] = index[r];
      out += 1 - flag[r];
    }
    return out;
  }
};

template <typename T>
at::Tensor nms_impl(const at::Tensor& boxes, const at::Tensor& order, double iou_threshold) {
  const int64_t n = boxes.size(0);
  Candidates<T> cand(boxes.data_ptr<T>(), order.data_ptr<int64_t>(), n);
  const T threshold = threshold_in<T>(iou_threshold);
  // Candidate i is the best survivor once all earlier ones are decided: keep it,
  // then remove what it suppresses from the candidates after it.
  int64_t end = n;
  for (int64_t i = 0; i < end; ++i) {
    end = cand.suppress(i, i + 1, end, threshold);
  }
  // The first `end` candidates are exactly the kept boxes, in score order.
  at::Tensor keep = at::empty({end}, boxes.options().dtype(at::kLong));
  std::copy(cand.index.begin(), cand.index.begin() + end, keep.data_ptr<int64_t>());
  return keep;
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms_args(boxes, scores);
  if (boxes.size(0) == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  at::Tensor keep;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_cpu", [&] {
    keep = nms_impl<scalar_t>(boxes.contiguous(), order.contiguous(), iou_threshold);
  });
  return keep;
}

}  // namespace

TORCH_LIBRARY_IMPL(detbench, CPU, m) {
  m.impl("nms", &nms_cpu);
}

}  // namespace detbench
