// CUDA kernels of the GATv2 ops (gatv2_fwd, gatv2_bwd). Semantics: gat.h and pyunlearn/reference/gat.py (gatv2_*).
//
// Layout (gat_cuda_common.cuh). A group of L lanes serves one (node, head) pair; lane t owns the channel vectors
// n * L + t of V channels each: V = 16 bytes of T (4 fp32, 2 fp64, 8 fp16/bf16) when C is a multiple of V and every
// [.., C] pointer is 16-byte aligned, else V = 1. A lane keeps N = kSlots vectors of each row it reuses in registers
// (8 channels, 4 for fp64, or 4 scalars); L is the smallest power of two (<= 32) that leaves a lane at most N
// vectors, so one pass covers C <= 256 (fp32, fp16, bf16; 128 for fp64 or scalar loads); wider rows take several
// passes. Consecutive groups are consecutive heads of one node: they walk the same edge list in step, and all loads
// of a chunk of kUnroll edges are issued (predicated, branch-free) before their first use.
//
// Scores. s_e = <att, leaky_relu(xl[j] + xr[i] (+ e_feat[e]))> is a C-long dot product: each lane sums its channels
// and a butterfly of shuffles over the group (group_sum) hands every lane the same bits, so all lanes of a group take
// the same online-softmax decisions. With several passes the first pass computes the whole dot (the channels past
// the registers are re-read, mostly from L1) and saves s_e (forward) or g_s and alpha * m (backward) in an [E, H]
// buffer (never [E, H, C]) that the later passes read back instead of recomputing.
//
// Forward: one pass over each destination row with an online softmax; xl[j] is read once per edge and feeds both
// the score and the accumulator. Writes out and the [N_dst, H] statistics.
// Backward, kernel A (rows, CSR order): D_i = <grad_out_i, out_i>; per edge z, s, <grad_out_i, xl_j>, alpha,
// g_s = alpha (m <grad_out_i, xl_j> - D_i), g_z = g_s * att * leaky'(z): grad_xr[i] = sum of g_z over the row (in
// registers, no atomics), grad_e_feat[e] = g_z, and the lane's share of grad_att = sum g_s * leaky(z) stays in
// registers over the row; the block then reduces its groups' shares in shared memory in a fixed order into one
// partial row per block (per group when a block holds fewer groups than heads), and _colsum_kernel sums the partial
// rows in a fixed order. grad_att is thus deterministic in both modes.
// deterministic=True: kernel A also saves g_s and alpha * m per (edge, head); kernel B walks the CSC per source j
// (fixed order, plain stores) and recomputes z to form grad_xl[j] = sum (alpha m grad_out_i + g_z).
// deterministic=False: kernel A scatters alpha m grad_out_i + g_z into an fp32/fp64 grad_xl accumulator with
// atomicAdd (non-deterministic: atomics; 16-byte float atomics on sm_90) and kernel B is skipped.
// Dropout: a compile-time kDrop; the keep decision of (CSR edge e, head k) is dropout_u(seed, e * H + k) >= p,
// recomputed where needed, never stored (kernel B reads alpha * m from kernel A's buffer).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>

#include "graph_attention/gat.h"
#include "graph_attention/gat_cuda_common.cuh"

namespace pyunlearn::gat {
namespace {

constexpr int kUnroll = 2;     // edges per lane whose loads are in flight together
constexpr int kColRows = 512;  // rows of partials one _colsum_kernel block sums (8 row lanes x 64)

// The wide vector: 16 bytes of T.
template <typename T>
constexpr int kWide = static_cast<int>(16 / sizeof(T));
// Vectors per lane held in registers per reused row (the forward keeps xr, att and the accumulator, plus kUnroll
// rows of xl and e_feat in flight; the backward also grad_out and the grad_xr and grad_att shares): 8 channels (4 for
// fp64, whose registers are twice as wide) of wide vectors, or 4 scalars (each scalar load needs its own address).
template <typename T, int V>
constexpr int kSlots = V == 1 ? 4 : (std::is_same_v<T, double> ? 4 : 8) / V;
template <typename T>
int slots_of(int vec) { return vec == 1 ? kSlots<T, 1> : kSlots<T, kWide<T>>; }

Geo make_geo2(int64_t nodes, int64_t heads, int64_t ch, int vec, int slots) {
  Geo g{nodes * heads, heads, ch, 1, 0, 1};
  const int64_t nvec = (ch + vec - 1) / vec, want = (nvec + slots - 1) / slots;  // L: smallest giving <= slots each
  while (g.lanes < want && g.lanes < 32) g.lanes *= 2;
  g.nv = (nvec + g.lanes - 1) / g.lanes;
  g.passes = g.nv > slots ? (g.nv + slots - 1) / slots : 1;
  return g;
}

// r = p[0:V], or zeros when !ok (p is then never read). Unlike load_vec the zeros are set before a predicated load,
// so no select waits on the load and the loads of an edge chunk stay in flight together.
template <typename T, typename S, int V>
__device__ __forceinline__ void load_pred(const T* p, S (&r)[V], bool ok) {
  Vec<T, V> x{};
  if (ok) x = *reinterpret_cast<const Vec<T, V>*>(p);
#pragma unroll
  for (int u = 0; u < V; ++u) r[u] = static_cast<S>(x.v[u]);
}

// p + c, or nullptr for an absent tensor (e_feat), never forming an offset from a null pointer.
template <typename T>
__device__ __forceinline__ const T* at_or_null(const T* p, int64_t c) { return p != nullptr ? p + c : nullptr; }

// The lane's share of the score of an edge (and, with g, of <g, xl_j>) over its vectors n * L + t, n in [n0, nv): the
// part that does not fit in registers (several passes only). xj = xl[j,k], r = xr[i,k], a = att[k], f = e_feat[e,k]
// or nullptr, g = grad_out[i,k] or nullptr.
template <int V, typename T, typename S>
__device__ __forceinline__ void tail_dots(const Geo& geo, int64_t t, int64_t n0, const T* xj, const T* r, const T* a,
                                          const T* f, const T* g, S slope, S& sp, S& dp) {
  for (int64_t n = n0; n < geo.nv; ++n) {
    const int64_t c = (n * geo.lanes + t) * V;
    if (c >= geo.ch) break;
    S x[V], rv[V], av[V], fv[V], gv[V];
    load_vec(xj + c, x);
    load_vec(r + c, rv);
    load_vec(a + c, av);
    load_vec(at_or_null(f, c), fv, f != nullptr);
    load_vec(at_or_null(g, c), gv, g != nullptr);
#pragma unroll
    for (int v = 0; v < V; ++v) {
      sp += av[v] * leaky(x[v] + rv[v] + fv[v], slope);
      dp += gv[v] * x[v];
    }
  }
}

// p[0:V] += x[0:V] with atomics (fast path). fp32 on sm_90: 16-byte vector atomics, one instruction per 4 floats.
template <int V, typename S>
__device__ __forceinline__ void atomic_add_vec(S* p, const S (&x)[V]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (std::is_same_v<S, float> && V % 4 == 0) {
#pragma unroll
    for (int v = 0; v < V; v += 4)
      atomicAdd(reinterpret_cast<float4*>(p + v), make_float4(x[v], x[v + 1], x[v + 2], x[v + 3]));
  } else
#endif
  {
#pragma unroll
    for (int v = 0; v < V; ++v) atomicAdd(p + v, x[v]);
  }
}

// Edges e0 .. e0 + kUnroll - 1 of a list ending at `end`: ok[u] (inside the list) and idx[u] = list[e0 + u] (0 past
// the end, so that every address below stays formed from a real row; such loads are predicated off).
template <typename I>
__device__ __forceinline__ void edge_chunk(const I* list, int64_t e0, int64_t end, bool (&ok)[kUnroll],
                                           int64_t (&idx)[kUnroll]) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    ok[u] = e0 + u < end;
    idx[u] = ok[u] ? static_cast<int64_t>(list[e0 + u]) : 0;
  }
}

// ---------------------------------------------------------------------------------------------------------- forward
// xl [N_src,H,C], xr [N_dst,H,C], att [H,C], e_feat [E,H,C] or nullptr, rowptr [N_dst+1], col [E] -> out [N_dst,H,C],
// row_max / row_denom [N_dst,H] (S); score [E,H] (S): the scores, saved for the later passes (nullptr: one pass).
// One group per (destination i, head k).
template <typename T, typename I, int V, bool kDrop>
__global__ void __launch_bounds__(kThreads)
    _gatv2_fwd_kernel(const T* xl, const T* xr, const T* att, const T* e_feat, const I* rowptr, const I* col, T* out,
                      stat_t<T>* row_max, stat_t<T>* row_denom, stat_t<T>* score, stat_t<T> slope,
                      Drop<stat_t<T>> drop, Geo geo) {
  using S = stat_t<T>;
  constexpr int N = kSlots<T, V>;
  constexpr S kInf = std::numeric_limits<S>::infinity();
  Lane ln;
  if (!lane_of(geo, ln)) return;
  const int64_t H = geo.heads, C = geo.ch, L = geo.lanes, t = ln.t, k = ln.head, ik = ln.node * H + k;
  const int64_t begin = rowptr[ln.node], end = rowptr[ln.node + 1];
  const bool has_e = e_feat != nullptr;
  const T* xr_i = xr + ik * C;
  const T* att_k = att + k * C;
  S xrv[N][V], atv[N][V];  // the lane's first N vectors of xr[i,k] and att[k]
#pragma unroll
  for (int n = 0; n < N; ++n) {
    const int64_t c = (n * L + t) * V;
    load_pred(xr_i + c, xrv[n], c < C);
    load_pred(att_k + c, atv[n], c < C);
  }
  // Online softmax: running max mx, denominator den and accumulator acc, rescaled when the max grows.
  S mx = -kInf, den = S(0), acc[N][V] = {};
  for (int64_t e0 = begin; e0 < end; e0 += kUnroll) {
    bool ok[kUnroll];
    int64_t j[kUnroll];
    edge_chunk(col, e0, end, ok, j);
    // Every load of the chunk first (predicated, no branches), then the arithmetic.
    S sc[kUnroll], xv[kUnroll][N][V], fv[kUnroll][N][V];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int n = 0; n < N; ++n) {
        const int64_t c = (n * L + t) * V;
        load_pred(xl + (j[u] * H + k) * C + c, xv[u][n], ok[u] && c < C);
        load_pred(at_or_null(e_feat, ((e0 + u) * H + k) * C + c), fv[u][n], ok[u] && c < C && has_e);
      }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      sc[u] = S(0);
#pragma unroll
      for (int n = 0; n < N; ++n)
#pragma unroll
        for (int v = 0; v < V; ++v) sc[u] += atv[n][v] * leaky(xv[u][n][v] + xrv[n][v] + fv[u][n][v], slope);
      if (geo.nv > N && ok[u]) {
        S unused = S(0);
        tail_dots<V>(geo, t, N, xl + (j[u] * H + k) * C, xr_i, att_k, at_or_null(e_feat, ((e0 + u) * H + k) * C),
                     static_cast<const T*>(nullptr), slope, sc[u], unused);
      }
    }
    // Every lane of the group walks the same edges: the shuffles see the whole mask.
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) sc[u] = group_sum(sc[u], ln, L);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (!ok[u]) continue;
      const S e = sc[u];
      if (score != nullptr && t == 0) score[(e0 + u) * H + k] = e;
      // As gat_cuda.cu: one exp per edge; a new max rescales the running sums (exp(-inf) = 0 on the first edge);
      // e == mx also covers -inf == -inf (weight 0). The denominator takes w (undropped), the accumulator w * m.
      const bool grows = e > mx;
      const S x = ex(grows ? mx - e : e - mx);
      const S scale = grows ? x : S(1), w = grows ? S(1) : e == mx ? S(e == -kInf ? 0 : 1) : x;
      mx = grows ? e : mx;
      den = den * scale + w;
      const S wm = kDrop ? w * drop_m<kDrop>(drop, e0 + u, H, k) : w;
#pragma unroll
      for (int n = 0; n < N; ++n)
#pragma unroll
        for (int v = 0; v < V; ++v) acc[n][v] = acc[n][v] * scale + wm * xv[u][n][v];
    }
  }
  // No edges: out 0, max 0, denom 0. Infinite max: the reference saves max 0 and denom sum(exp(s)) (0 or inf) and
  // its alphas are 0/0 or inf/inf: out NaN.
  const bool has_edges = begin < end, degenerate = has_edges && (mx == kInf || mx == -kInf);
  if (t == 0) {
    row_max[ik] = has_edges && !degenerate ? mx : S(0);
    row_denom[ik] = !has_edges ? S(0) : degenerate ? (mx > S(0) ? kInf : S(0)) : den;
  }
  auto store_out = [&](int64_t p, S(&a)[N][V]) {
#pragma unroll
    for (int n = 0; n < N; ++n) {
      const int64_t c = ((p * N + n) * L + t) * V;
#pragma unroll
      for (int v = 0; v < V; ++v)
        a[n][v] = !has_edges ? S(0) : degenerate ? std::numeric_limits<S>::quiet_NaN() : a[n][v] / den;
      if (c < C) store_vec(out + ik * C + c, a[n]);
    }
  };
  store_out(0, acc);
  if (geo.passes == 1) return;
  __syncwarp(ln.mask);  // the scores lane 0 saved above, read by every lane below
  for (int64_t p = 1; p < geo.passes; ++p) {
    S a2[N][V] = {};
    for (int64_t e0 = begin; e0 < end; e0 += kUnroll) {
      bool ok[kUnroll];
      int64_t j[kUnroll];
      edge_chunk(col, e0, end, ok, j);
      S w[kUnroll], xv[kUnroll][N][V];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        w[u] = ok[u] ? ex(score[(e0 + u) * H + k] - mx) : S(0);
        if constexpr (kDrop) w[u] *= ok[u] ? drop_m<kDrop>(drop, e0 + u, H, k) : S(0);
#pragma unroll
        for (int n = 0; n < N; ++n) {
          const int64_t c = ((p * N + n) * L + t) * V;
          load_pred(xl + (j[u] * H + k) * C + c, xv[u][n], ok[u] && c < C);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (!ok[u]) continue;
#pragma unroll
        for (int n = 0; n < N; ++n)
#pragma unroll
          for (int v = 0; v < V; ++v) a2[n][v] += w[u] * xv[u][n][v];
      }
    }
    store_out(p, a2);
  }
}

// ------------------------------------------------------------------------------------------------------ backward A
// Per destination row i, head k, over its CSR edges (module comment). Writes grad_xr [N_dst,H,C] and grad_e
// [E,H,C] (T; grad_e nullptr without e_feat); gs_buf / am_buf [E,H] (S): g_s and alpha * m (nullptr when neither
// kernel B nor a later pass needs them); gxl_acc [N_src,H,C] (S): the atomics of the fast path (nullptr:
// deterministic); att_part (S): grad_att partials, [gridDim.x, H*C] (part_per_block) or [N_dst, H*C].
template <typename T, typename I, int V, bool kDrop>
__global__ void __launch_bounds__(kThreads)
    _gatv2_bwd_rows_kernel(const T* grad_out, const T* xl, const T* xr, const T* att, const T* e_feat, const T* out,
                           const I* rowptr, const I* col, const stat_t<T>* row_max, const stat_t<T>* row_denom,
                           stat_t<T> slope, Drop<stat_t<T>> drop, Geo geo, T* grad_xr, T* grad_e,
                           stat_t<T>* gs_buf, stat_t<T>* am_buf, stat_t<T>* gxl_acc, stat_t<T>* att_part,
                           bool part_per_block) {
  using S = stat_t<T>;
  constexpr int N = kSlots<T, V>;
  __shared__ S sh[N * V][kThreads];  // grad_att shares of the block's threads (part_per_block)
  Lane ln;
  // No early return: every thread of the block reaches the __syncthreads of the grad_att reduction.
  const bool active = lane_of(geo, ln);
  const int64_t H = geo.heads, C = geo.ch, L = geo.lanes;
  const int64_t t = active ? ln.t : 0, k = active ? ln.head : 0, ik = active ? ln.node * H + k : 0;
  const int64_t begin = active ? static_cast<int64_t>(rowptr[ln.node]) : 0;
  const int64_t end = active ? static_cast<int64_t>(rowptr[ln.node + 1]) : 0;
  const bool has_e = e_feat != nullptr;
  const T* go_i = grad_out + ik * C;
  const T* xr_i = xr + ik * C;
  const T* att_k = att + k * C;
  S d_row = S(0), mx = S(0), den = S(1);
  if (active) {
    S d = S(0);  // D_i = <grad_out[i,k], out[i,k]>
    for (int64_t n = 0; n < geo.nv; ++n) {
      const int64_t c = (n * L + t) * V;
      if (c >= C) break;
      S g[V], o[V];
      load_vec(go_i + c, g);
      load_vec(out + ik * C + c, o);
#pragma unroll
      for (int v = 0; v < V; ++v) d += g[v] * o[v];
    }
    d_row = group_sum(d, ln, L);
    mx = row_max[ik];
    den = row_denom[ik];
  }
  for (int64_t p = 0; p < geo.passes; ++p) {
    S ga[N][V] = {};  // the lane's share of grad_att[k] over the row, channels of pass p
    if (active) {
      S xrv[N][V], atv[N][V], gov[N][V], gx[N][V] = {};
#pragma unroll
      for (int n = 0; n < N; ++n) {
        const int64_t c = ((p * N + n) * L + t) * V;
        load_pred(xr_i + c, xrv[n], c < C);
        load_pred(att_k + c, atv[n], c < C);
        load_pred(go_i + c, gov[n], c < C);
      }
      if (p == 1) __syncwarp(ln.mask);  // g_s, alpha * m that lane 0 saved in pass 0
      for (int64_t e0 = begin; e0 < end; e0 += kUnroll) {
        bool ok[kUnroll];
        int64_t j[kUnroll];
        edge_chunk(col, e0, end, ok, j);
        // Loads first (predicated), then z = xl + xr (+ e_feat) in place of xl.
        S gs[kUnroll], am[kUnroll], z[kUnroll][N][V], fv[kUnroll][N][V];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
#pragma unroll
          for (int n = 0; n < N; ++n) {
            const int64_t c = ((p * N + n) * L + t) * V;
            load_pred(xl + (j[u] * H + k) * C + c, z[u][n], ok[u] && c < C);
            load_pred(at_or_null(e_feat, ((e0 + u) * H + k) * C + c), fv[u][n], ok[u] && c < C && has_e);
          }
        if (p == 0) {
          S sp[kUnroll], dp[kUnroll];
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            sp[u] = dp[u] = S(0);
#pragma unroll
            for (int n = 0; n < N; ++n)
#pragma unroll
              for (int v = 0; v < V; ++v) {
                dp[u] += gov[n][v] * z[u][n][v];
                z[u][n][v] = z[u][n][v] + xrv[n][v] + fv[u][n][v];
                sp[u] += atv[n][v] * leaky(z[u][n][v], slope);
              }
            if (geo.nv > N && ok[u])
              tail_dots<V>(geo, t, N, xl + (j[u] * H + k) * C, xr_i, att_k,
                           at_or_null(e_feat, ((e0 + u) * H + k) * C), go_i, slope, sp[u], dp[u]);
          }
          // Every lane of the group walks the same edges: the shuffles see the whole mask.
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            sp[u] = group_sum(sp[u], ln, L);
            dp[u] = group_sum(dp[u], ln, L);
          }
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            const S alpha = ex(sp[u] - mx) / den;
            if constexpr (kDrop) {
              const S dm = ok[u] ? drop_m<kDrop>(drop, e0 + u, H, k) : S(0);
              gs[u] = alpha * (dm * dp[u] - d_row);
              am[u] = alpha * dm;
            } else {
              gs[u] = alpha * (dp[u] - d_row);
              am[u] = alpha;
            }
            if (gs_buf != nullptr && t == 0 && ok[u]) {
              gs_buf[(e0 + u) * H + k] = gs[u];
              am_buf[(e0 + u) * H + k] = am[u];
            }
          }
        } else {
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            gs[u] = ok[u] ? gs_buf[(e0 + u) * H + k] : S(0);
            am[u] = ok[u] ? am_buf[(e0 + u) * H + k] : S(0);
#pragma unroll
            for (int n = 0; n < N; ++n)
#pragma unroll
              for (int v = 0; v < V; ++v) z[u][n][v] = z[u][n][v] + xrv[n][v] + fv[u][n][v];
          }
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          if (!ok[u]) continue;
#pragma unroll
          for (int n = 0; n < N; ++n) {
            const int64_t c = ((p * N + n) * L + t) * V;
            if (c >= C) continue;
            S gz[V];
#pragma unroll
            for (int v = 0; v < V; ++v) {
              gz[v] = gs[u] * atv[n][v] * (z[u][n][v] > S(0) ? S(1) : slope);
              gx[n][v] += gz[v];
              ga[n][v] += gs[u] * leaky(z[u][n][v], slope);
            }
            if (grad_e != nullptr) store_vec(grad_e + ((e0 + u) * H + k) * C + c, gz);
            if (gxl_acc != nullptr) {
              S add[V];
#pragma unroll
              for (int v = 0; v < V; ++v) add[v] = am[u] * gov[n][v] + gz[v];
              atomic_add_vec(gxl_acc + (j[u] * H + k) * C + c, add);
            }
          }
        }
      }
#pragma unroll
      for (int n = 0; n < N; ++n) {
        const int64_t c = ((p * N + n) * L + t) * V;
        if (c < C) store_vec(grad_xr + ik * C + c, gx[n]);
      }
    }
    if (part_per_block) {
      // The block's G = kThreads / L groups (G >= H) sum into one partial row [H*C]: for each (head, channel) of
      // this pass, the shares of the block's groups of that head, in group order. Idle threads add zeros.
#pragma unroll
      for (int n = 0; n < N; ++n)
#pragma unroll
        for (int v = 0; v < V; ++v) sh[n * V + v][threadIdx.x] = ga[n][v];
      __syncthreads();
      const int64_t G = kThreads / L, width = N * L * V, g0 = int64_t(blockIdx.x) * G;
      for (int64_t it = threadIdx.x; it < H * width; it += kThreads) {
        const int64_t kk = it / width, w = it % width, c = p * width + w;
        if (c >= C) continue;
        const int64_t row = w / (L * V) * V + w % V, lane = w / V % L;  // sh row n * V + v, lane in the group
        S s = S(0);
        for (int64_t gi = (kk - g0 % H + H) % H; gi < G; gi += H) s += sh[row][gi * L + lane];
        att_part[int64_t(blockIdx.x) * H * C + kk * C + c] = s;
      }
      __syncthreads();
    } else if (active) {
#pragma unroll
      for (int n = 0; n < N; ++n) {
        const int64_t c = ((p * N + n) * L + t) * V;
        if (c < C) store_vec(att_part + ik * C + c, ga[n]);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------------ backward B
// Per source j, head k, over its CSC edges q (i = row_csc[q], CSR position e = csc_to_csr[q]), in CSC order:
// grad_xl[j,k,:] = sum am[e,k] grad_out[i,k,:] + gs[e,k] att[k,:] leaky'(z) with z = xl[j] + xr[i] (+ e_feat[e]),
// recomputed exactly as kernel A does. Deterministic: plain stores only.
template <typename T, typename I, int V>
__global__ void __launch_bounds__(kThreads)
    _gatv2_bwd_cols_kernel(const T* grad_out, const T* xl, const T* xr, const T* att, const T* e_feat,
                           const I* colptr, const I* row_csc, const I* csc_to_csr, const stat_t<T>* gs_buf,
                           const stat_t<T>* am_buf, stat_t<T> slope, Geo geo, T* grad_xl) {
  using S = stat_t<T>;
  constexpr int N = kSlots<T, V>;
  Lane ln;
  if (!lane_of(geo, ln)) return;
  const int64_t H = geo.heads, C = geo.ch, L = geo.lanes, t = ln.t, k = ln.head, jk = ln.node * H + k;
  const int64_t begin = colptr[ln.node], end = colptr[ln.node + 1];
  const bool has_e = e_feat != nullptr;
  for (int64_t p = 0; p < geo.passes; ++p) {
    S xv[N][V], atv[N][V], acc[N][V] = {};
#pragma unroll
    for (int n = 0; n < N; ++n) {
      const int64_t c = ((p * N + n) * L + t) * V;
      load_pred(xl + jk * C + c, xv[n], c < C);
      load_pred(att + k * C + c, atv[n], c < C);
    }
    for (int64_t q0 = begin; q0 < end; q0 += kUnroll) {
      bool ok[kUnroll];
      int64_t i[kUnroll], e[kUnroll];
      edge_chunk(row_csc, q0, end, ok, i);
      edge_chunk(csc_to_csr, q0, end, ok, e);
      S gs[kUnroll], am[kUnroll], gv[kUnroll][N][V], z[kUnroll][N][V], fv[kUnroll][N][V];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        gs[u] = ok[u] ? gs_buf[e[u] * H + k] : S(0);
        am[u] = ok[u] ? am_buf[e[u] * H + k] : S(0);
#pragma unroll
        for (int n = 0; n < N; ++n) {
          const int64_t c = ((p * N + n) * L + t) * V;
          load_pred(grad_out + (i[u] * H + k) * C + c, gv[u][n], ok[u] && c < C);
          load_pred(xr + (i[u] * H + k) * C + c, z[u][n], ok[u] && c < C);
          load_pred(at_or_null(e_feat, (e[u] * H + k) * C + c), fv[u][n], ok[u] && c < C && has_e);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (!ok[u]) continue;
#pragma unroll
        for (int n = 0; n < N; ++n)
#pragma unroll
          for (int v = 0; v < V; ++v) {
            const S zz = xv[n][v] + z[u][n][v] + fv[u][n][v];  // z, as kernel A: (xl + xr) + e_feat
            acc[n][v] += am[u] * gv[u][n][v] + gs[u] * atv[n][v] * (zz > S(0) ? S(1) : slope);
          }
      }
    }
#pragma unroll
    for (int n = 0; n < N; ++n) {
      const int64_t c = ((p * N + n) * L + t) * V;
      if (c < C) store_vec(grad_xl + jk * C + c, acc[n]);
    }
  }
}

// ------------------------------------------------------------------------------------------------ grad_att reduce
// out[by, c] = sum of in[r, c] over rows r of block row by ([by * rows_per_block, +rows_per_block)), in a fixed
// order: row lane ty (0..7) sums rows ty, ty + 8, ..., then the 8 row lanes are added in order. in [rows, cols].
template <typename S>
__global__ void __launch_bounds__(kThreads)
    _colsum_kernel(const S* in, int64_t rows, int64_t cols, int64_t rows_per_block, S* out) {
  __shared__ S sh[kThreads / 32][32];
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  const int64_t c = int64_t(blockIdx.x) * 32 + tx, r0 = int64_t(blockIdx.y) * rows_per_block;
  const int64_t r1 = rows < r0 + rows_per_block ? rows : r0 + rows_per_block;
  S s = S(0);
  if (c < cols)
    for (int64_t r = r0 + ty; r < r1; r += kThreads / 32) s += in[r * cols + c];
  sh[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && c < cols) {
    for (int y = 1; y < kThreads / 32; ++y) s += sh[y][tx];
    out[int64_t(blockIdx.y) * cols + c] = s;
  }
}

// ------------------------------------------------------------------------------------------------------- host side

// V = kWide<T> when C is a multiple of it and every [.., C] tensor is 16-byte aligned; else scalar loads.
bool wide_ok(int64_t ch, int wide, std::initializer_list<const at::Tensor*> ts) {
  if (ch % wide != 0) return false;
  for (const at::Tensor* t : ts)
    if (t != nullptr && t->defined() && reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 != 0) return false;
  return true;
}

// pick(integral_constant V, bool_constant kDrop) for the runtime (wide, drop).
template <typename T, typename Fn>
auto pick_v2(bool wide, bool drop, Fn&& pick) {
  using W = std::integral_constant<int, kWide<T>>;
  using One = std::integral_constant<int, 1>;
  return wide ? (drop ? pick(W{}, std::true_type{}) : pick(W{}, std::false_type{}))
              : (drop ? pick(One{}, std::true_type{}) : pick(One{}, std::false_type{}));
}

// Column sums of part [rows, cols] (S) in a fixed order -> [cols].
at::Tensor colsum(at::Tensor part, cudaStream_t stream) {
  const int64_t cols = part.size(1);
  for (int64_t rows = part.size(0); rows > 1;) {
    const int64_t rpb = std::max<int64_t>(kColRows, (rows + 65534) / 65535), by = (rows + rpb - 1) / rpb;
    at::Tensor next = at::empty({by, cols}, part.options());
    const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>(by));
    AT_DISPATCH_FLOATING_TYPES(part.scalar_type(), "gatv2_colsum_cuda", [&] {
      _colsum_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(part.data_ptr<scalar_t>(), rows, cols, rpb,
                                                               next.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    part = next;
    rows = by;
  }
  return part.view({cols});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gatv2_fwd_cuda(
    const at::Tensor& xl, const at::Tensor& xr, const at::Tensor& att, const std::optional<at::Tensor>& e_feat,
    const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row_csc,
    const at::Tensor& csc_to_csr, double negative_slope, double dropout, int64_t seed, bool deterministic) {
  (void)deterministic;  // the forward has no atomics either way
  check_gatv2_fwd_args(xl, xr, att, e_feat, rowptr, col, colptr, row_csc, csc_to_csr);
  check_dropout(dropout);
  TORCH_CHECK_VALUE(xl.is_cuda(), "xl must be a CUDA tensor, got ", xl.device());
  const c10::cuda::CUDAGuard guard(xl.device());
  const int64_t n_dst = xr.size(0), heads = xl.size(1), ch = xl.size(2), n_edges = col.numel();
  const auto stat_opts = xl.options().dtype(stat_dtype(xl.scalar_type()));
  at::Tensor out = at::empty({n_dst, heads, ch}, xl.options());
  at::Tensor row_max = at::empty({n_dst, heads}, stat_opts);
  at::Tensor row_denom = at::empty_like(row_max);  // all three fully written by the kernel
  if (n_dst * heads == 0) return {out, row_max, row_denom};
  const bool has_e = e_feat.has_value() && e_feat->defined();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xl.scalar_type(), "gatv2_fwd_cuda", [&] {
    using S = stat_t<scalar_t>;
    const bool wide = wide_ok(ch, kWide<scalar_t>, {&xl, &xr, &att, has_e ? &*e_feat : nullptr, &out});
    const int vec = wide ? kWide<scalar_t> : 1;
    const Geo geo = make_geo2(n_dst, heads, ch, vec, slots_of<scalar_t>(vec));
    at::Tensor score = geo.passes > 1 ? at::empty({n_edges, heads}, stat_opts) : at::Tensor();
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "gatv2_fwd_cuda", [&] {
      auto* kernel = pick_v2<scalar_t>(wide, dropout > 0.0, [](auto v, auto drop) {
        return &_gatv2_fwd_kernel<scalar_t, index_t, decltype(v)::value, decltype(drop)::value>;
      });
      kernel<<<blocks_of(geo), kThreads, 0, stream>>>(
          xl.data_ptr<scalar_t>(), xr.data_ptr<scalar_t>(), att.data_ptr<scalar_t>(), opt_ptr<scalar_t>(e_feat),
          rowptr.data_ptr<index_t>(), col.data_ptr<index_t>(), out.data_ptr<scalar_t>(), row_max.data_ptr<S>(),
          row_denom.data_ptr<S>(), score.defined() ? score.data_ptr<S>() : nullptr, static_cast<S>(negative_slope),
          make_drop<S>(dropout, seed), geo);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {out, row_max, row_denom};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gatv2_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& xl, const at::Tensor& xr, const at::Tensor& att,
    const std::optional<at::Tensor>& e_feat, const at::Tensor& rowptr, const at::Tensor& col,
    const at::Tensor& colptr, const at::Tensor& row_csc, const at::Tensor& csc_to_csr, const at::Tensor& out,
    const at::Tensor& row_max_in, const at::Tensor& row_denom_in, double negative_slope, double dropout, int64_t seed,
    bool deterministic) {
  check_gatv2_bwd_args(grad_out, xl, xr, att, e_feat, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max_in,
                       row_denom_in);
  check_dropout(dropout);
  TORCH_CHECK_VALUE(xl.is_cuda(), "xl must be a CUDA tensor, got ", xl.device());
  const c10::cuda::CUDAGuard guard(xl.device());
  const at::Tensor row_max = row_max_in.contiguous(), row_denom = row_denom_in.contiguous();  // not checked
  const int64_t n_src = xl.size(0), n_dst = xr.size(0), heads = xl.size(1), ch = xl.size(2), n_edges = col.numel();
  const bool has_e = e_feat.has_value() && e_feat->defined();
  const auto stat_opts = xl.options().dtype(stat_dtype(xl.scalar_type()));
  at::Tensor grad_xr = at::empty_like(xr);  // kernel A writes all of it (when it has rows)
  at::Tensor grad_e = has_e ? at::empty_like(*e_feat) : at::empty({0}, xl.options());
  // Fast path: an S accumulator for the atomics (fp32 for fp16/bf16), cast at the end; deterministic: kernel B
  // writes all of grad_xl.
  at::Tensor gxl_acc = deterministic ? at::Tensor() : at::zeros(xl.sizes(), stat_opts);
  at::Tensor grad_xl = deterministic ? at::empty_like(xl) : at::Tensor();
  at::Tensor grad_att;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xl.scalar_type(), "gatv2_bwd_cuda", [&] {
    using S = stat_t<scalar_t>;
    const bool wide = wide_ok(ch, kWide<scalar_t>, {&xl, &xr, &att, has_e ? &*e_feat : nullptr, &out, &grad_out,
                                                    &grad_xr, has_e ? &grad_e : nullptr,
                                                    deterministic ? &grad_xl : &gxl_acc});
    const int vec = wide ? kWide<scalar_t> : 1;
    const Geo geo_a = make_geo2(n_dst, heads, ch, vec, slots_of<scalar_t>(vec));
    const Geo geo_b = make_geo2(n_src, heads, ch, vec, slots_of<scalar_t>(vec));
    // g_s and alpha * m per (CSR edge, head): kernel B's input, and the later passes' of kernel A. Every edge lies in
    // one CSR row, so kernel A writes all of both.
    const bool bufs = deterministic || geo_a.passes > 1;
    at::Tensor gs_buf = bufs ? at::empty({n_edges, heads}, stat_opts) : at::Tensor();
    at::Tensor am_buf = bufs ? at::empty({n_edges, heads}, stat_opts) : at::Tensor();
    // grad_att partial rows: one per block of kernel A when a block holds every head, else one per destination node.
    const bool per_block = kThreads / geo_a.lanes >= heads;
    const int64_t part_rows = geo_a.groups == 0 ? 0 : per_block ? int64_t(blocks_of(geo_a)) : n_dst;
    at::Tensor part = at::empty({part_rows, heads * ch}, stat_opts);
    const S slope = static_cast<S>(negative_slope);
    const Drop<S> drop = make_drop<S>(dropout, seed);
    const scalar_t* ef = opt_ptr<scalar_t>(e_feat);
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "gatv2_bwd_cuda", [&] {
      if (geo_a.groups > 0) {
        auto* kernel_a = pick_v2<scalar_t>(wide, dropout > 0.0, [](auto v, auto drop_on) {
          return &_gatv2_bwd_rows_kernel<scalar_t, index_t, decltype(v)::value, decltype(drop_on)::value>;
        });
        kernel_a<<<blocks_of(geo_a), kThreads, 0, stream>>>(
            grad_out.data_ptr<scalar_t>(), xl.data_ptr<scalar_t>(), xr.data_ptr<scalar_t>(),
            att.data_ptr<scalar_t>(), ef, out.data_ptr<scalar_t>(), rowptr.data_ptr<index_t>(),
            col.data_ptr<index_t>(), row_max.data_ptr<S>(), row_denom.data_ptr<S>(), slope, drop, geo_a,
            grad_xr.data_ptr<scalar_t>(), has_e ? grad_e.data_ptr<scalar_t>() : nullptr,
            bufs ? gs_buf.data_ptr<S>() : nullptr, bufs ? am_buf.data_ptr<S>() : nullptr,
            deterministic ? nullptr : gxl_acc.data_ptr<S>(), part.data_ptr<S>(), per_block);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (deterministic && geo_b.groups > 0) {
        auto* kernel_b = pick_v2<scalar_t>(wide, false, [](auto v, auto) {
          return &_gatv2_bwd_cols_kernel<scalar_t, index_t, decltype(v)::value>;
        });
        kernel_b<<<blocks_of(geo_b), kThreads, 0, stream>>>(
            grad_out.data_ptr<scalar_t>(), xl.data_ptr<scalar_t>(), xr.data_ptr<scalar_t>(),
            att.data_ptr<scalar_t>(), ef, colptr.data_ptr<index_t>(), row_csc.data_ptr<index_t>(),
            csc_to_csr.data_ptr<index_t>(), bufs ? gs_buf.data_ptr<S>() : nullptr,
            bufs ? am_buf.data_ptr<S>() : nullptr, slope, geo_b, grad_xl.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
    grad_att = part_rows == 0 || heads * ch == 0 ? at::zeros({heads, ch}, stat_opts)
                                                 : colsum(part, stream).view({heads, ch});
  });
  if (!deterministic) grad_xl = gxl_acc.to(xl.scalar_type());
  return {grad_xl, grad_xr, grad_att.to(att.scalar_type()), grad_e};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyunlearn, CUDA, m) {
  m.impl("gatv2_fwd", &gatv2_fwd_cuda);
  m.impl("gatv2_bwd", &gatv2_bwd_cuda);
}

}  // namespace pyunlearn::gat
