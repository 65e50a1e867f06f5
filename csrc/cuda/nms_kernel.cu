// CUDA kernels of detbench::nms, with the 64-wide bitmask scheme, and of
// detbench::batched_nms, which runs it on each category's segment (see batched_nms_cuda).
//
// 1. Sort by decreasing score (stable: equal scores keep their input order); for
//    batched_nms by category first, each category one segment (see Segments).
// 2. mask kernel: for sorted boxes i < j of one segment, bit j % 64 of word mask[i][j / 64]
//    is set when IoU(i, j) > iou_threshold. A block handles 64 rows x 64 columns; blocks
//    below the diagonal have nothing to do and are skipped (those words are never read).
// 3. gather kernel: one thread block per segment walks its sorted boxes 64 at a time,
//    keeping a box unless a kept box removed it, and ORs the rows of the kept boxes into
//    the `removed` words. Only the [N] keep flags go back to the host side, through
//    masked_select, never the N x N/64 mask.
// IoU is inter / (area_a + area_b - inter) with areas (x2 - x1) * (y2 - y1), computed
// in float for float16/bfloat16/float32 boxes and in double for double boxes.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cpu/nms_common.h"

namespace detbench {
namespace {

constexpr int kWord = 64;            // boxes per mask word (bits of uint64_t)
constexpr int kGatherThreads = 256;  // threads of the single gather block
constexpr int64_t kMaxSharedWords = 4096;  // 32 KiB of `removed` words in shared memory

// Products rounded on their own: nvcc would otherwise fuse them with the following
// addition (FMA), and the IoU could differ by one ulp from the CPU kernel's.
__device__ __forceinline__ float mul_rn(float a, float b) {
  return __fmul_rn(a, b);
}
__device__ __forceinline__ double mul_rn(double a, double b) {
  return __dmul_rn(a, b);
}

template <typename A>
__device__ __forceinline__ bool iou_above(const A* a, const A* b, A threshold) {
  const A w = ::max(A(0), ::min(a[2], b[2]) - ::max(a[0], b[0]));
  const A h = ::max(A(0), ::min(a[3], b[3]) - ::max(a[1], b[1]));
  const A inter = mul_rn(w, h);
  const A area_a = mul_rn(a[2] - a[0], a[3] - a[1]);
  const A area_b = mul_rn(b[2] - b[0], b[3] - b[1]);
  return inter / (area_a + area_b - inter) > threshold;
}

// The sorted boxes form K segments (one per category for batched_nms, one for nms);
// boxes of different segments never suppress each other, so only the pairs within a
// segment get mask words. Segment s holds boxes [start[s], start[s] + len[s]) and
// cb[s] = ceil(len[s] / 64) words per row, stored row-major from word mask_off[s].
// Memory is sum_s len[s] * cb[s] words: for 80k boxes in 80 categories of 1k boxes,
// 80 * 1000 * 16 words (10 MB) instead of the 80k * 1250 words (800 MB) of one mask
// over all pairs.
struct Segments {
  const int64_t* start;     // [K] first sorted box of the segment
  const int64_t* len;       // [K] boxes in the segment
  const int64_t* mask_off;  // [K] first mask word of the segment
  const int64_t* word_off;  // [K] first `removed` word of the segment in the scratch words
};

// Grid (R, max_cb) of kWord threads, R = sum_s cb[s] row blocks over all segments:
// blockIdx.x is a row block, row_seg/row_local give its segment and its index there,
// and blockIdx.y its column block (y, limited to 65535, takes the per-segment count).
// Thread t fills mask row (row_block * 64 + t) of the segment, column word blockIdx.y.
template <typename T>
__global__ void nms_mask_kernel(const T* boxes, at::acc_type<T, true> threshold, Segments seg,
                                const int64_t* row_seg, const int64_t* row_local, uint64_t* mask) {
  using A = at::acc_type<T, true>;
  const int64_t s = row_seg[blockIdx.x];
  const int64_t row_block = row_local[blockIdx.x], col_block = blockIdx.y;
  const int64_t n = seg.len[s];
  const int64_t col_blocks = (n + kWord - 1) / kWord;
  if (row_block > col_block || col_block >= col_blocks) {
    return;  // only j > i matters, and this segment has fewer column blocks than the widest
  }
  const T* seg_boxes = boxes + seg.start[s] * 4;
  uint64_t* seg_mask = mask + seg.mask_off[s];
  const int rows = static_cast<int>(std::min<int64_t>(n - row_block * kWord, kWord));
  const int cols = static_cast<int>(std::min<int64_t>(n - col_block * kWord, kWord));
  __shared__ A col_boxes[kWord * 4];
  if (threadIdx.x < cols) {
    for (int d = 0; d < 4; ++d) {
      col_boxes[threadIdx.x * 4 + d] = static_cast<A>(seg_boxes[(col_block * kWord + threadIdx.x) * 4 + d]);
    }
  }
  __syncthreads();
  if (threadIdx.x >= rows) {
    return;
  }
  const int64_t i = row_block * kWord + threadIdx.x;
  A box[4];
  for (int d = 0; d < 4; ++d) {
    box[d] = static_cast<A>(seg_boxes[i * 4 + d]);
  }
  uint64_t bits = 0;
  // On the diagonal block only the columns after the row count.
  for (int j = row_block == col_block ? threadIdx.x + 1 : 0; j < cols; ++j) {
    if (iou_above(box, col_boxes + j * 4, threshold)) {
      bits |= uint64_t{1} << j;
    }
  }
  seg_mask[i * col_blocks + col_block] = bits;
}

// One block per segment (blockIdx.x). removed[w] collects the suppression bits of word
// w from the segment's kept boxes: in shared memory when the widest segment fits
// (`in_shared`), else in the segment's zeroed words of `scratch`.
__global__ void nms_gather_kernel(Segments seg, const uint64_t* mask, bool in_shared, uint64_t* scratch,
                                  bool* keep) {
  extern __shared__ uint64_t shared_removed[];
  __shared__ uint64_t diagonal[kWord];  // mask[i][block] for the 64 boxes of the current block
  __shared__ uint64_t kept_bits;
  const int64_t s = blockIdx.x;
  const int64_t n = seg.len[s];
  const int64_t col_blocks = (n + kWord - 1) / kWord;
  const uint64_t* seg_mask = mask + seg.mask_off[s];
  bool* seg_keep = keep + seg.start[s];
  uint64_t* removed = in_shared ? shared_removed : scratch + seg.word_off[s];
  if (in_shared) {
    for (int64_t w = threadIdx.x; w < col_blocks; w += blockDim.x) {
      removed[w] = 0;
    }
  }
  for (int64_t block = 0; block < col_blocks; ++block) {
    const int64_t first = block * kWord;
    const int count = static_cast<int>(std::min<int64_t>(n - first, kWord));
    if (threadIdx.x < count) {
      diagonal[threadIdx.x] = seg_mask[(first + threadIdx.x) * col_blocks + block];
    }
    __syncthreads();  // diagonal loaded, removed[block] final
    if (threadIdx.x == 0) {
      // Sequential within the block: box b survives unless an earlier kept box removed it.
      uint64_t gone = removed[block], kept = 0;
      for (int b = 0; b < count; ++b) {
        if (!((gone >> b) & 1)) {
          kept |= uint64_t{1} << b;
          gone |= diagonal[b];
        }
      }
      kept_bits = kept;
    }
    __syncthreads();
    const uint64_t kept = kept_bits;
    if (threadIdx.x < count) {
      seg_keep[first + threadIdx.x] = (kept >> threadIdx.x) & 1;
    }
    // Later words: OR in the rows of this block's kept boxes.
    for (int64_t w = block + 1 + threadIdx.x; w < col_blocks; w += blockDim.x) {
      uint64_t acc = removed[w];
      for (uint64_t bits = kept; bits != 0; bits &= bits - 1) {
        acc |= seg_mask[(first + __ffsll(static_cast<long long>(bits)) - 1) * col_blocks + w];
      }
      removed[w] = acc;
    }
    __syncthreads();  // removed[block + 1] final, diagonal and kept_bits free again
  }
}

// Keep flags [N] of `sorted` boxes (each segment by decreasing score) split into the
// segments of lengths `lens` ([K] int64, on the boxes' device, all > 0).
at::Tensor segmented_nms_keep(const at::Tensor& sorted, const at::Tensor& lens, double iou_threshold) {
  const int64_t n = sorted.size(0);
  const at::Tensor cb = (lens + (kWord - 1)).div(kWord, "floor");  // words per row of each segment
  const at::Tensor words = lens * cb;                               // mask words of each segment
  const at::Tensor ends = at::stack({lens.cumsum(0), words.cumsum(0), cb.cumsum(0)});  // [3, K] inclusive
  // One device-to-host copy: the sizes the launches and allocations need.
  const at::Tensor totals = at::cat({ends.select(1, ends.size(1) - 1), cb.max().unsqueeze(0)}).cpu();
  const int64_t total_words = totals[1].item<int64_t>(), row_blocks = totals[2].item<int64_t>();
  const int64_t max_cb = totals[3].item<int64_t>();
  TORCH_CHECK(max_cb <= 65535, "nms: at most ", 65535 * kWord, " boxes of one category on CUDA, got more");
  const at::Tensor offsets = (ends - at::stack({lens, words, cb})).contiguous();  // [3, K] exclusive sums
  // Row block r of the concatenation belongs to segment row_seg[r], where it is block
  // number row_local[r] (r minus the segment's first row block).
  const at::Tensor seg_ids = at::arange(lens.size(0), lens.options());
  const at::Tensor row_seg = seg_ids.repeat_interleave(cb, /*dim=*/0, /*output_size=*/row_blocks);
  const at::Tensor row_local = at::arange(row_blocks, lens.options()) - offsets[2].index_select(0, row_seg);

  at::Tensor mask = at::empty({total_words}, sorted.options().dtype(at::kLong));
  at::Tensor keep = at::empty({n}, sorted.options().dtype(at::kBool));
  const bool in_shared = max_cb <= kMaxSharedWords;
  at::Tensor scratch = at::zeros({in_shared ? 0 : row_blocks}, sorted.options().dtype(at::kLong));
  const Segments seg{offsets[0].data_ptr<int64_t>(), lens.data_ptr<int64_t>(), offsets[1].data_ptr<int64_t>(),
                     offsets[2].data_ptr<int64_t>()};
  auto* mask_ptr = reinterpret_cast<uint64_t*>(mask.data_ptr<int64_t>());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, sorted.scalar_type(), "nms_cuda", [&] {
    using A = at::acc_type<scalar_t, true>;
    const dim3 grid(row_blocks, max_cb);
    nms_mask_kernel<scalar_t><<<grid, kWord, 0, stream>>>(sorted.data_ptr<scalar_t>(), threshold_in<A>(iou_threshold),
                                                          seg, row_seg.data_ptr<int64_t>(),
                                                          row_local.data_ptr<int64_t>(), mask_ptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const size_t shared_bytes = in_shared ? max_cb * sizeof(uint64_t) : 0;
  nms_gather_kernel<<<lens.size(0), kGatherThreads, shared_bytes, stream>>>(
      seg, mask_ptr, in_shared, reinterpret_cast<uint64_t*>(scratch.data_ptr<int64_t>()), keep.data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return keep;
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms_args(boxes, scores);
  const c10::cuda::CUDAGuard device_guard(boxes.device());
  const int64_t n = boxes.size(0);
  if (n == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted = boxes.index_select(0, order).contiguous();
  const at::Tensor lens = at::full({1}, n, boxes.options().dtype(at::kLong));  // one segment
  return order.masked_select(segmented_nms_keep(sorted, lens, iou_threshold));
}

// Sorted by (category, decreasing score), each category is one segment of the mask, so
// its decisions are those of one nms call per category, on the original coordinates
// (the same IoUs as the CPU kernel), and the mask holds no pairs across categories.
at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  check_batched_nms_args(boxes, scores, idxs);
  if (boxes.size(0) == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const c10::cuda::CUDAGuard device_guard(boxes.device());
  // Two stable sorts: by decreasing score, then by category, so that each category is
  // contiguous and keeps the score order (ties in input order) inside.
  const at::Tensor by_score = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor by_category = std::get<1>(idxs.index_select(0, by_score).sort(/*stable=*/true, /*dim=*/0));
  const at::Tensor order = by_score.index_select(0, by_category);
  const at::Tensor lens = std::get<2>(at::unique_consecutive(idxs.index_select(0, order), /*return_inverse=*/false,
                                                             /*return_counts=*/true));
  const at::Tensor sorted = boxes.index_select(0, order).contiguous();
  const at::Tensor kept = order.masked_select(segmented_nms_keep(sorted, lens, iou_threshold));
  // Back to nms's order: decreasing score over all categories, ties in input order.
  const at::Tensor by_index = std::get<0>(kept.sort());
  const at::Tensor perm = std::get<1>(scores.index_select(0, by_index).sort(/*stable=*/true, /*dim=*/0,
                                                                             /*descending=*/true));
  return by_index.index_select(0, perm);
}

}  // namespace

TORCH_LIBRARY_IMPL(detbench, CUDA, m) {
  m.impl("nms", &nms_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
}

}  // namespace detbench
