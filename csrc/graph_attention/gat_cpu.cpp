// CPU kernels of the fused graph attention (GAT) ops. Semantics: gat.h and pyunlearn/reference/gat.py.
//
// Forward, per destination row i: the row's scores [deg_i, H] go into a small per-task buffer, then the
// row's h rows are read ONCE and accumulated into out[i] in the statistic type: nothing of size [E, H, C] exists,
// and h (the dominant traffic) is gathered exactly E times.
// Backward: two gather-only passes, so the result is deterministic without atomics (fixed summation order):
//   A. over destination rows (CSR): grad_s_dst, and per edge alpha and g_pre (the gradient of the pre-LeakyReLU
//      score) into two [E, H] buffers in CSR order;
//   B. over sources (CSC): grad_h and grad_s_src, each source summing its edges in CSR order (the CSC is a stable
//      sort of the CSR by source), the same order as the reference's index_add_.
// Rows/sources are split into chunks of about equal work (edges + rows), not equal row counts, so power-law
// degrees do not leave one thread with the hubs.
// Attention dropout (p > 0) recomputes each edge's keep decision from (seed, e * H + k) in both passes; p == 0
// takes the original loops unchanged (no hash calls, bit-identical results).
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
#include <vector>

#include "graph_attention/gat.h"
#include "graph_attention/gat_cpu_common.h"

namespace pyunlearn::gat {

namespace {

using namespace cpu;  // gat_cpu_common.h: chunking, checks, dot/axpy, leaky, dropout_m

// Pre-LeakyReLU score of one edge and head, in the reference's order: (s_src + s_dst) + e_score.
template <typename S, typename T>
inline S pre_score(const T* s_src_j, const T* s_dst_i, const T* e_edge, int64_t k) {
  S pre = static_cast<S>(s_src_j[k]) + static_cast<S>(s_dst_i[k]);
  if (e_edge != nullptr) pre += static_cast<S>(e_edge[k]);
  return pre;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gat_fwd_cpu(
    const at::Tensor& h, const at::Tensor& s_src, const at::Tensor& s_dst, const std::optional<at::Tensor>& e_score,
    const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row_csc,
    const at::Tensor& csc_to_csr, double negative_slope, double dropout, int64_t seed, bool deterministic) {
  check_gat_fwd_args(h, s_src, s_dst, e_score, rowptr, col, colptr, row_csc, csc_to_csr);
  check_dropout(dropout);
  const bool drop = dropout > 0.0;
  const uint64_t useed = static_cast<uint64_t>(seed);
  (void)deterministic;  // the forward has no cross-row reduction: always deterministic
  const bool has_e = e_score.has_value() && e_score->defined();
  const int64_t n_src = h.size(0), heads = h.size(1), ch = h.size(2), n_dst = s_dst.size(0);
  const int64_t n_edges = col.numel(), hc = heads * ch;
  const auto st = stat_dtype(h.scalar_type());
  at::Tensor out = at::empty({n_dst, heads, ch}, h.options());                // [N_dst, H, C] h's dtype
  at::Tensor row_max = at::empty({n_dst, heads}, h.options().dtype(st));    // [N_dst, H] stat dtype
  at::Tensor row_denom = at::empty({n_dst, heads}, h.options().dtype(st));  // [N_dst, H] stat dtype

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "gat_fwd_cpu", [&] {
    using S = at::opmath_type<scalar_t>;  // fp32 for fp32/fp16/bf16, fp64 for fp64 (== stat_dtype)
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "gat_fwd_cpu", [&] {
      const scalar_t* hp = h.const_data_ptr<scalar_t>();
      const scalar_t* ss = s_src.const_data_ptr<scalar_t>();
      const scalar_t* sd = s_dst.const_data_ptr<scalar_t>();
      const scalar_t* es = has_e ? e_score->const_data_ptr<scalar_t>() : nullptr;
      const index_t* rp = rowptr.const_data_ptr<index_t>();
      const index_t* cl = col.const_data_ptr<index_t>();
      scalar_t* op = out.mutable_data_ptr<scalar_t>();
      S* mx = row_max.mutable_data_ptr<S>();
      S* dn = row_denom.mutable_data_ptr<S>();
      const S slope = static_cast<S>(negative_slope);
      // Keep threshold compared in fp32 (dropout_u's type, as the reference); scale 1 / (1 - p) in S.
      const float p_drop = static_cast<float>(dropout);
      const S keep_scale = S(1) / static_cast<S>(1.0 - dropout);
      check_ptr("rowptr", rp, n_dst, n_edges);

      balanced_for(rp, n_dst, [&](int64_t row_b, int64_t row_e) {
        std::vector<S> w;         // [deg_i, H] scores, then attention weights of the current row
        std::vector<S> acc(hc);   // [H, C] out[i] accumulated in S
        std::vector<S> m(heads);  // [H] row max
        for (int64_t i = row_b; i < row_e; ++i) {
          const int64_t eb = rp[i], deg = static_cast<int64_t>(rp[i + 1]) - eb;
          const scalar_t* sd_i = sd + i * heads;
          w.resize(deg * heads);
          std::fill(m.begin(), m.end(), -std::numeric_limits<S>::infinity());
          // Scores and row max: touches only s_src/e_score, not h.
          for (int64_t p = 0; p < deg; ++p) {
            const int64_t j = cl[eb + p];
            if (eb + p + kAheadScores < n_edges) __builtin_prefetch(ss + cl[eb + p + kAheadScores] * heads);
            TORCH_CHECK_INDEX(j >= 0 && j < n_src, "col must lie in [0, N_src = ", n_src, "), got ", j);
            const scalar_t* e_p = has_e ? es + (eb + p) * heads : nullptr;
            for (int64_t k = 0; k < heads; ++k) {
              const S e = leaky(pre_score<S>(ss + j * heads, sd_i, e_p, k), slope);
              w[p * heads + k] = e;
              m[k] = std::max(m[k], e);
            }
          }
          S* mx_i = mx + i * heads;
          S* dn_i = dn + i * heads;
          for (int64_t k = 0; k < heads; ++k) {
            mx_i[k] = deg > 0 ? m[k] : S(0);  // a row without edges: max 0, denom 0, out 0
            dn_i[k] = S(0);
          }
          for (int64_t p = 0; p < deg; ++p) {
            for (int64_t k = 0; k < heads; ++k) {
              S& x = w[p * heads + k];
              x = std::exp(x - mx_i[k]);
              dn_i[k] += x;
            }
          }
          // One pass over the row's h rows (each a contiguous [H, C] block): out[i] = sum_j alpha * h[j].
          std::fill(acc.begin(), acc.end(), S(0));
          for (int64_t p = 0; p < deg; ++p) {
            const scalar_t* h_j = hp + static_cast<int64_t>(cl[eb + p]) * hc;
            if (eb + p + kAheadRows < n_edges) {
              prefetch_bytes(hp + cl[eb + p + kAheadRows] * hc, hc * sizeof(scalar_t));
            }
            if (!drop) {
              for (int64_t k = 0; k < heads; ++k) {
                const S alpha = w[p * heads + k] / dn_i[k];
                axpy(acc.data() + k * ch, alpha, h_j + k * ch, ch);
              }
            } else {
              for (int64_t k = 0; k < heads; ++k) {
                const S m_k = dropout_m(useed, eb + p, heads, k, p_drop, keep_scale);
                if (m_k == S(0)) continue;  // dropped: adds nothing
                const S alpha = w[p * heads + k] / dn_i[k] * m_k;
                axpy(acc.data() + k * ch, alpha, h_j + k * ch, ch);
              }
            }
          }
          scalar_t* o_i = op + i * hc;
          for (int64_t c = 0; c < hc; ++c) o_i[c] = static_cast<scalar_t>(acc[c]);
        }
      });
    });
  });
  return {out, row_max, row_denom};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gat_bwd_cpu(
    const at::Tensor& grad_out, const at::Tensor& h, const at::Tensor& s_src, const at::Tensor& s_dst,
    const std::optional<at::Tensor>& e_score, const at::Tensor& rowptr, const at::Tensor& col,
    const at::Tensor& colptr, const at::Tensor& row_csc, const at::Tensor& csc_to_csr, const at::Tensor& out,
    const at::Tensor& row_max, const at::Tensor& row_denom, double negative_slope, double dropout, int64_t seed,
    bool deterministic) {
  check_gat_bwd_args(grad_out, h, s_src, s_dst, e_score, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max,
                     row_denom);
  check_dropout(dropout);
  const bool drop = dropout > 0.0;
  const uint64_t useed = static_cast<uint64_t>(seed);
  (void)deterministic;  // both passes gather (no atomics): always deterministic on CPU
  const bool has_e = e_score.has_value() && e_score->defined();
  const int64_t n_src = h.size(0), heads = h.size(1), ch = h.size(2), n_dst = s_dst.size(0);
  const int64_t n_edges = col.numel(), hc = heads * ch;
  const auto st = stat_dtype(h.scalar_type());
  const at::Tensor rmax = row_max.contiguous(), rden = row_denom.contiguous();
  at::Tensor grad_h = at::empty_like(h);       // [N_src, H, C] h's dtype
  at::Tensor grad_s_src = at::empty_like(s_src);  // [N_src, H]
  at::Tensor grad_s_dst = at::empty_like(s_dst);  // [N_dst, H]
  // Per-edge buffers, [E, H] in S, CSR order (never [E, H, C]). g_pre = d loss / d pre-LeakyReLU score: it is
  // grad_e_score itself when the stat dtype is h's (fp32/fp64). alpha is kept from pass A for pass B: re-reading
  // it costs one gathered load per edge, recomputing it four (s_dst, e_score, row_max, row_denom) plus an exp,
  // which measured ~25% slower.
  at::Tensor g_pre = at::empty({n_edges, heads}, h.options().dtype(st));
  at::Tensor alpha = at::empty({n_edges, heads}, h.options().dtype(st));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "gat_bwd_cpu", [&] {
    using S = at::opmath_type<scalar_t>;
    AT_DISPATCH_INDEX_TYPES(rowptr.scalar_type(), "gat_bwd_cpu", [&] {
      const scalar_t* go = grad_out.const_data_ptr<scalar_t>();
      const scalar_t* hp = h.const_data_ptr<scalar_t>();
      const scalar_t* ss = s_src.const_data_ptr<scalar_t>();
      const scalar_t* sd = s_dst.const_data_ptr<scalar_t>();
      const scalar_t* es = has_e ? e_score->const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* op = out.const_data_ptr<scalar_t>();
      const index_t* rp = rowptr.const_data_ptr<index_t>();
      const index_t* cl = col.const_data_ptr<index_t>();
      const index_t* cp = colptr.const_data_ptr<index_t>();
      const index_t* rc = row_csc.const_data_ptr<index_t>();
      const index_t* c2r = csc_to_csr.const_data_ptr<index_t>();
      const S* mx = rmax.const_data_ptr<S>();
      const S* dn = rden.const_data_ptr<S>();
      S* gp = g_pre.mutable_data_ptr<S>();
      S* ab = alpha.mutable_data_ptr<S>();
      scalar_t* gh = grad_h.mutable_data_ptr<scalar_t>();
      scalar_t* gss = grad_s_src.mutable_data_ptr<scalar_t>();
      scalar_t* gsd = grad_s_dst.mutable_data_ptr<scalar_t>();
      const S slope = static_cast<S>(negative_slope);
      const S slope_one[2] = {slope, S(1)};
      const float p_drop = static_cast<float>(dropout);
      const S keep_scale = S(1) / static_cast<S>(1.0 - dropout);
      check_ptr("rowptr", rp, n_dst, n_edges);
      check_ptr("colptr", cp, n_src, n_edges);

      // Pass A over destination rows: reads grad_out[i] and out[i] once per row, h[j] once per edge.
      balanced_for(rp, n_dst, [&](int64_t row_b, int64_t row_e) {
        std::vector<S> d_row(heads);  // [H] D[i, k] = <grad_out[i, k], out[i, k]>
        std::vector<S> g_dst(heads);  // [H]
        for (int64_t i = row_b; i < row_e; ++i) {
          const int64_t eb = rp[i], ee = rp[i + 1];
          const scalar_t* go_i = go + i * hc;
          const scalar_t* sd_i = sd + i * heads;
          for (int64_t k = 0; k < heads; ++k) {
            d_row[k] = dot<S>(go_i + k * ch, op + i * hc + k * ch, ch);
            g_dst[k] = S(0);
          }
          for (int64_t p = eb; p < ee; ++p) {
            const int64_t j = cl[p];
            TORCH_CHECK_INDEX(j >= 0 && j < n_src, "col must lie in [0, N_src = ", n_src, "), got ", j);
            const scalar_t* h_j = hp + j * hc;
            if (p + kAheadRows < n_edges) prefetch_bytes(hp + cl[p + kAheadRows] * hc, hc * sizeof(scalar_t));
            if (p + kAheadScores < n_edges) __builtin_prefetch(ss + cl[p + kAheadScores] * heads);
            const scalar_t* e_p = has_e ? es + p * heads : nullptr;
            if (!drop) {
              for (int64_t k = 0; k < heads; ++k) {
                const S pre = pre_score<S>(ss + j * heads, sd_i, e_p, k);
                const S alpha = std::exp(leaky(pre, slope) - mx[i * heads + k]) / dn[i * heads + k];
                const S d_alpha = dot<S>(go_i + k * ch, h_j + k * ch, ch);
                const S g = alpha * (d_alpha - d_row[k]) * leaky_grad(pre, slope_one);
                gp[p * heads + k] = g;
                ab[p * heads + k] = alpha;
                g_dst[k] += g;
              }
            } else {
              // ab holds alpha * m (all pass B needs); g_pre needs alpha and m apart. A dropped edge still has
              // the -alpha * D_i term (the undropped softmax couples it to the row) but skips the dot.
              for (int64_t k = 0; k < heads; ++k) {
                const S pre = pre_score<S>(ss + j * heads, sd_i, e_p, k);
                const S alpha = std::exp(leaky(pre, slope) - mx[i * heads + k]) / dn[i * heads + k];
                const S m_k = dropout_m(useed, p, heads, k, p_drop, keep_scale);
                const S md_alpha = m_k == S(0) ? S(0) : dot<S>(go_i + k * ch, h_j + k * ch, ch) * m_k;
                const S g = alpha * (md_alpha - d_row[k]) * leaky_grad(pre, slope_one);
                gp[p * heads + k] = g;
                ab[p * heads + k] = alpha * m_k;
                g_dst[k] += g;
              }
            }
          }
          for (int64_t k = 0; k < heads; ++k) gsd[i * heads + k] = static_cast<scalar_t>(g_dst[k]);
        }
      });

      // Pass B over sources: grad_h[j] = sum alpha * grad_out[i], grad_s_src[j] = sum g_pre, each source owned by
      // one task (no write conflicts). Reads grad_out[i] once per edge; c = the edge's CSR position.
      balanced_for(cp, n_src, [&](int64_t src_b, int64_t src_e) {
        std::vector<S> acc(hc);       // [H, C] grad_h[j] in S
        std::vector<S> g_src(heads);  // [H]
        for (int64_t j = src_b; j < src_e; ++j) {
          std::fill(acc.begin(), acc.end(), S(0));
          std::fill(g_src.begin(), g_src.end(), S(0));
          for (int64_t q = cp[j]; q < static_cast<int64_t>(cp[j + 1]); ++q) {
            const int64_t i = rc[q], c = c2r[q];
            TORCH_CHECK_INDEX(i >= 0 && i < n_dst && c >= 0 && c < n_edges, "row_csc must lie in [0, N_dst = ",
                              n_dst, ") and csc_to_csr in [0, E = ", n_edges, "), got ", i, " and ", c);
            const scalar_t* go_i = go + i * hc;
            if (q + kAheadRows < n_edges) prefetch_bytes(go + rc[q + kAheadRows] * hc, hc * sizeof(scalar_t));
            if (q + kAheadScores < n_edges) {
              __builtin_prefetch(ab + c2r[q + kAheadScores] * heads);
              __builtin_prefetch(gp + c2r[q + kAheadScores] * heads);
            }
            for (int64_t k = 0; k < heads; ++k) {
              axpy(acc.data() + k * ch, ab[c * heads + k], go_i + k * ch, ch);
              g_src[k] += gp[c * heads + k];
            }
          }
          scalar_t* gh_j = gh + j * hc;
          for (int64_t x = 0; x < hc; ++x) gh_j[x] = static_cast<scalar_t>(acc[x]);
          for (int64_t k = 0; k < heads; ++k) gss[j * heads + k] = static_cast<scalar_t>(g_src[k]);
        }
      });
    });
  });
  at::Tensor grad_e = has_e ? g_pre.to(h.scalar_type()) : at::empty({0}, h.options());  // no copy for fp32/fp64
  return {grad_h, grad_s_src, grad_s_dst, grad_e};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyunlearn, CPU, m) {
  m.impl("gat_fwd", &gat_fwd_cpu);
  m.impl("gat_bwd", &gat_bwd_cpu);
}

}  // namespace pyunlearn::gat
