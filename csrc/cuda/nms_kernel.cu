// CUDA kernels of detbench::nms, with the 64-wide bitmask scheme, and of
// detbench::batched_nms, which reuses it on shifted boxes (see batched_nms_cuda).
//
// 1. Sort by decreasing score (stable: equal scores keep their input order).
// 2. mask kernel: for sorted boxes i < j, bit j % 64 of word mask[i][j / 64] is set
//    when IoU(i, j) > iou_threshold. A block handles 64 rows x 64 columns; blocks
//    below the diagonal have nothing to do and are skipped (those words are never read).
// 3. gather kernel: one thread block walks the sorted boxes 64 at a time, keeping a
//    box unless a kept box removed it, and ORs the rows of the kept boxes into the
//    `removed` words. Only the [N] keep flags go back to the host side, through
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

// Grid (col_blocks, col_blocks) of kWord threads; thread t of block (x, y) fills
// mask[y * kWord + t][x] for the sorted boxes.
template <typename T>
__global__ void nms_mask_kernel(int64_t n, const T* boxes, at::acc_type<T, true> threshold, uint64_t* mask,
                                int64_t col_blocks) {
  using A = at::acc_type<T, true>;
  const int64_t row_block = blockIdx.y, col_block = blockIdx.x;
  if (row_block > col_block) {
    return;  // only j > i matters
  }
  const int rows = static_cast<int>(std::min<int64_t>(n - row_block * kWord, kWord));
  const int cols = static_cast<int>(std::min<int64_t>(n - col_block * kWord, kWord));
  __shared__ A col_boxes[kWord * 4];
  if (threadIdx.x < cols) {
    for (int d = 0; d < 4; ++d) {
      col_boxes[threadIdx.x * 4 + d] = static_cast<A>(boxes[(col_block * kWord + threadIdx.x) * 4 + d]);
    }
  }
  __syncthreads();
  if (threadIdx.x >= rows) {
    return;
  }
  const int64_t i = row_block * kWord + threadIdx.x;
  A box[4];
  for (int d = 0; d < 4; ++d) {
    box[d] = static_cast<A>(boxes[i * 4 + d]);
  }
  uint64_t bits = 0;
  // On the diagonal block only the columns after the row count.
  for (int j = row_block == col_block ? threadIdx.x + 1 : 0; j < cols; ++j) {
    if (iou_above(box, col_boxes + j * 4, threshold)) {
      bits |= uint64_t{1} << j;
    }
  }
  mask[i * col_blocks + col_block] = bits;
}

// One block. removed[w] collects the suppression bits of word w from all kept boxes.
// `scratch` (col_blocks words, zeroed) holds them when they do not fit in shared memory.
__global__ void nms_gather_kernel(int64_t n, const uint64_t* mask, int64_t col_blocks, uint64_t* scratch,
                                  bool* keep) {
  extern __shared__ uint64_t shared_removed[];
  __shared__ uint64_t diagonal[kWord];  // mask[i][block] for the 64 boxes of the current block
  __shared__ uint64_t kept_bits;
  uint64_t* removed = col_blocks <= kMaxSharedWords ? shared_removed : scratch;
  if (col_blocks <= kMaxSharedWords) {
    for (int64_t w = threadIdx.x; w < col_blocks; w += blockDim.x) {
      removed[w] = 0;
    }
  }
  for (int64_t block = 0; block < col_blocks; ++block) {
    const int64_t first = block * kWord;
    const int count = static_cast<int>(std::min<int64_t>(n - first, kWord));
    if (threadIdx.x < count) {
      diagonal[threadIdx.x] = mask[(first + threadIdx.x) * col_blocks + block];
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
      keep[first + threadIdx.x] = (kept >> threadIdx.x) & 1;
    }
    // Later words: OR in the rows of this block's kept boxes.
    for (int64_t w = block + 1 + threadIdx.x; w < col_blocks; w += blockDim.x) {
      uint64_t acc = removed[w];
      for (uint64_t bits = kept; bits != 0; bits &= bits - 1) {
        acc |= mask[(first + __ffsll(static_cast<long long>(bits)) - 1) * col_blocks + w];
      }
      removed[w] = acc;
    }
    __syncthreads();  // removed[block + 1] final, diagonal and kept_bits free again
  }
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
  const int64_t col_blocks = (n + kWord - 1) / kWord;
  TORCH_CHECK(col_blocks <= 65535, "nms: at most ", 65535 * kWord, " boxes on CUDA, got ", n);
  at::Tensor mask = at::empty({n, col_blocks}, boxes.options().dtype(at::kLong));
  at::Tensor keep = at::empty({n}, boxes.options().dtype(at::kBool));
  const bool in_shared = col_blocks <= kMaxSharedWords;
  at::Tensor scratch = at::zeros({in_shared ? 0 : col_blocks}, boxes.options().dtype(at::kLong));
  auto* mask_ptr = reinterpret_cast<uint64_t*>(mask.data_ptr<int64_t>());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "nms_cuda", [&] {
    using A = at::acc_type<scalar_t, true>;
    const dim3 grid(col_blocks, col_blocks);
    nms_mask_kernel<scalar_t><<<grid, kWord, 0, stream>>>(n, sorted.data_ptr<scalar_t>(),
                                                          threshold_in<A>(iou_threshold), mask_ptr, col_blocks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const size_t shared_bytes = in_shared ? col_blocks * sizeof(uint64_t) : 0;
  nms_gather_kernel<<<1, kGatherThreads, shared_bytes, stream>>>(
      n, mask_ptr, col_blocks, reinterpret_cast<uint64_t*>(scratch.data_ptr<int64_t>()), keep.data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return order.masked_select(keep);
}

// The coordinate-offset trick: the boxes of category c are moved by c * span, with span
// the extent of all coordinates plus one, so that boxes of different categories cannot
// overlap, and one nms call does the work. Coordinates are shifted in at least float32
// (float16 cannot hold the offsets). A shifted coordinate can round (float32 keeps 24
// significant bits), and an IoU within rounding of the threshold can then be decided
// differently from the CPU kernel, which uses the original coordinates. The [N, N / 64]
// mask still covers all pairs, also across categories.
at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  check_batched_nms_args(boxes, scores, idxs);
  if (boxes.size(0) == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const c10::cuda::CUDAGuard device_guard(boxes.device());
  const at::ScalarType work_type = at::promote_types(boxes.scalar_type(), at::kFloat);
  const at::Tensor work = boxes.to(work_type);
  const at::Tensor low = work.min();
  const at::Tensor span = work.max() - low + 1;
  // Every coordinate starts at 0 after `- low`; category c then occupies [c * span, (c + 1) * span).
  const at::Tensor shifted = work - low + (idxs.to(work_type) * span).unsqueeze(1);
  // Widening the scores is exact, so the visiting order does not change.
  return nms_cuda(shifted, scores.to(work_type), iou_threshold);
}

}  // namespace

TORCH_LIBRARY_IMPL(detbench, CUDA, m) {
  m.impl("nms", &nms_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
}

}  // namespace detbench
