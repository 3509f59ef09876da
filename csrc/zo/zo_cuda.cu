// CUDA kernels of the seeded ZO direction ops (CPU twins: zo_cpu.cpp; generator shared with them: zo_math.h).
// Multi-tensor: the tensors of one call (one dtype, one device) go into launches of up to kMaxTensors tensors
// whose table (pointers, sizes, flat offsets, first block) travels by value in the kernel arguments. A block
// covers kGroupsPerBlock Philox groups of one tensor; a thread makes one Philox call per group (4 elements, all
// 4 words used) for each direction, accumulates acc = 0; acc += c_k z_k in fp32 (fp64 for fp64 tensors) and
// writes t = t + scale * acc once. Built with --fmad=false (CMakeLists.txt): no FMA contraction, so the
// arithmetic rounds as the CPU kernels' does; only logf/sincosf differ from the host libm by their ulps.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "zo/zo.h"

namespace pyunlearn::zo {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kGroupsPerBlock = int64_t(kThreads) * 4;  // 4 groups (16 elements) per thread
constexpr int kMaxTensors = 64;                               // per launch: the table stays ~2.6 KB
constexpr int64_t kMaxBlocks = int64_t(1) << 30;              // per launch: below gridDim.x's 2^31 - 1

struct Table {
  void* ptr[kMaxTensors];           // tensor data [numel]
  int64_t numel[kMaxTensors];
  int64_t base[kMaxTensors];        // flat index of the tensor's first element
  int64_t block_start[kMaxTensors + 1];
  int n;
};

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads) zo_accumulate_kernel(Table tab, const A* __restrict__ c, int64_t K,
                                                                 uint64_t seed, uint64_t d0, A scale, Dist dist) {
  const int64_t b = blockIdx.x;
  int lo = 0, hi = tab.n - 1;  // the tensor of this block: largest t with block_start[t] <= b
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tab.block_start[mid] <= b) lo = mid; else hi = mid - 1;
  }
  T* t = static_cast<T*>(tab.ptr[lo]);
  const int64_t n = tab.numel[lo], base = tab.base[lo];
  const int64_t g_first = base >> 2, g_end = ((base + n - 1) >> 2) + 1;
  const int64_t g_block = g_first + (b - tab.block_start[lo]) * kGroupsPerBlock;
  for (int64_t g = g_block + threadIdx.x; g < min(g_end, g_block + kGroupsPerBlock); g += kThreads) {
    A acc[4] = {A(0), A(0), A(0), A(0)};
    for (int64_t k = 0; k < K; ++k) {
      float z[4];
      group_values(seed, d0 + static_cast<uint64_t>(k), static_cast<uint64_t>(g), dist, z);
      const A ck = c[k];
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[q] = acc[q] + ck * static_cast<A>(z[q]);
    }
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t i = 4 * g + q - base;
      if (i >= 0 && i < n) t[i] = static_cast<T>(static_cast<A>(t[i]) + scale * acc[q]);
    }
  }
}

// zo_accumulate_rows: the same table (ptr = row 0, numel = row length, base = flat index of the row's first
// element) plus each tensor's row stride; blockIdx.x walks the table's element blocks, blockIdx.y (with a stride of
// gridDim.y) the rows. Values as zo_accumulate_kernel with K = 1 and scale = 1: acc = 0 + alpha z; t = t + acc.
struct RowTable {
  void* ptr[kMaxTensors];
  int64_t numel[kMaxTensors];
  int64_t base[kMaxTensors];
  int64_t stride[kMaxTensors];      // elements between rows
  int64_t block_start[kMaxTensors + 1];
  int n;
};

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads) zo_accumulate_rows_kernel(RowTable tab, const A* __restrict__ alpha,
                                                                      int64_t K, uint64_t seed, uint64_t d0,
                                                                      Dist dist) {
  const int64_t b = blockIdx.x;
  int lo = 0, hi = tab.n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tab.block_start[mid] <= b) lo = mid; else hi = mid - 1;
  }
  const int64_t n = tab.numel[lo], base = tab.base[lo], stride = tab.stride[lo];
  const int64_t g_first = base >> 2, g_end = ((base + n - 1) >> 2) + 1;
  const int64_t g_block = g_first + (b - tab.block_start[lo]) * kGroupsPerBlock;
  const A a = *alpha;
  for (int64_t k = blockIdx.y; k < K; k += gridDim.y) {
    T* t = static_cast<T*>(tab.ptr[lo]) + k * stride;
    for (int64_t g = g_block + threadIdx.x; g < min(g_end, g_block + kGroupsPerBlock); g += kThreads) {
      float z[4];
      group_values(seed, d0 + static_cast<uint64_t>(k), static_cast<uint64_t>(g), dist, z);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t i = 4 * g + q - base;
        if (i >= 0 && i < n) {
          const A acc = A(0) + a * static_cast<A>(z[q]);
          t[i] = static_cast<T>(static_cast<A>(t[i]) + acc);
        }
      }
    }
  }
}

__global__ void __launch_bounds__(kThreads) zo_philox_bits_kernel(int64_t* __restrict__ out, int64_t n,
                                                                  int64_t offset, uint64_t seed, uint64_t dir) {
  const int64_t g_first = offset >> 2, g_end = ((offset + n - 1) >> 2) + 1;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t g = g_first + int64_t(blockIdx.x) * kThreads + threadIdx.x; g < g_end; g += stride) {
    const Words w = philox_words(seed, dir, static_cast<uint64_t>(g));
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t i = 4 * g + q - offset;
      if (i >= 0 && i < n) out[i] = static_cast<int64_t>(w.x[q]);
    }
  }
}

int64_t blocks_of(int64_t base, int64_t n) {
  const int64_t groups = ((base + n - 1) >> 2) - (base >> 2) + 1;
  return (groups + kGroupsPerBlock - 1) / kGroupsPerBlock;
}

void zo_accumulate_cuda(at::TensorList tensors, const at::Tensor& coeffs, int64_t seed, int64_t direction0,
                        double scale, c10::string_view dist, int64_t offset) {
  const Dist d = check_accumulate_args(tensors, coeffs, direction0, dist, offset);
  if (tensors.empty() || coeffs.size(0) == 0) return;
  c10::cuda::CUDAGuard guard(tensors[0].device());
  const at::Tensor c = coeffs.to(acc_dtype(tensors[0].scalar_type())).contiguous();  // [K] on the device
  const int64_t K = c.size(0);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  // Non-contiguous tensors are stepped in contiguous copies, written back after the launches.
  std::vector<at::Tensor> work;
  work.reserve(tensors.size());
  for (const at::Tensor& t : tensors) work.push_back(t.is_contiguous() ? t : t.contiguous());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensors[0].scalar_type(), "zo_accumulate_cuda", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    Table tab;
    tab.n = 0;
    tab.block_start[0] = 0;
    auto flush = [&] {
      if (tab.n == 0) return;
      zo_accumulate_kernel<scalar_t, A><<<static_cast<unsigned>(tab.block_start[tab.n]), kThreads, 0, stream>>>(
          tab, c.data_ptr<A>(), K, static_cast<uint64_t>(seed), static_cast<uint64_t>(direction0),
          static_cast<A>(scale), d);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      tab.n = 0;
      tab.block_start[0] = 0;
    };
    int64_t base = offset;
    for (const at::Tensor& t : work) {
      const int64_t n = t.numel();
      // A tensor larger than one launch allows is split into pieces that are each a table entry.
      int64_t done = 0;
      while (done < n) {
        // Pieces of one tensor may share a Philox group at their seam: each computes it, each writes its own.
        const int64_t piece = std::min(n - done, (kMaxBlocks / 2) * kGroupsPerBlock * 4);
        const int64_t blocks = blocks_of(base + done, piece);
        if (tab.n == kMaxTensors || tab.block_start[tab.n] + blocks > kMaxBlocks) flush();
        tab.ptr[tab.n] = static_cast<scalar_t*>(t.data_ptr()) + done;
        tab.numel[tab.n] = piece;
        tab.base[tab.n] = base + done;
        tab.block_start[tab.n + 1] = tab.block_start[tab.n] + blocks;
        ++tab.n;
        done += piece;
      }
      base += n;
    }
    flush();
  });
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!work[i].is_same(tensors[i])) tensors[i].copy_(work[i]);
  }
}

void zo_accumulate_rows_cuda(at::TensorList tensors, const at::Tensor& alpha, int64_t seed, int64_t direction0,
                             c10::string_view dist, int64_t offset) {
  const Dist d = check_rows_args(tensors, alpha, direction0, dist, offset);
  if (tensors.empty() || tensors[0].size(0) == 0) return;
  c10::cuda::CUDAGuard guard(tensors[0].device());
  const int64_t K = tensors[0].size(0);
  const at::Tensor a = alpha.reshape({1}).to(acc_dtype(tensors[0].scalar_type())).contiguous();  // on the device
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const unsigned grid_y = static_cast<unsigned>(std::min<int64_t>(K, 65535));
  std::vector<at::Tensor> work;
  work.reserve(tensors.size());
  for (const at::Tensor& t : tensors) work.push_back(rows_direct(t) ? t : t.contiguous());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensors[0].scalar_type(), "zo_accumulate_rows_cuda", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    RowTable tab;
    tab.n = 0;
    tab.block_start[0] = 0;
    auto flush = [&] {
      if (tab.n == 0) return;
      const dim3 grid(static_cast<unsigned>(tab.block_start[tab.n]), grid_y);
      zo_accumulate_rows_kernel<scalar_t, A><<<grid, kThreads, 0, stream>>>(
          tab, a.data_ptr<A>(), K, static_cast<uint64_t>(seed), static_cast<uint64_t>(direction0), d);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      tab.n = 0;
      tab.block_start[0] = 0;
    };
    int64_t base = offset;
    for (const at::Tensor& t : work) {
      const int64_t n = t.size(1);
      int64_t done = 0;
      while (done < n) {
        const int64_t piece = std::min(n - done, (kMaxBlocks / 2) * kGroupsPerBlock * 4);
        const int64_t blocks = blocks_of(base + done, piece);
        if (tab.n == kMaxTensors || tab.block_start[tab.n] + blocks > kMaxBlocks) flush();
        tab.ptr[tab.n] = static_cast<scalar_t*>(t.data_ptr()) + done;
        tab.numel[tab.n] = piece;
        tab.base[tab.n] = base + done;
        tab.stride[tab.n] = t.stride(0);
        tab.block_start[tab.n + 1] = tab.block_start[tab.n] + blocks;
        ++tab.n;
        done += piece;
      }
      base += n;
    }
    flush();
  });
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!work[i].is_same(tensors[i])) tensors[i].copy_(work[i]);
  }
}

void zo_philox_bits_cuda(const at::Tensor& out, int64_t seed, int64_t direction, int64_t offset) {
  check_bits_args(out, direction, offset);
  const int64_t n = out.numel();
  if (n == 0) return;
  c10::cuda::CUDAGuard guard(out.device());
  at::Tensor work = out.is_contiguous() ? out : out.contiguous();
  const int64_t groups = ((offset + n - 1) >> 2) - (offset >> 2) + 1;
  const int64_t blocks = std::min<int64_t>((groups + kThreads - 1) / kThreads, 65536);
  zo_philox_bits_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      work.data_ptr<int64_t>(), n, offset, static_cast<uint64_t>(seed), static_cast<uint64_t>(direction));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (!work.is_same(out)) out.copy_(work);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyunlearn, CUDA, m) {
  m.impl("zo_accumulate", &zo_accumulate_cuda);
  m.impl("zo_accumulate_rows", &zo_accumulate_rows_cuda);
  m.impl("zo_philox_bits", &zo_philox_bits_cuda);
}

}  // namespace pyunlearn::zo
