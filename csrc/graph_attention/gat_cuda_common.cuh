// Device helpers shared by the CUDA kernels of the graph-attention ops (gat_cuda.cu, gatv2_cuda.cu; CUDA only).
// Lane groups: a group of L lanes (L a power of two <= 32, dividing kThreads) serves one (node, head) pair; lane t
// of the group owns the channel vectors n * L + t (n = 0, 1, ...) of V channels each. Statistics and accumulation
// are fp32 for fp32/fp16/bf16 inputs and fp64 for fp64 (stat_t, as stat_dtype).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>

#include "graph_attention/gat.h"

namespace pyunlearn::gat {
namespace {

constexpr int kThreads = 256;  // per block; every group size L divides it, so groups never straddle a warp

// fp32 statistics and accumulation for fp32/fp16/bf16, fp64 for fp64 (as stat_dtype).
template <typename T>
using stat_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

// r = p[0:V] (one vector load: the host checked the alignment), or zeros when !ok (p is then never read).
template <typename T, typename S, int V>
__device__ __forceinline__ void load_vec(const T* p, S (&r)[V], bool ok = true) {
  Vec<T, V> x;
  if (ok) x = *reinterpret_cast<const Vec<T, V>*>(p);
#pragma unroll
  for (int u = 0; u < V; ++u) r[u] = ok ? static_cast<S>(x.v[u]) : S(0);
}

template <typename T, typename S, int V>
__device__ __forceinline__ void store_vec(T* p, const S (&r)[V]) {
  Vec<T, V> x;
#pragma unroll
  for (int u = 0; u < V; ++u) x.v[u] = static_cast<T>(r[u]);
  *reinterpret_cast<Vec<T, V>*>(p) = x;
}

__device__ __forceinline__ float ex(float x) { return expf(x); }
__device__ __forceinline__ double ex(double x) { return exp(x); }

template <typename S>
__device__ __forceinline__ S leaky(S pre, S slope) { return pre > S(0) ? pre : pre * slope; }

// Attention dropout parameters: keep iff dropout_u(seed, e * H + k) >= p (compared in fp32, as the reference),
// kept weights scaled by scale = 1 / (1 - p).
template <typename S>
struct Drop {
  uint64_t seed;
  float p;
  S scale;
};

// m of CSR edge e, head k: keep / (1 - p); the constant 1 (no hash) when !kDrop.
template <bool kDrop, typename S>
__device__ __forceinline__ S drop_m(const Drop<S>& d, int64_t e, int64_t heads, int64_t k) {
  if constexpr (kDrop) {
    return dropout_u(d.seed, static_cast<uint64_t>(e * heads + k)) >= d.p ? d.scale : S(0);
  } else {
    (void)d, (void)e, (void)heads, (void)k;
    return S(1);
  }
}

// Groups of a launch. Lane t of group g serves (node, head) = (g / heads, g % heads), channel vectors n * lanes + t.
struct Geo {
  int64_t groups, heads, ch;  // groups = nodes * heads
  int64_t lanes;              // L: 1, 2, 4, ..., 32
  int64_t nv;                 // vectors per lane: ceil(ceil(C / V) / L)
  int64_t passes;             // passes over the edges: max(1, ceil(nv / vectors a lane holds in registers))
};

struct Lane {
  int64_t node, head, t;  // t: lane within the group
  unsigned mask;          // the group's lanes within the warp (for the shuffles)
};

// false for threads past the last group (whole groups only: L divides kThreads).
__device__ __forceinline__ bool lane_of(const Geo& geo, Lane& ln) {
  const int64_t tid = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t g = tid / geo.lanes;
  if (g >= geo.groups) return false;
  const unsigned first = (threadIdx.x % 32) & ~unsigned(geo.lanes - 1);  // the group's first lane in the warp
  ln = Lane{g / geo.heads, g % geo.heads, tid % geo.lanes,
            geo.lanes == 32 ? 0xffffffffu : ((1u << geo.lanes) - 1u) << first};
  return true;
}

// Sum over the group's lanes; butterfly order with commutative adds: every lane gets the same bits.
template <typename S>
__device__ __forceinline__ S group_sum(S v, const Lane& ln, int64_t lanes) {
  for (int off = int(lanes) / 2; off > 0; off /= 2) v += __shfl_xor_sync(ln.mask, v, off, int(lanes));
  return v;
}

// ------------------------------------------------------------------------------------------------------- host side

unsigned blocks_of(const Geo& g) {
  const int64_t blocks = (g.groups * g.lanes + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks < (int64_t(1) << 31), "gat: graph too large for one launch (", blocks, " blocks)");
  return static_cast<unsigned>(blocks);
}

// dropout in [0, 1) (the Python wrapper checks it too: the op may be called directly).
template <typename S>
Drop<S> make_drop(double dropout, int64_t seed) {
  return Drop<S>{static_cast<uint64_t>(seed), static_cast<float>(dropout), static_cast<S>(1.0 / (1.0 - dropout))};
}

template <typename T>
const T* opt_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr<T>() : nullptr;
}

}  // namespace
}  // namespace pyunlearn::gat
