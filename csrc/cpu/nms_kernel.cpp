// CPU kernels of detbench::nms and detbench::batched_nms: greedy non-maximum suppression.
//
// Boxes are copied once, in decreasing score order (stable sort: equal scores keep
// their input order), into structure-of-arrays buffers (x1, y1, x2, y2, area, index).
// The buffers hold only the boxes that are still candidates: after a box is kept, a
// branch-free (vectorised) pass flags the remaining candidates it suppresses, and,
// only if there are any, a second pass compacts the survivors to the front. Later
// passes never see suppressed boxes, and no memory is allocated inside the loop.
// Same decisions as torchvision: the IoU inter / (area_a + area_b - inter) is computed
// in the box dtype, areas have no +1, and a box is suppressed when its IoU with a kept
// box is > iou_threshold.
//
// batched_nms sorts by (category, score descending, input index), so that every
// category is a contiguous run, and runs the same greedy loop on each run on its own
// (in parallel): a box is only ever compared with boxes of its own category, and the
// IoUs are those of the original coordinates (no offsets). The kept boxes are then
// ordered by decreasing score, equal scores in input order.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
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

// Greedy nms over all of `cand`, visited in its order. Returns the number of kept
// boxes; cand.index[0, kept) are their positions, in visiting order.
template <typename T>
int64_t greedy_nms(Candidates<T>& cand, T threshold) {
  // Candidate i is the best survivor once all earlier ones are decided: keep it,
  // then remove what it suppresses from the candidates after it.
  auto end = static_cast<int64_t>(cand.index.size());
  for (int64_t i = 0; i < end; ++i) {
    end = cand.suppress(i, i + 1, end, threshold);
  }
  return end;
}

template <typename T>
at::Tensor nms_impl(const at::Tensor& boxes, const at::Tensor& order, double iou_threshold) {
  Candidates<T> cand(boxes.data_ptr<T>(), order.data_ptr<int64_t>(), boxes.size(0));
  const int64_t kept = greedy_nms(cand, threshold_in<T>(iou_threshold));
  at::Tensor keep = at::empty({kept}, boxes.options().dtype(at::kLong));
  std::copy(cand.index.begin(), cand.index.begin() + kept, keep.data_ptr<int64_t>());
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

// Below this many boxes batched_nms runs on the calling thread: starting the other
// threads would cost more than the suppression itself.
constexpr int64_t kSerialBoxes = 2048;

// Whether score a comes before score b in decreasing order, NaN first: the order of
// Tensor::sort(descending=true), which nms visits.
template <typename T>
inline bool higher(T a, T b) {
  return a > b || (std::isnan(a) && !std::isnan(b));
}

// Positions in `sorted_categories` [n] (ascending) where a category starts, then n.
std::vector<int64_t> category_starts(const int64_t* sorted_categories, int64_t n) {
  std::vector<int64_t> starts{0};
  for (int64_t r = 1; r < n; ++r) {
    if (sorted_categories[r] != sorted_categories[r - 1]) {
      starts.push_back(r);
    }
  }
  starts.push_back(n);
  return starts;
}

// Runs nms on each category alone and sets kept[i] = 1 for every kept box i.
// order[starts[s], starts[s + 1]) are the boxes of one category, in input order; each
// run is sorted in place by decreasing score (stable: what nms on that category would
// visit), then suppressed greedily. Runs are independent: each thread takes the next
// run from a shared counter, largest first, so that a big category does not leave the
// other threads idle at the end.
template <typename T>
void keep_per_category(const T* boxes, const T* scores, int64_t* order, const std::vector<int64_t>& starts,
                       double iou_threshold, uint8_t* kept) {
  const auto runs = static_cast<int64_t>(starts.size()) - 1;
  const auto length = [&](int64_t s) { return starts[s + 1] - starts[s]; };
  std::vector<int64_t> by_length(runs);
  std::iota(by_length.begin(), by_length.end(), 0);
  std::stable_sort(by_length.begin(), by_length.end(), [&](int64_t a, int64_t b) { return length(a) > length(b); });
  const T threshold = threshold_in<T>(iou_threshold);
  std::atomic<int64_t> next{0};
  // Every task drains the counter, so the result does not depend on how many tasks run.
  const auto drain = [&](int64_t /*begin*/, int64_t /*end*/) {
    for (int64_t k = next++; k < runs; k = next++) {
      int64_t* run = order + starts[by_length[k]];
      const int64_t n = length(by_length[k]);
      std::stable_sort(run, run + n, [&](int64_t a, int64_t b) { return higher(scores[a], scores[b]); });
      Candidates<T> cand(boxes, run, n);
      const int64_t count = greedy_nms(cand, threshold);
      for (int64_t r = 0; r < count; ++r) {
        kept[cand.index[r]] = 1;  // distinct boxes per run: no two threads write one byte
      }
    }
  };
  const int64_t tasks = starts.back() < kSerialBoxes ? 1 : std::min<int64_t>(at::get_num_threads(), runs);
  at::parallel_for(0, tasks, /*grain_size=*/1, drain);
}

// The boxes i with kept[i] = 1 by decreasing score, equal scores in input order.
template <typename T>
at::Tensor kept_by_score(const std::vector<uint8_t>& kept, const T* scores, const at::TensorOptions& options) {
  std::vector<int64_t> boxes;
  for (int64_t i = 0; i < static_cast<int64_t>(kept.size()); ++i) {
    if (kept[i]) {
      boxes.push_back(i);  // ascending, so that the stable sort leaves ties in input order
    }
  }
  std::stable_sort(boxes.begin(), boxes.end(), [&](int64_t a, int64_t b) { return higher(scores[a], scores[b]); });
  at::Tensor keep = at::empty({static_cast<int64_t>(boxes.size())}, options);
  std::copy(boxes.begin(), boxes.end(), keep.data_ptr<int64_t>());
  return keep;
}

at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                           double iou_threshold) {
  check_batched_nms_args(boxes, scores, idxs);
  const int64_t n = boxes.size(0);
  const at::TensorOptions options = boxes.options().dtype(at::kLong);
  if (n == 0) {
    return at::empty({0}, options);
  }
  // Group the boxes by category, each group in input order (the stable sort); every
  // group is then sorted by score on its own, which is cheaper than one global sort.
  const auto [categories, order] = idxs.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  const std::vector<int64_t> starts = category_starts(categories.contiguous().data_ptr<int64_t>(), n);
  at::Tensor grouped = order.contiguous();  // sorted in place below, one category at a time
  std::vector<uint8_t> kept(n, 0);
  at::Tensor keep;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "batched_nms_cpu", [&] {
    const at::Tensor box = boxes.contiguous(), score = scores.contiguous();
    keep_per_category<scalar_t>(box.data_ptr<scalar_t>(), score.data_ptr<scalar_t>(), grouped.data_ptr<int64_t>(),
                                starts, iou_threshold, kept.data());
    keep = kept_by_score(kept, score.data_ptr<scalar_t>(), options);
  });
  return keep;
}

}  // namespace

TORCH_LIBRARY_IMPL(detbench, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("batched_nms", &batched_nms_cpu);
}

}  // namespace detbench
