// CUDA kernels of the fused graph-attention ops (semantics: pyunlearn/reference/gat.py; CPU twin: gat_cpu.cpp).
//
// Layout. A "group" of L lanes (L a power of two <= 32) serves one (node, head) pair; lane t owns the channel vectors
// n * L + t (n = 0, 1, ...) of V channels each (V = 4: 4-wide loads when C % 4 == 0 and the pointers allow, else 1),
// L the smallest that leaves a lane at most kNpl vectors (32 at most: then more per lane). Consecutive groups
// are consecutive heads of one node: they walk the same edge list in step and gather one contiguous h row per edge.
// Each lane recomputes an edge's score from broadcast loads (same address across the group, one transaction)
// instead of receiving it by shuffle, so the forward and kernel B need no cross-lane traffic at all.
//
// Traffic. The forward reads each edge's source row of h once (once per pass when C > 32 * V * kNpl: a pass keeps
// kNpl vectors of accumulators per lane in registers) with an online softmax, and writes out plus two [N_dst, H]
// statistics; no [E, H, C] (or [E, H]) tensor exists. The backward recomputes alpha from those statistics.
// Determinism. deterministic=True: kernel A sums per destination row in CSR order, kernel B per source in CSC order;
// every sum has a fixed order, no atomics, results are bit-identical run to run. deterministic=False: kernel A
// scatters into grad_h and grad_s_src with atomicAdd (non-deterministic: atomics) and kernel B is skipped.
// Dropout. Every kernel takes a compile-time kDrop: false (p == 0) never hashes; true recomputes the keep decision
// of each (CSR edge, head) with dropout_u (gat.h) where it needs it, so no mask is stored between the passes.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

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

constexpr int kNpl = 2;     // channel vectors per lane held in registers (accumulators, cached grad_out)
constexpr int kUnroll = 4;  // edges in flight per lane: independent gathers hide the memory latency

// ---------------------------------------------------------------------------------------------------------- forward
// h [N_src,H,C], s_src [N_src,H], s_dst [N_dst,H], e_score [E,H] or nullptr, rowptr [N_dst+1], col [E]
// -> out [N_dst,H,C], row_max / row_denom [N_dst,H] (S). One group per (destination i, head k).
template <typename T, typename I, int V, bool kDrop>
__global__ void __launch_bounds__(kThreads)
    _gat_fwd_kernel(const T* h, const T* s_src, const T* s_dst, const T* e_score, const I* rowptr, const I* col,
                    T* out, stat_t<T>* row_max, stat_t<T>* row_denom, stat_t<T> slope, Drop<stat_t<T>> drop,
                    Geo geo) {
  using S = stat_t<T>;
  constexpr S kInf = std::numeric_limits<S>::infinity();
  Lane ln;
  if (!lane_of(geo, ln)) return;
  const int64_t H = geo.heads, C = geo.ch, L = geo.lanes, k = ln.head, ik = ln.node * H + k;
  const int64_t begin = rowptr[ln.node], end = rowptr[ln.node + 1];
  const S sd = static_cast<S>(s_dst[ik]);
  for (int64_t p = 0; p < geo.passes; ++p) {
    // Online softmax: running max m, denominator den and accumulator acc, rescaled when the max grows.
    S m = -kInf, den = S(0), acc[kNpl][V] = {};
    for (int64_t e0 = begin; e0 < end; e0 += kUnroll) {
      int64_t j[kUnroll];
      S sc[kUnroll], dm[kUnroll], hv[kUnroll][kNpl][V];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) j[u] = e0 + u < end ? static_cast<int64_t>(col[e0 + u]) : -1;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (j[u] < 0) continue;
        S pre = static_cast<S>(s_src[j[u] * H + k]) + sd;
        if (e_score != nullptr) pre += static_cast<S>(e_score[(e0 + u) * H + k]);
        sc[u] = leaky(pre, slope);
        dm[u] = drop_m<kDrop>(drop, e0 + u, H, k);
#pragma unroll
        for (int n = 0; n < kNpl; ++n) {
          const int64_t c = ((p * kNpl + n) * L + ln.t) * V;
          load_vec(h + (j[u] * H + k) * C + c, hv[u][n], c < C);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (j[u] < 0) continue;
        const S e = sc[u];
        // One exp per edge. A new max rescales the running sums (exp(-inf) = 0 on the first edge); e == m also
        // covers -inf == -inf: such an edge weighs 0, as exp(-inf - max) does in the reference. The denominator
        // takes w (undropped softmax), the accumulator w * m (dropout).
        const bool grows = e > m;
        const S x = ex(grows ? m - e : e - m);
        const S scale = grows ? x : S(1), w = grows ? S(1) : e == m ? S(e == -kInf ? 0 : 1) : x;
        m = grows ? e : m;
        den = den * scale + w;
        const S wm = kDrop ? w * dm[u] : w;
#pragma unroll
        for (int n = 0; n < kNpl; ++n)
#pragma unroll
          for (int v = 0; v < V; ++v) acc[n][v] = acc[n][v] * scale + wm * hv[u][n][v];
      }
    }
    // No edges: out 0, max 0, denom 0. Infinite max (all edges -inf, or some +inf): the reference saves max 0 and
    // denom sum(exp(e)) (0 or inf), and its alphas are 0/0 or inf/inf: out NaN.
    const bool has_edges = begin < end, degenerate = has_edges && (m == kInf || m == -kInf);
    if (p == 0 && ln.t == 0) {
      row_max[ik] = has_edges && !degenerate ? m : S(0);
      row_denom[ik] = !has_edges ? S(0) : degenerate ? (m > S(0) ? kInf : S(0)) : den;
    }
#pragma unroll
    for (int n = 0; n < kNpl; ++n) {
      const int64_t c = ((p * kNpl + n) * L + ln.t) * V;
#pragma unroll
      for (int v = 0; v < V; ++v)
        acc[n][v] = !has_edges ? S(0) : degenerate ? std::numeric_limits<S>::quiet_NaN() : acc[n][v] / den;
      if (c < C) store_vec(out + ik * C + c, acc[n]);
    }
  }
}

// ------------------------------------------------------------------------------------------------------ backward A
// Per destination row i, head k (CSR order): D = <grad_out[i,k], out[i,k]>; per edge j -> i: alpha recomputed,
// d_alpha = <grad_out[i,k], h[j,k]>, g_pre = alpha (m d_alpha - D) leaky'(pre) (m: dropout scale, 1 without).
// Writes grad_s_dst [N_dst,H] (T), g_pre into gpre [E,H] (S, CSR order; nullptr: not needed) and, when gh_acc
// [N_src,H,C] / gs_acc [N_src,H] (S) are given, scatters alpha m grad_out[i] and g_pre into them with atomicAdd
// (non-deterministic: atomics; fp64: sm_60+).
template <typename T, typename I, int V, bool kDrop>
__global__ void __launch_bounds__(kThreads)
    _gat_bwd_rows_kernel(const T* grad_out, const T* h, const T* out, const T* s_src, const T* s_dst,
                         const T* e_score, const I* rowptr, const I* col, const stat_t<T>* row_max,
                         const stat_t<T>* row_denom, stat_t<T> slope, Drop<stat_t<T>> drop, Geo geo,
                         T* grad_s_dst, stat_t<T>* gpre, stat_t<T>* gh_acc, stat_t<T>* gs_acc) {
  using S = stat_t<T>;
  Lane ln;
  if (!lane_of(geo, ln)) return;
  const int64_t H = geo.heads, C = geo.ch, L = geo.lanes, k = ln.head, ik = ln.node * H + k;
  const T* go = grad_out + ik * C;
  // grad_out[i,k] stays in registers for the first kNpl vectors of the lane (all of them unless C > 32 * V * kNpl;
  // the rest is reloaded per edge, from L1/L2). dot_go(x): this lane's part of <grad_out[i,k], x[0:C]>.
  S gr[kNpl][V];
#pragma unroll
  for (int n = 0; n < kNpl; ++n) load_vec(go + (n * L + ln.t) * V, gr[n], (n * L + ln.t) * V < C);
  // each_go(fn): fn(c, g) for each of the lane's channel vectors c of grad_out[i,k] (g: its values in S).
  auto each_go = [&](auto&& fn) {
#pragma unroll
    for (int n = 0; n < kNpl; ++n) {
      const int64_t c = (n * L + ln.t) * V;
      if (c < C) fn(c, gr[n]);
    }
    for (int64_t n = kNpl; n < geo.nv; ++n) {
      const int64_t c = (n * L + ln.t) * V;
      if (c >= C) break;
      S g[V];
      load_vec(go + c, g);
      fn(c, g);
    }
  };
  auto dot_go = [&](const T* x) {
    S d = S(0);
    each_go([&](int64_t c, const S(&g)[V]) {
      S xv[V];
      load_vec(x + c, xv);
#pragma unroll
      for (int v = 0; v < V; ++v) d += g[v] * xv[v];
    });
    return d;
  };
  const S d_row = group_sum(dot_go(out + ik * C), ln, L);
  const S m = row_max[ik], den = row_denom[ik], sd = static_cast<S>(s_dst[ik]);
  const int64_t begin = rowptr[ln.node], end = rowptr[ln.node + 1];
  S g_dst = S(0);  // sums in CSR edge order: fixed
  for (int64_t e0 = begin; e0 < end; e0 += kUnroll) {
    int64_t j[kUnroll];
    S pre[kUnroll], dp[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      j[u] = e0 + u < end ? static_cast<int64_t>(col[e0 + u]) : -1;
      dp[u] = S(0);
      pre[u] = S(0);
      if (j[u] < 0) continue;
      pre[u] = static_cast<S>(s_src[j[u] * H + k]) + sd;
      if (e_score != nullptr) pre[u] += static_cast<S>(e_score[(e0 + u) * H + k]);
      dp[u] = dot_go(h + (j[u] * H + k) * C);
    }
    // Every lane of the group takes the same path (same row, same edges): the shuffles see the whole mask.
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) dp[u] = group_sum(dp[u], ln, L);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (j[u] < 0) continue;
      const S alpha = ex(leaky(pre[u], slope) - m) / den;
      const S dm = drop_m<kDrop>(drop, e0 + u, H, k), d_alpha = kDrop ? dm * dp[u] : dp[u];
      const S g_pre = alpha * (d_alpha - d_row) * (pre[u] > S(0) ? S(1) : slope);
      g_dst += g_pre;
      if (ln.t == 0 && gpre != nullptr) gpre[(e0 + u) * H + k] = g_pre;
      if (gh_acc == nullptr) continue;
      if (ln.t == 0) atomicAdd(gs_acc + j[u] * H + k, g_pre);
      S* gh = gh_acc + (j[u] * H + k) * C;
      const S am = kDrop ? alpha * dm : alpha;
      each_go([&](int64_t c, const S(&g)[V]) {
#pragma unroll
        for (int v = 0; v < V; ++v) atomicAdd(gh + c + v, am * g[v]);
      });
    }
  }
  if (ln.t == 0) grad_s_dst[ik] = static_cast<T>(g_dst);
}

// ------------------------------------------------------------------------------------------------------ backward B
// Per source j, head k, over its CSC edges q (i = row_csc[q], CSR position c = csc_to_csr[q]), in CSC order:
// grad_h[j,k,:] = sum alpha m grad_out[i,k,:] (m of CSR edge c), grad_s_src[j,k] = sum gpre[c,k]. Deterministic:
// plain stores only.
template <typename T, typename I, int V, bool kDrop>
__global__ void __launch_bounds__(kThreads)
    _gat_bwd_cols_kernel(const T* grad_out, const T* s_src, const T* s_dst, const T* e_score, const I* colptr,
                         const I* row_csc, const I* csc_to_csr, const stat_t<T>* row_max, const stat_t<T>* row_denom,
                         const stat_t<T>* gpre, stat_t<T> slope, Drop<stat_t<T>> drop, Geo geo, T* grad_h,
                         T* grad_s_src) {
  using S = stat_t<T>;
  Lane ln;
  if (!lane_of(geo, ln)) return;
  const int64_t H = geo.heads, C = geo.ch, L = geo.lanes, k = ln.head, jk = ln.node * H + k;
  const int64_t begin = colptr[ln.node], end = colptr[ln.node + 1];
  const S ss = static_cast<S>(s_src[jk]);
  for (int64_t p = 0; p < geo.passes; ++p) {
    S acc[kNpl][V] = {}, g_src = S(0);
    for (int64_t q0 = begin; q0 < end; q0 += kUnroll) {
      int64_t i[kUnroll], ec[kUnroll];
      S alpha[kUnroll], gv[kUnroll][kNpl][V];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        i[u] = q0 + u < end ? static_cast<int64_t>(row_csc[q0 + u]) : -1;
        if (i[u] < 0) continue;
        ec[u] = static_cast<int64_t>(csc_to_csr[q0 + u]);
        const int64_t ik = i[u] * H + k;
        S pre = ss + static_cast<S>(s_dst[ik]);  // = s_src + s_dst as in kernel A (exact: a + b == b + a)
        if (e_score != nullptr) pre += static_cast<S>(e_score[ec[u] * H + k]);
        alpha[u] = ex(leaky(pre, slope) - row_max[ik]) / row_denom[ik];
        if constexpr (kDrop) alpha[u] *= drop_m<kDrop>(drop, ec[u], H, k);
#pragma unroll
        for (int n = 0; n < kNpl; ++n) {
          const int64_t c = ((p * kNpl + n) * L + ln.t) * V;
          load_vec(grad_out + ik * C + c, gv[u][n], c < C);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (i[u] < 0) continue;
        if (p == 0) g_src += gpre[ec[u] * H + k];  // fixed order: CSC edge order
#pragma unroll
        for (int n = 0; n < kNpl; ++n)
#pragma unroll
          for (int v = 0; v < V; ++v) acc[n][v] += alpha[u] * gv[u][n][v];
      }
    }
    if (p == 0 && ln.t == 0) grad_s_src[jk] = static_cast<T>(g_src);
#pragma unroll
    for (int n = 0; n < kNpl; ++n) {
      const int64_t c = ((p * kNpl + n) * L + ln.t) * V;
      if (c < C) store_vec(grad_h + jk * C + c, acc[n]);
    }
  }
}

// ------------------------------------------------------------------------------------------------------- host side

Geo make_geo(int64_t nodes, int64_t heads, int64_t ch, int vec) {
  Geo g{nodes * heads, heads, ch, 1, 0, 1};
  const int64_t nvec = (ch + vec - 1) / vec, want = (nvec + kNpl - 1) / kNpl;  // L: smallest giving <= kNpl each
  while (g.lanes < want && g.lanes < 32) g.lanes *= 2;
  g.nv = (nvec + g.lanes - 1) / g.lanes;
  g.passes = g.nv > kNpl ? (g.nv + kNpl - 1) / kNpl : 1;
  return g;
}

// 4-wide loads when C is a multiple of 4 and every [.., C] tensor is aligned to 4 elements; else scalar loads.
bool vec4_ok(int64_t ch, std::initializer_list<const at::Tensor*> ts) {
  if (ch % 4 != 0) return false;
  for (const at::Tensor* t : ts)
    if (reinterpret_cast<uintptr_t>(t->data_ptr()) % (4 * t->element_size()) != 0) return false;
  return true;
}

// kernel<V, kDrop> for the runtime (v4, drop); the four instantiations are chosen by the caller's `pick`.
template <typename Fn>
auto pick_kernel(bool v4, bool drop, Fn&& pick) {
  return v4 ? (drop ? pick(std::integral_constant<int, 4>{}, std::true_type{})
                    : pick(std::integral_constant<int, 4>{}, std::false_type{}))
            : (drop ? pick(std::integral_constant<int, 1>{}, std::true_type{})
                    : pick(std::integral_constant<int, 1>{}, std::false_type{}));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gat_fwd_cuda(
    const at::Tensor& h, const at::Tensor& s_src, const at::Tensor& s_dst, const std::optional<at::Tensor>& e_score,
    const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row_csc,
    const at::Tensor& csc_to_csr, double negative_slope, double dropout, int64_t seed, bool deterministic) {
  (void)deterministic;  // the forward has no atomics either way
  check_gat_fwd_args(h, s_src, s_dst, e_score, rowptr, col, colptr, row_csc, csc_to_csr);
  check_dropout(dropout);
  TORCH_CHECK_VALUE(h.is_cuda(), "h must be a CUDA tensor, got ", h.device());
  const c10::cuda::CUDAGuard guard(h.device());
  const int64_t n_dst = s_dst.size(0), heads = h.size(1), ch = h.size(2);
  at::Tensor out = at::empty({n_dst, heads, ch}, h.options());
  at::Tensor row_max = at::empty({n_dst, heads}, h.options().dtype(stat_dtype(h.scalar_type())));
  at::Tensor row_denom = at::empty_like(row_max);  // all three fully written by the kernel
  if (n_dst * heads == 0) return {out, row_max, row_denom};
  const bool v4 = vec4_ok(ch, {&h, &out});
  const Geo geo = make_geo(n_dst, heads, ch, v4 ? 4 : 1);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "gat_fwd_cuda", [&] {
    using S = stat_t<scalar_t>;
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "gat_fwd_cuda", [&] {
      auto* kernel = pick_kernel(v4, dropout > 0.0, [](auto vec, auto drop) {
        return &_gat_fwd_kernel<scalar_t, index_t, decltype(vec)::value, decltype(drop)::value>;
      });
      kernel<<<blocks_of(geo), kThreads, 0, stream>>>(
          h.data_ptr<scalar_t>(), s_src.data_ptr<scalar_t>(), s_dst.data_ptr<scalar_t>(), opt_ptr<scalar_t>(e_score),
          rowptr.data_ptr<index_t>(), col.data_ptr<index_t>(), out.data_ptr<scalar_t>(), row_max.data_ptr<S>(),
          row_denom.data_ptr<S>(), static_cast<S>(negative_slope), make_drop<S>(dropout, seed), geo);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {out, row_max, row_denom};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gat_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& h, const at::Tensor& s_src, const at::Tensor& s_dst,
    const std::optional<at::Tensor>& e_score, const at::Tensor& rowptr, const at::Tensor& col,
    const at::Tensor& colptr, const at::Tensor& row_csc, const at::Tensor& csc_to_csr, const at::Tensor& out,
    const at::Tensor& row_max_in, const at::Tensor& row_denom_in, double negative_slope, double dropout, int64_t seed,
    bool deterministic) {
  check_gat_bwd_args(grad_out, h, s_src, s_dst, e_score, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max_in,
                     row_denom_in);
  check_dropout(dropout);
  TORCH_CHECK_VALUE(h.is_cuda(), "h must be a CUDA tensor, got ", h.device());
  const c10::cuda::CUDAGuard guard(h.device());
  const at::Tensor row_max = row_max_in.contiguous(), row_denom = row_denom_in.contiguous();  // not checked
  const int64_t n_src = h.size(0), n_dst = s_dst.size(0), heads = h.size(1), ch = h.size(2), n_edges = col.numel();
  const bool has_e = e_score.has_value() && e_score->defined();
  const auto stat_opts = h.options().dtype(stat_dtype(h.scalar_type()));
  at::Tensor grad_s_dst = at::empty({n_dst, heads}, h.options());
  // g_pre in S, CSR order: kernel B's input (deterministic) and grad_e_score. Every edge lies in one CSR row, so
  // kernel A writes all of it.
  at::Tensor gpre = deterministic || has_e ? at::empty({n_edges, heads}, stat_opts) : at::Tensor();
  // Fast path: S accumulators for the atomics (fp32 for fp16/bf16 h), cast at the end.
  at::Tensor gh_acc = deterministic ? at::Tensor() : at::zeros(h.sizes(), stat_opts);
  at::Tensor gs_acc = deterministic ? at::Tensor() : at::zeros({n_src, heads}, stat_opts);
  at::Tensor grad_h = deterministic ? at::empty_like(h) : at::Tensor();  // kernel B writes all of both
  at::Tensor grad_s_src = deterministic ? at::empty({n_src, heads}, h.options()) : at::Tensor();
  const bool v4 = vec4_ok(ch, {&h, &out, &grad_out}) && (!deterministic || vec4_ok(ch, {&grad_h}));
  const int vec = v4 ? 4 : 1;
  const Geo geo_a = make_geo(n_dst, heads, ch, vec), geo_b = make_geo(n_src, heads, ch, vec);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "gat_bwd_cuda", [&] {
    using S = stat_t<scalar_t>;
    const S slope = static_cast<S>(negative_slope);
    const Drop<S> drop = make_drop<S>(dropout, seed);
    const scalar_t* es = opt_ptr<scalar_t>(e_score);
    S* gpre_p = gpre.defined() ? gpre.data_ptr<S>() : nullptr;
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "gat_bwd_cuda", [&] {
      if (geo_a.groups > 0) {
        auto* kernel_a = pick_kernel(v4, dropout > 0.0, [](auto vec, auto drop_on) {
          return &_gat_bwd_rows_kernel<scalar_t, index_t, decltype(vec)::value, decltype(drop_on)::value>;
        });
        kernel_a<<<blocks_of(geo_a), kThreads, 0, stream>>>(
            grad_out.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
            s_src.data_ptr<scalar_t>(), s_dst.data_ptr<scalar_t>(), es, rowptr.data_ptr<index_t>(),
            col.data_ptr<index_t>(), row_max.data_ptr<S>(), row_denom.data_ptr<S>(), slope, drop, geo_a,
            grad_s_dst.data_ptr<scalar_t>(), gpre_p, deterministic ? nullptr : gh_acc.data_ptr<S>(),
            deterministic ? nullptr : gs_acc.data_ptr<S>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (deterministic && geo_b.groups > 0) {
        auto* kernel_b = pick_kernel(v4, dropout > 0.0, [](auto vec, auto drop_on) {
          return &_gat_bwd_cols_kernel<scalar_t, index_t, decltype(vec)::value, decltype(drop_on)::value>;
        });
        kernel_b<<<blocks_of(geo_b), kThreads, 0, stream>>>(
            grad_out.data_ptr<scalar_t>(), s_src.data_ptr<scalar_t>(), s_dst.data_ptr<scalar_t>(), es,
            colptr.data_ptr<index_t>(), row_csc.data_ptr<index_t>(), csc_to_csr.data_ptr<index_t>(),
            row_max.data_ptr<S>(), row_denom.data_ptr<S>(), gpre_p, slope, drop, geo_b, grad_h.data_ptr<scalar_t>(),
            grad_s_src.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  });
  if (!deterministic) {
    grad_h = gh_acc.to(h.scalar_type());
    grad_s_src = gs_acc.to(h.scalar_type());
  }
  at::Tensor grad_e = has_e ? gpre.to(h.scalar_type()) : at::empty({0}, h.options());
  return {grad_h, grad_s_src, grad_s_dst, grad_e};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyunlearn, CUDA, m) {
  m.impl("gat_fwd", &gat_fwd_cuda);
  m.impl("gat_bwd", &gat_bwd_cuda);
}

}  // namespace pyunlearn::gat
