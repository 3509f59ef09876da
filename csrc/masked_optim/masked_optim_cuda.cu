// CUDA kernels of the masked optimizer steps (CPU twins: masked_optim_cpu.cpp; per-element math shared with them:
// masked_optim_math.h). A step is memory-bound: one pass reads p, g, state (and mask) once and writes p and state
// once. A whole parameter list costs a few launches, not one per tensor: tensors are grouped by (device, param
// dtype, mask kind, index dtype) and each group is one multi-tensor launch whose metadata (pointers, sizes,
// per-tensor block offsets) travels by value in the kernel arguments; each block steps one chunk of one tensor.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <map>
#include <tuple>
#include <type_traits>
#include <vector>

#include "masked_optim/masked_optim.h"
#include "masked_optim/masked_optim_math.h"

namespace pyunlearn::masked_optim {
namespace {

constexpr int kThreads = 256;
constexpr int kVec = 4;                                // elements per thread per iteration (4-wide loads if aligned)
constexpr int64_t kChunk = int64_t(kThreads) * kVec * 8;  // elements (or indices) per block: 8 iterations
constexpr int kMaxTensors = 48;                        // per launch: keeps ListMeta<3> + args under 4 KB
constexpr int64_t kMaxBlocks = int64_t(1) << 30;       // per launch: stays below gridDim.x's 2^31 - 1

// Metadata of one launch, passed by value (kernel-argument space, no device allocation or copy per step).
// NS = number of optimizer-state lists of the op (SGD 1, AdamW 3, Sophia 2).
template <int NS>
struct ListMeta {
  void* ptr[2 + NS][kMaxTensors];    // params, grads, then the states (nullptr: the op runs without that state)
  const void* mask[kMaxTensors];     // dense mask bytes [numel] or index list [K]; unused for MaskKind::All
  int64_t numel[kMaxTensors];        // param elements: the bound of the index path
  int64_t work[kMaxTensors];         // what the blocks walk: numel (All, Dense) or K (Index)
  int block_start[kMaxTensors + 1];  // block b steps tensor t where block_start[t] <= b < block_start[t + 1]
  bool vec_ok[kMaxTensors];          // every pointer of tensor t is aligned for 4-wide loads
  int n;                             // tensors in this launch
};

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// Steps element j of a selected entry (scalar path): masked-off entries never get here, so they are neither read
// nor written and stay bit-identical.
template <typename T, typename S, int NS, typename Fn>
__device__ __forceinline__ void step_one(T* p, const T* g, S* const (&st)[NS], int64_t j, const Fn& fn) {
  S np = static_cast<S>(p[j]);
  S ns[NS];
#pragma unroll
  for (int s = 0; s < NS; ++s) ns[s] = st[s] != nullptr ? st[s][j] : S(0);
  fn(np, static_cast<S>(g[j]), ns);
  p[j] = static_cast<T>(np);
#pragma unroll
  for (int s = 0; s < NS; ++s)
    if (st[s] != nullptr) st[s][j] = ns[s];
}

// The body every kernel shares: find this block's tensor and chunk, then step the chunk.
// fn(S& p, S g, S* state) is the op's per-element update from masked_optim_math.h.
template <typename T, typename S, int NS, MaskKind K, typename I, typename Fn>
__device__ __forceinline__ void step_block(const ListMeta<NS>& meta, const Fn& fn) {
  const int b = static_cast<int>(blockIdx.x);
  // Largest t with block_start[t] <= b; empty tensors never enter a launch, so block_start is strictly increasing.
  int lo = 0, hi = meta.n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (meta.block_start[mid] <= b) lo = mid; else hi = mid - 1;
  }
  const int t = lo;
  T* p = static_cast<T*>(meta.ptr[0][t]);              // [numel]
  const T* g = static_cast<const T*>(meta.ptr[1][t]);  // [numel]
  S* st[NS];                                           // NS x [numel] (or nullptr)
#pragma unroll
  for (int s = 0; s < NS; ++s) st[s] = static_cast<S*>(meta.ptr[2 + s][t]);
  const int64_t numel = meta.numel[t];
  const int64_t begin = int64_t(b - meta.block_start[t]) * kChunk;
  const int64_t end = begin + kChunk < meta.work[t] ? begin + kChunk : meta.work[t];

  if constexpr (K == MaskKind::Index) {
    const I* idx = static_cast<const I*>(meta.mask[t]);  // [K]
    for (int64_t k = begin + threadIdx.x; k < end; k += kThreads) {
      const int64_t j = static_cast<int64_t>(idx[k]);
      // The Python layer validates indices; an out-of-range one is skipped here rather than checked on the host
      // (a host check would sync the device on every step).
      if (j < 0 || j >= numel) continue;
      step_one<T, S, NS>(p, g, st, j, fn);
    }
    (void)numel;
  } else {
    const uint8_t* mk = static_cast<const uint8_t*>(meta.mask[t]);  // [numel] (Dense) or nullptr (All)
    if (meta.vec_ok[t]) {
      // 4 contiguous elements per thread with one vector load per tensor: fewer memory instructions per byte.
      // begin is a multiple of kVec, so only the ragged end of a tensor's last chunk needs the scalar path.
      for (int64_t j = begin + int64_t(threadIdx.x) * kVec; j < end; j += int64_t(kThreads) * kVec) {
        if (j + kVec > end) {
          for (int64_t e = j; e < end; ++e)
            if (K == MaskKind::All || mk[e] != 0) step_one<T, S, NS>(p, g, st, e, fn);
          break;
        }
        bool on[kVec];
        if constexpr (K == MaskKind::Dense) {
          const Vec<uint8_t, kVec> mv = *reinterpret_cast<const Vec<uint8_t, kVec>*>(mk + j);
          bool any = false;
#pragma unroll
          for (int r = 0; r < kVec; ++r) any |= (on[r] = mv.v[r] != 0);
          if (!any) continue;  // an all-off quad costs only its mask bytes
        } else {
#pragma unroll
          for (int r = 0; r < kVec; ++r) on[r] = true;
        }
        Vec<T, kVec> pv = *reinterpret_cast<const Vec<T, kVec>*>(p + j);
        const Vec<T, kVec> gv = *reinterpret_cast<const Vec<T, kVec>*>(g + j);
        Vec<S, kVec> sv[NS];
#pragma unroll
        for (int s = 0; s < NS; ++s) {
          if (st[s] != nullptr) {
            sv[s] = *reinterpret_cast<const Vec<S, kVec>*>(st[s] + j);
          } else {
#pragma unroll
            for (int r = 0; r < kVec; ++r) sv[s].v[r] = S(0);
          }
        }
        // Compute every lane, then select: a masked-off lane keeps its loaded bits in registers and stores them
        // back unchanged, so the whole quad is written with one vector store per tensor.
#pragma unroll
        for (int r = 0; r < kVec; ++r) {
          S np = static_cast<S>(pv.v[r]);
          S ns[NS];
#pragma unroll
          for (int s = 0; s < NS; ++s) ns[s] = sv[s].v[r];
          fn(np, static_cast<S>(gv.v[r]), ns);
          if (on[r]) {
            pv.v[r] = static_cast<T>(np);
#pragma unroll
            for (int s = 0; s < NS; ++s) sv[s].v[r] = ns[s];
          }
        }
        *reinterpret_cast<Vec<T, kVec>*>(p + j) = pv;
#pragma unroll
        for (int s = 0; s < NS; ++s)
          if (st[s] != nullptr) *reinterpret_cast<Vec<S, kVec>*>(st[s] + j) = sv[s];
      }
    } else {
      for (int64_t j = begin + threadIdx.x; j < end; j += kThreads)
        if (K == MaskKind::All || mk[j] != 0) step_one<T, S, NS>(p, g, st, j, fn);
    }
  }
}

// momentum == 0 runs without buffers (state pointer nullptr): sgd_update then ignores its buffer argument.
template <typename S>
struct SgdKernelArgs {
  SgdCoeffs<S> a;
  bool use_buf;
};

template <typename T, typename S, MaskKind K, typename I>
__global__ void __launch_bounds__(kThreads) _masked_sgd_step_kernel(ListMeta<1> meta, SgdKernelArgs<S> ka) {
  step_block<T, S, 1, K, I>(meta, [&](S& p, S g, S* st) { sgd_update<S>(p, g, st[0], ka.use_buf, ka.a); });
}

template <typename T, typename S, MaskKind K, typename I>
__global__ void __launch_bounds__(kThreads) _masked_adamw_step_kernel(ListMeta<3> meta, AdamWCoeffs<S> a) {
  step_block<T, S, 3, K, I>(meta, [&](S& p, S g, S* st) { adamw_update<S>(p, g, st[0], st[1], st[2], a); });
}

template <typename T, typename S, MaskKind K, typename I>
__global__ void __launch_bounds__(kThreads) _masked_sophia_step_kernel(ListMeta<2> meta, SophiaCoeffs<S> a) {
  step_block<T, S, 2, K, I>(meta, [&](S& p, S g, S* st) { sophia_update<S>(p, g, st[0], st[1], a); });
}

// ------------------------------------------------------------------------------------------------ host side

// One tensor of the list, ready for a launch: contiguous working copies (written back after the kernels).
struct Slot {
  c10::DeviceIndex device;
  at::ScalarType dtype, index_dtype;  // index_dtype: Undefined unless kind == Index
  MaskKind kind;
  at::Tensor mask;         // [numel] dense bool/uint8 or [K] int32/int64, contiguous; undefined for All
  std::vector<Contig> t;   // params, grads, then the op's states (undefined when absent)
  int64_t numel, work;
};

// Prepares every tensor with something to do (empty tensors and empty index lists are skipped).
std::vector<Slot> make_slots(at::TensorList params, at::TensorList grads, const MaskList& masks,
                             const std::vector<at::TensorList>& states) {
  std::vector<Slot> slots;
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    // The dispatcher picked CUDA from some argument; a CPU tensor elsewhere in the list would be a host pointer.
    TORCH_CHECK_VALUE(p.is_cuda(), "params[", i, "] must be a CUDA tensor like the rest of the call, got ",
                      p.device());
    Slot s;
    s.kind = mask_kind(masks, i, p);
    if (s.kind != MaskKind::All) s.mask = masks.get(i)->contiguous();
    s.numel = p.numel();
    s.work = s.kind == MaskKind::Index ? s.mask.numel() : s.numel;
    if (s.numel == 0 || s.work == 0) continue;
    s.device = p.device().index();
    s.dtype = p.scalar_type();
    s.index_dtype = s.kind == MaskKind::Index ? s.mask.scalar_type() : at::ScalarType::Undefined;
    s.t.emplace_back(p);
    s.t.emplace_back(grads[i]);
    for (const auto& list : states) s.t.emplace_back(list.empty() ? at::Tensor() : list[i]);
    slots.push_back(std::move(s));
  }
  return slots;
}

void write_back(std::vector<Slot>& slots) {
  for (auto& s : slots)
    for (size_t k = 0; k < s.t.size(); ++k)
      if (k != 1) s.t[k].write_back();  // grads (k == 1) are read-only
}

bool aligned(const void* ptr, size_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

// Launches `kernel` over one group (same device, dtype, mask kind, index dtype), as few times as the metadata
// capacity allows.
template <typename T, typename S, int NS, typename Args>
void launch_group(const std::vector<Slot*>& group, void (*kernel)(ListMeta<NS>, Args), const Args& args) {
  static_assert(sizeof(ListMeta<NS>) + sizeof(Args) <= 4096, "kernel arguments must stay under 4 KB");
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  ListMeta<NS> meta{};
  int64_t blocks = 0;
  auto flush = [&] {
    if (meta.n == 0) return;
    meta.block_start[meta.n] = static_cast<int>(blocks);
    kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(meta, args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    meta.n = 0;
    blocks = 0;
  };
  for (Slot* s : group) {
    const int64_t nb = (s->work + kChunk - 1) / kChunk;
    if (meta.n == kMaxTensors || blocks + nb > kMaxBlocks) flush();
    const int n = meta.n;
    bool ok = true;
    for (int k = 0; k < 2 + NS; ++k) {
      const at::Tensor& w = s->t[k].work;
      meta.ptr[k][n] = w.defined() ? w.data_ptr() : nullptr;
      if (w.defined()) ok = ok && aligned(meta.ptr[k][n], kVec * (k < 2 ? sizeof(T) : sizeof(S)));
    }
    meta.mask[n] = s->mask.defined() ? s->mask.data_ptr() : nullptr;
    if (s->kind == MaskKind::Dense) ok = ok && aligned(meta.mask[n], kVec);
    meta.vec_ok[n] = ok;
    meta.numel[n] = s->numel;
    meta.work[n] = s->work;
    meta.block_start[n] = static_cast<int>(blocks);
    blocks += nb;
    meta.n = n + 1;
  }
  flush();
}

// Groups the slots and calls f(dtype, kind, index_dtype, group) under each group's device guard.
template <typename F>
void for_each_group(std::vector<Slot>& slots, F&& f) {
  std::map<std::tuple<c10::DeviceIndex, at::ScalarType, MaskKind, at::ScalarType>, std::vector<Slot*>> groups;
  for (auto& s : slots) groups[{s.device, s.dtype, s.kind, s.index_dtype}].push_back(&s);
  for (auto& [key, group] : groups) {
    c10::cuda::CUDAGuard guard(std::get<0>(key));
    f(std::get<1>(key), std::get<2>(key), std::get<3>(key), group);
  }
}

// Calls f(integral_constant<MaskKind, K>, I{}) with the compile-time mask kind and index type.
template <typename F>
void dispatch_mask(MaskKind kind, at::ScalarType index_dtype, F&& f) {
  using All = std::integral_constant<MaskKind, MaskKind::All>;
  using Dense = std::integral_constant<MaskKind, MaskKind::Dense>;
  using Index = std::integral_constant<MaskKind, MaskKind::Index>;
  if (kind == MaskKind::All) f(All{}, int32_t{});
  else if (kind == MaskKind::Dense) f(Dense{}, int32_t{});
  else if (index_dtype == at::kInt) f(Index{}, int32_t{});
  else f(Index{}, int64_t{});
}

#define PU_DISPATCH(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

template <typename scalar_t>
using state_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

void masked_sgd_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList bufs, const MaskList& masks,
                          double lr, double momentum, double dampening, double weight_decay, bool nesterov,
                          bool maximize, bool first_step) {
  check_sgd_args(params, grads, bufs, masks, lr, momentum, dampening, weight_decay, nesterov);
  const bool use_buf = momentum != 0.0;
  std::vector<Slot> slots = make_slots(params, grads, masks, {use_buf ? bufs : at::TensorList()});
  for_each_group(slots, [&](at::ScalarType dt, MaskKind kind, at::ScalarType it, const std::vector<Slot*>& group) {
    PU_DISPATCH(dt, "masked_sgd_step_cuda", [&] {
      using S = state_t<scalar_t>;
      const SgdKernelArgs<S> a{SgdCoeffs<S>(lr, momentum, dampening, weight_decay, nesterov, maximize, first_step),
                               use_buf};
      dispatch_mask(kind, it, [&](auto k, auto i) {
        launch_group<scalar_t, S, 1>(group, &_masked_sgd_step_kernel<scalar_t, S, decltype(k)::value, decltype(i)>,
                                     a);
      });
    });
  });
  write_back(slots);
}

void masked_adamw_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                            at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs, const MaskList& masks,
                            double lr, double beta1, double beta2, double weight_decay, double eps, double step,
                            bool amsgrad, bool maximize) {
  check_adamw_args(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks, lr, beta1, beta2, weight_decay, eps,
                   step, amsgrad);
  std::vector<Slot> slots = make_slots(params, grads, masks,
                                       {exp_avgs, exp_avg_sqs, amsgrad ? max_exp_avg_sqs : at::TensorList()});
  for_each_group(slots, [&](at::ScalarType dt, MaskKind kind, at::ScalarType it, const std::vector<Slot*>& group) {
    PU_DISPATCH(dt, "masked_adamw_step_cuda", [&] {
      using S = state_t<scalar_t>;
      const AdamWCoeffs<S> a(lr, beta1, beta2, weight_decay, eps, step, amsgrad, maximize);
      dispatch_mask(kind, it, [&](auto k, auto i) {
        launch_group<scalar_t, S, 3>(group,
                                     &_masked_adamw_step_kernel<scalar_t, S, decltype(k)::value, decltype(i)>, a);
      });
    });
  });
  write_back(slots);
}

void masked_sophia_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                             at::TensorList hessians, const MaskList& masks, double lr, double beta1, double beta2,
                             double rho, double bs, double weight_decay, double eps, bool update_hessian,
                             bool maximize) {
  check_sophia_args(params, grads, exp_avgs, hessians, masks, lr, beta1, beta2, rho, bs, weight_decay, eps);
  std::vector<Slot> slots = make_slots(params, grads, masks, {exp_avgs, hessians});
  for_each_group(slots, [&](at::ScalarType dt, MaskKind kind, at::ScalarType it, const std::vector<Slot*>& group) {
    PU_DISPATCH(dt, "masked_sophia_step_cuda", [&] {
      using S = state_t<scalar_t>;
      const SophiaCoeffs<S> a(lr, beta1, beta2, rho, bs, weight_decay, eps, update_hessian, maximize);
      dispatch_mask(kind, it, [&](auto k, auto i) {
        launch_group<scalar_t, S, 2>(group,
                                     &_masked_sophia_step_kernel<scalar_t, S, decltype(k)::value, decltype(i)>, a);
      });
    });
  });
  write_back(slots);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyunlearn, CUDA, m) {
  m.impl("masked_sgd_step", &masked_sgd_step_cuda);
  m.impl("masked_adamw_step", &masked_adamw_step_cuda);
  m.impl("masked_sophia_step", &masked_sophia_step_cuda);
}

}  // namespace pyunlearn::masked_optim
