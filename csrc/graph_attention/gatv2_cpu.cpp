// CPU kernels of the GATv2 ops (gatv2_fwd, gatv2_bwd). Semantics: gat.h and pyunlearn/reference/gat.py gatv2_*.
//
// Unlike GAT v1 the logit s_e = att . leaky_relu(xl[j] + xr[i] (+ e_feat[e])) is not separable per node, so each
// edge costs a [C] pass per head. Nothing of size [E, H, C] is ever stored except grad_e_feat (which is that size);
// z = xl[j] + xr[i] (+ e_feat) is recomputed wherever it is needed.
//
// Forward, per destination row i, in blocks of kBlock edges: the block's scores (reading xl[j]), then an online
// softmax update (rescale the running sums only when a block raises the row max) and the block's aggregation
// out[i] += w * m * xl[j] while those xl rows are still in L1. So xl is gathered once from memory per edge, and a
// row of degree <= kBlock (most rows) is an exact two-pass softmax.
// Backward: two gather-only passes (deterministic without atomics, fixed summation order):
//   A. over destination rows (CSR): per edge alpha * m and g_s into two [E, H] buffers, grad_xr (the row's sum of
//      g_z), grad_e_feat (= g_z), and per-chunk partials of grad_att, reduced in chunk order afterwards. The chunk
//      split of this pass does not depend on the thread count, so grad_att has the same bits with any thread count.
//   B. over sources (CSC): grad_xl[j] = sum over j's out-edges, in CSR order, of alpha * m * grad_out[i] + g_z,
//      with g_z read back from grad_e_feat (fp32/fp64 with edge features) or recomputed from xr[i] (+ e_feat).
// Attention dropout (p > 0) recomputes each edge's keep decision from (seed, e * H + k), as gat_cpu.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "graph_attention/gat.h"
#include "graph_attention/gat_cpu_common.h"

namespace pyunlearn::gat {

namespace {

using namespace cpu;

// Edges per online-softmax block of the forward: kBlock * H scores in a buffer, the block's xl rows hot in L1/L2.
constexpr int64_t kBlock = 32;
// Chunks of backward pass A, fixed (not per thread): grad_att's partials are reduced in this order.
constexpr int64_t kMaxReduceChunks = 512;

// z[c] = xl[c] + xr[c] (+ e[c]) in S, in the reference's order; xr is pre-converted to S once per row.
template <bool kHasE, typename S, typename T>
inline S z_at(const T* __restrict xl, const S* __restrict xr, const T* __restrict e, int64_t c) {
  S z = static_cast<S>(xl[c]) + xr[c];
  if constexpr (kHasE) z += static_cast<S>(e[c]);
  return z;
}

// s = sum_c att[c] * leaky(z[c]) of one edge and head. Eight partial sums (as dot) so it vectorises; the forward
// and the backward call this same function, so the backward's alpha matches the saved statistics bit for bit.
template <bool kHasE, typename S, typename T>
inline S v2_score(const T* __restrict xl, const S* __restrict xr, const T* __restrict e, const S* __restrict att,
                  int64_t n, S slope) {
  S acc[8] = {S(0), S(0), S(0), S(0), S(0), S(0), S(0), S(0)};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += att[c + l] * leaky(z_at<kHasE>(xl, xr, e, c + l), slope);
  }
  for (; c < n; ++c) acc[c & 7] += att[c] * leaky(z_at<kHasE>(xl, xr, e, c), slope);
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Pass A's channel loop of one edge and head: g_z = g_s * att * leaky'(z) into the row's grad_xr sum and (with
// edge features) grad_e_feat; g_s * leaky(z) into the chunk's grad_att partial.
template <bool kHasE, typename S, typename T>
inline void v2_edge_grads(const T* __restrict xl, const S* __restrict xr, const T* __restrict e,
                          const S* __restrict att, int64_t n, S g_s, S slope, const S (&slope_one)[2],
                          S* __restrict g_xr, S* __restrict g_att, T* __restrict g_e) {
  for (int64_t c = 0; c < n; ++c) {
    const S z = z_at<kHasE>(xl, xr, e, c);
    const S g_z = g_s * att[c] * leaky_grad(z, slope_one);
    g_xr[c] += g_z;
    g_att[c] += g_s * leaky(z, slope);
    if constexpr (kHasE) g_e[c] = static_cast<T>(g_z);
  }
}

// Pass B, one edge and head, g_z read back from grad_e_feat (dtype S): acc += a_m * grad_out[i] + g_z.
template <typename S, typename T>
inline void v2_src_grads_stored(S* __restrict acc, S a_m, const T* __restrict go, const S* __restrict g_z,
                                int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += a_m * static_cast<S>(go[c]) + g_z[c];
}

// Pass B, one edge and head, g_z recomputed: acc += a_m * grad_out[i] + g_s * att * leaky'(xl[j] + xr[i] (+ e)).
template <bool kHasE, typename S, typename T>
inline void v2_src_grads(S* __restrict acc, S a_m, S g_s, const T* __restrict go, const T* __restrict xl,
                         const T* __restrict xr, const T* __restrict e, const S* __restrict att, int64_t n,
                         const S (&slope_one)[2]) {
  for (int64_t c = 0; c < n; ++c) {
    S z = static_cast<S>(xl[c]) + static_cast<S>(xr[c]);
    if constexpr (kHasE) z += static_cast<S>(e[c]);
    acc[c] += a_m * static_cast<S>(go[c]) + g_s * att[c] * leaky_grad(z, slope_one);
  }
}

// Calls fn(std::true_type) or fn(std::false_type): the edge-feature branch leaves the inner loops.
template <typename Fn>
void with_edge_flag(bool has_e, const Fn& fn) {
  if (has_e) fn(std::true_type{}); else fn(std::false_type{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gatv2_fwd_cpu(
    const at::Tensor& xl, const at::Tensor& xr, const at::Tensor& att, const std::optional<at::Tensor>& e_feat,
    const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row_csc,
    const at::Tensor& csc_to_csr, double negative_slope, double dropout, int64_t seed, bool deterministic) {
  check_gatv2_fwd_args(xl, xr, att, e_feat, rowptr, col, colptr, row_csc, csc_to_csr);
  check_dropout(dropout);
  const bool drop = dropout > 0.0;
  const uint64_t useed = static_cast<uint64_t>(seed);
  (void)deterministic;  // the forward has no cross-row reduction: always deterministic
  const bool has_e = e_feat.has_value() && e_feat->defined();
  const int64_t n_src = xl.size(0), heads = xl.size(1), ch = xl.size(2), n_dst = xr.size(0);
  const int64_t n_edges = col.numel(), hc = heads * ch;
  const auto st = stat_dtype(xl.scalar_type());
  at::Tensor out = at::empty({n_dst, heads, ch}, xl.options());                // [N_dst, H, C] xl's dtype
  at::Tensor row_max = at::empty({n_dst, heads}, xl.options().dtype(st));    // [N_dst, H] stat dtype
  at::Tensor row_denom = at::empty({n_dst, heads}, xl.options().dtype(st));  // [N_dst, H] stat dtype

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xl.scalar_type(), "gatv2_fwd_cpu", [&] {
    using S = at::opmath_type<scalar_t>;  // fp32 for fp32/fp16/bf16, fp64 for fp64 (== stat_dtype)
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "gatv2_fwd_cpu", [&] {
      const scalar_t* xlp = xl.const_data_ptr<scalar_t>();
      const scalar_t* xrp = xr.const_data_ptr<scalar_t>();
      const scalar_t* ef = has_e ? e_feat->const_data_ptr<scalar_t>() : nullptr;
      const index_t* rp = rowptr.const_data_ptr<index_t>();
      const index_t* cl = col.const_data_ptr<index_t>();
      scalar_t* op = out.mutable_data_ptr<scalar_t>();
      S* mx = row_max.mutable_data_ptr<S>();
      S* dn = row_denom.mutable_data_ptr<S>();
      const S slope = static_cast<S>(negative_slope);
      const float p_drop = static_cast<float>(dropout);  // compared in fp32, as the reference (gat.h)
      const S keep_scale = S(1) / static_cast<S>(1.0 - dropout);
      const at::Tensor att_s = att.to(st).contiguous();  // [H, C] in S, converted once
      const S* ap = att_s.const_data_ptr<S>();
      check_ptr("rowptr", rp, n_dst, n_edges);

      with_edge_flag(has_e, [&](auto has_e_tag) {
        constexpr bool kHasE = decltype(has_e_tag)::value;
        balanced_for(rp, n_dst, [&](int64_t row_b, int64_t row_e) {
          std::vector<S> xr_i(hc);            // [H, C] xr[i] in S
          std::vector<S> acc(hc);             // [H, C] sum of w * m * xl[j] (w relative to the running max)
          std::vector<S> w(kBlock * heads);   // [kBlock, H] the block's scores
          std::vector<S> m_row(heads), den(heads), m_blk(heads);  // [H] running max, running denominator
          for (int64_t i = row_b; i < row_e; ++i) {
            const int64_t eb = rp[i], deg = static_cast<int64_t>(rp[i + 1]) - eb;
            for (int64_t x = 0; x < hc; ++x) xr_i[x] = static_cast<S>(xrp[i * hc + x]);
            std::fill(acc.begin(), acc.end(), S(0));
            std::fill(m_row.begin(), m_row.end(), -std::numeric_limits<S>::infinity());
            std::fill(den.begin(), den.end(), S(0));
            for (int64_t b0 = 0; b0 < deg; b0 += kBlock) {
              const int64_t bn = std::min(kBlock, deg - b0);
              std::fill(m_blk.begin(), m_blk.end(), -std::numeric_limits<S>::infinity());
              // Scores of the block: reads xl[j] (and e_feat) once from memory.
              for (int64_t p = 0; p < bn; ++p) {
                const int64_t e = eb + b0 + p, j = cl[e];
                TORCH_CHECK_INDEX(j >= 0 && j < n_src, "col must lie in [0, N_src = ", n_src, "), got ", j);
                if (e + kAheadRows < n_edges) {
                  prefetch_bytes(xlp + cl[e + kAheadRows] * hc, hc * sizeof(scalar_t));
                }
                const scalar_t* xl_j = xlp + j * hc;
                const scalar_t* e_p = kHasE ? ef + e * hc : nullptr;
                for (int64_t k = 0; k < heads; ++k) {
                  const S s = v2_score<kHasE>(xl_j + k * ch, xr_i.data() + k * ch, kHasE ? e_p + k * ch : nullptr,
                                              ap + k * ch, ch, slope);
                  w[p * heads + k] = s;
                  m_blk[k] = std::max(m_blk[k], s);
                }
              }
              // Online softmax: a block that raises the max rescales what the row has summed so far.
              for (int64_t k = 0; k < heads; ++k) {
                if (!(m_blk[k] > m_row[k])) continue;
                if (m_row[k] != -std::numeric_limits<S>::infinity()) {
                  const S scale = std::exp(m_row[k] - m_blk[k]);
                  den[k] *= scale;
                  for (int64_t c = 0; c < ch; ++c) acc[k * ch + c] *= scale;
                }
                m_row[k] = m_blk[k];
              }
              // Aggregation of the block: its xl rows are still in cache.
              for (int64_t p = 0; p < bn; ++p) {
                const int64_t e = eb + b0 + p;
                const scalar_t* xl_j = xlp + static_cast<int64_t>(cl[e]) * hc;
                for (int64_t k = 0; k < heads; ++k) {
                  const S x = std::exp(w[p * heads + k] - m_row[k]);
                  den[k] += x;
                  const S m_k = drop ? dropout_m(useed, e, heads, k, p_drop, keep_scale) : S(1);
                  if (m_k == S(0)) continue;  // dropped: counts in the softmax, adds nothing to out
                  axpy(acc.data() + k * ch, drop ? x * m_k : x, xl_j + k * ch, ch);
                }
              }
            }
            scalar_t* o_i = op + i * hc;
            for (int64_t k = 0; k < heads; ++k) {
              // a row without edges: max 0, denom 0, out 0 (as the reference)
              mx[i * heads + k] = deg > 0 ? m_row[k] : S(0);
              dn[i * heads + k] = den[k];
              for (int64_t c = 0; c < ch; ++c) {
                o_i[k * ch + c] = static_cast<scalar_t>(deg > 0 ? acc[k * ch + c] / den[k] : S(0));
              }
            }
          }
        });
      });
    });
  });
  return {out, row_max, row_denom};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gatv2_bwd_cpu(
    const at::Tensor& grad_out, const at::Tensor& xl, const at::Tensor& xr, const at::Tensor& att,
    const std::optional<at::Tensor>& e_feat, const at::Tensor& rowptr, const at::Tensor& col,
    const at::Tensor& colptr, const at::Tensor& row_csc, const at::Tensor& csc_to_csr, const at::Tensor& out,
    const at::Tensor& row_max, const at::Tensor& row_denom, double negative_slope, double dropout, int64_t seed,
    bool deterministic) {
  check_gatv2_bwd_args(grad_out, xl, xr, att, e_feat, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max,
                       row_denom);
  check_dropout(dropout);
  const bool drop = dropout > 0.0;
  const uint64_t useed = static_cast<uint64_t>(seed);
  (void)deterministic;  // both passes gather and grad_att is reduced in chunk order: always deterministic on CPU
  const bool has_e = e_feat.has_value() && e_feat->defined();
  const int64_t n_src = xl.size(0), heads = xl.size(1), ch = xl.size(2), n_dst = xr.size(0);
  const int64_t n_edges = col.numel(), hc = heads * ch;
  const auto st = stat_dtype(xl.scalar_type());
  const at::Tensor rmax = row_max.contiguous(), rden = row_denom.contiguous();
  at::Tensor grad_xl = at::empty_like(xl);  // [N_src, H, C]
  at::Tensor grad_xr = at::empty_like(xr);  // [N_dst, H, C]
  at::Tensor grad_e = has_e ? at::empty_like(*e_feat) : at::empty({0}, xl.options());  // [E, H, C] or [0]
  // Per-edge buffers, [E, H] in S, CSR order: alpha * m and g_s (d loss / d score), for pass B.
  at::Tensor alpha_m = at::empty({n_edges, heads}, xl.options().dtype(st));
  at::Tensor g_score = at::empty({n_edges, heads}, xl.options().dtype(st));
  at::Tensor grad_att_s;  // [H, C] in S

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xl.scalar_type(), "gatv2_bwd_cpu", [&] {
    using S = at::opmath_type<scalar_t>;
    // g_z of pass B read back from grad_e_feat when that holds it unrounded (its dtype is S).
    constexpr bool kGeIsS = std::is_same_v<S, scalar_t>;
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "gatv2_bwd_cpu", [&] {
      const scalar_t* go = grad_out.const_data_ptr<scalar_t>();
      const scalar_t* xlp = xl.const_data_ptr<scalar_t>();
      const scalar_t* xrp = xr.const_data_ptr<scalar_t>();
      const scalar_t* ef = has_e ? e_feat->const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* op = out.const_data_ptr<scalar_t>();
      const index_t* rp = rowptr.const_data_ptr<index_t>();
      const index_t* cl = col.const_data_ptr<index_t>();
      const index_t* cp = colptr.const_data_ptr<index_t>();
      const index_t* rc = row_csc.const_data_ptr<index_t>();
      const index_t* c2r = csc_to_csr.const_data_ptr<index_t>();
      const S* mx = rmax.const_data_ptr<S>();
      const S* dn = rden.const_data_ptr<S>();
      S* amp = alpha_m.mutable_data_ptr<S>();
      S* gsp = g_score.mutable_data_ptr<S>();
      scalar_t* gxl = grad_xl.mutable_data_ptr<scalar_t>();
      scalar_t* gxr = grad_xr.mutable_data_ptr<scalar_t>();
      scalar_t* ge = has_e ? grad_e.mutable_data_ptr<scalar_t>() : nullptr;
      const S* ge_s = kGeIsS ? reinterpret_cast<const S*>(ge) : nullptr;  // the same pointer when S == scalar_t
      const S slope = static_cast<S>(negative_slope);
      const S slope_one[2] = {slope, S(1)};
      const float p_drop = static_cast<float>(dropout);
      const S keep_scale = S(1) / static_cast<S>(1.0 - dropout);
      const at::Tensor att_s = att.to(st).contiguous();  // [H, C] in S
      const S* ap = att_s.const_data_ptr<S>();
      check_ptr("rowptr", rp, n_dst, n_edges);
      check_ptr("colptr", cp, n_src, n_edges);
      const int64_t chunks = balanced_chunks(rp, n_dst, kMaxReduceChunks);
      at::Tensor att_part = at::zeros({std::max<int64_t>(chunks, 1), hc}, xl.options().dtype(st));  // [chunks, H, C]
      S* partp = att_part.mutable_data_ptr<S>();

      with_edge_flag(has_e, [&](auto has_e_tag) {
        constexpr bool kHasE = decltype(has_e_tag)::value;
        // Pass A over destination rows: grad_out[i], out[i], xr[i] read once per row; xl[j] once per edge.
        balanced_for_chunks(rp, n_dst, chunks, [&](int64_t chunk, int64_t row_b, int64_t row_e) {
          S* part = partp + chunk * hc;  // [H, C] this chunk's grad_att partial
          std::vector<S> xr_i(hc), go_i(hc), g_xr(hc);  // [H, C] in S
          std::vector<S> d_row(heads);                   // [H] D[i, k] = <grad_out[i, k], out[i, k]>
          for (int64_t i = row_b; i < row_e; ++i) {
            const int64_t eb = rp[i], ee = rp[i + 1];
            for (int64_t x = 0; x < hc; ++x) {
              xr_i[x] = static_cast<S>(xrp[i * hc + x]);
              go_i[x] = static_cast<S>(go[i * hc + x]);
            }
            for (int64_t k = 0; k < heads; ++k) d_row[k] = dot<S>(go + i * hc + k * ch, op + i * hc + k * ch, ch);
            std::fill(g_xr.begin(), g_xr.end(), S(0));
            for (int64_t e = eb; e < ee; ++e) {
              const int64_t j = cl[e];
              TORCH_CHECK_INDEX(j >= 0 && j < n_src, "col must lie in [0, N_src = ", n_src, "), got ", j);
              if (e + kAheadRows < n_edges) prefetch_bytes(xlp + cl[e + kAheadRows] * hc, hc * sizeof(scalar_t));
              const scalar_t* xl_j = xlp + j * hc;
              const scalar_t* e_p = kHasE ? ef + e * hc : nullptr;
              for (int64_t k = 0; k < heads; ++k) {
                const int64_t o = k * ch;
                const S s = v2_score<kHasE>(xl_j + o, xr_i.data() + o, kHasE ? e_p + o : nullptr, ap + o, ch, slope);
                const S alpha = std::exp(s - mx[i * heads + k]) / dn[i * heads + k];
                S g_s;
                if (!drop) {
                  g_s = alpha * (dot<S>(go_i.data() + o, xl_j + o, ch) - d_row[k]);
                  amp[e * heads + k] = alpha;
                } else {
                  // A dropped edge keeps the -alpha * D_i term (the undropped softmax couples it to the row).
                  const S m_k = dropout_m(useed, e, heads, k, p_drop, keep_scale);
                  const S md_alpha = m_k == S(0) ? S(0) : dot<S>(go_i.data() + o, xl_j + o, ch) * m_k;
                  g_s = alpha * (md_alpha - d_row[k]);
                  amp[e * heads + k] = alpha * m_k;
                }
                gsp[e * heads + k] = g_s;
                v2_edge_grads<kHasE>(xl_j + o, xr_i.data() + o, kHasE ? e_p + o : nullptr, ap + o, ch, g_s, slope,
                                     slope_one, g_xr.data() + o, part + o, kHasE ? ge + e * hc + o : nullptr);
              }
            }
            for (int64_t x = 0; x < hc; ++x) gxr[i * hc + x] = static_cast<scalar_t>(g_xr[x]);
          }
        });

        // Pass B over sources: grad_xl[j], each source owned by one task; c = the edge's CSR position.
        balanced_for(cp, n_src, [&](int64_t src_b, int64_t src_e) {
          std::vector<S> acc(hc);  // [H, C] grad_xl[j] in S
          for (int64_t j = src_b; j < src_e; ++j) {
            const scalar_t* xl_j = xlp + j * hc;
            std::fill(acc.begin(), acc.end(), S(0));
            for (int64_t q = cp[j]; q < static_cast<int64_t>(cp[j + 1]); ++q) {
              const int64_t i = rc[q], c = c2r[q];
              TORCH_CHECK_INDEX(i >= 0 && i < n_dst && c >= 0 && c < n_edges, "row_csc must lie in [0, N_dst = ",
                                n_dst, ") and csc_to_csr in [0, E = ", n_edges, "), got ", i, " and ", c);
              const scalar_t* go_i = go + i * hc;
              if (q + kAheadScores < n_edges) {  // the [E, H] buffers are gathered in CSC order too
                __builtin_prefetch(amp + c2r[q + kAheadScores] * heads);
                __builtin_prefetch(gsp + c2r[q + kAheadScores] * heads);
              }
              if (q + kAheadRows < n_edges) {
                prefetch_bytes(go + rc[q + kAheadRows] * hc, hc * sizeof(scalar_t));
                if constexpr (kHasE && kGeIsS) {
                  prefetch_bytes(ge + c2r[q + kAheadRows] * hc, hc * sizeof(scalar_t));
                } else {
                  prefetch_bytes(xrp + rc[q + kAheadRows] * hc, hc * sizeof(scalar_t));
                  if (kHasE) prefetch_bytes(ef + c2r[q + kAheadRows] * hc, hc * sizeof(scalar_t));
                }
              }
              for (int64_t k = 0; k < heads; ++k) {
                const int64_t o = k * ch;
                if constexpr (kHasE && kGeIsS) {
                  v2_src_grads_stored(acc.data() + o, amp[c * heads + k], go_i + o, ge_s + c * hc + o, ch);
                } else {
                  v2_src_grads<kHasE>(acc.data() + o, amp[c * heads + k], gsp[c * heads + k], go_i + o,
                                      xl_j + o, xrp + i * hc + o, kHasE ? ef + c * hc + o : nullptr, ap + o, ch,
                                      slope_one);
                }
              }
            }
            for (int64_t x = 0; x < hc; ++x) gxl[j * hc + x] = static_cast<scalar_t>(acc[x]);
          }
        });
      });
      // grad_att: the chunks' partials summed into chunk 0 in chunk order (fixed, thread-count independent).
      for (int64_t c = 1; c < chunks; ++c) {
        for (int64_t x = 0; x < hc; ++x) partp[x] += partp[c * hc + x];
      }
      grad_att_s = att_part[0].view({heads, ch});
    });
  });
  return {grad_xl, grad_xr, grad_att_s.to(att.scalar_type(), /*non_blocking=*/false, /*copy=*/true), grad_e};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyunlearn, CPU, m) {
  m.impl("gatv2_fwd", &gatv2_fwd_cpu);
  m.impl("gatv2_bwd", &gatv2_bwd_cpu);
}

}  // namespace pyunlearn::gat
