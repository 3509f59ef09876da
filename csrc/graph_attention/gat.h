// Fused graph attention (GAT): shared declarations of the CPU and CUDA kernels. Schemas: pyunlearn/_ops.py.
//   h          : Tensor  // [N_src, H, C]  fp32/fp64/fp16/bf16, contiguous
//   s_src      : Tensor  // [N_src, H]     h's dtype
//   s_dst      : Tensor  // [N_dst, H]     h's dtype
//   e_score    : Tensor? // [E, H]         h's dtype, CSR edge order
//   rowptr     : Tensor  // [N_dst + 1]    int32/int64 (all five index tensors share one dtype)
//   col        : Tensor  // [E]            source of each CSR edge
//   colptr     : Tensor  // [N_src + 1]
//   row_csc    : Tensor  // [E]            destination of each CSC edge
//   csc_to_csr : Tensor  // [E]            CSR position of each CSC edge
//   out        : Tensor  // [N_dst, H, C]  h's dtype
//   row_max    : Tensor  // [N_dst, H]     fp32 (fp64 for fp64 h): max over the row's edges of e (0 if no edges)
//   row_denom  : Tensor  // [N_dst, H]     sum over the row's edges of exp(e - row_max) (0 if no edges)
// Per edge j -> i, head k: e = leaky_relu(s_src[j,k] + s_dst[i,k] (+ e_score[edge,k]), slope);
// alpha = exp(e - row_max[i,k]) / row_denom[i,k]; out[i,k,:] = sum_j alpha * h[j,k,:].
// Attention dropout (dropout p > 0): CSR edge e of head k is kept iff dropout_u(seed, e * H + k) >= float(p)
// (compared in fp32 with p rounded to fp32, as the reference does: a double compare differs on rare edges); kept
// weights are scaled by 1 / (1 - p); row_max / row_denom stay those of the undropped softmax. The backward
// recomputes the same keep decisions (nothing is stored). With m = keep / (1 - p) per edge and head:
//   out[i] = sum_j alpha * m * h[j];  D_i = <grad_out_i, out_i>;  g_e = alpha * (m * <grad_out_i, h_j> - D_i);
//   grad_h[j] += alpha * m * grad_out[i].
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

#if defined(__CUDACC__)
#define PU_GAT_HD __host__ __device__ __forceinline__
#else
#define PU_GAT_HD inline
#endif

namespace pyunlearn::gat {

// Counter-based uniform in [0, 1): splitmix64 of (seed, counter), top 24 bits. Same bits on every backend (the
// Triton kernels and pyunlearn/reference/gat.py spell the same integer steps).
PU_GAT_HD float dropout_u(uint64_t seed, uint64_t counter) {
  uint64_t z = seed + (counter + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

// fp32 statistics for fp32/fp16/bf16 inputs, fp64 for fp64.
at::ScalarType stat_dtype(at::ScalarType h);

// Shapes, dtypes, devices and CSR/CSC consistency (sizes only: no device read). Throws ValueError/TypeError.
void check_gat_fwd_args(const at::Tensor& h, const at::Tensor& s_src, const at::Tensor& s_dst,
                        const std::optional<at::Tensor>& e_score, const at::Tensor& rowptr, const at::Tensor& col,
                        const at::Tensor& colptr, const at::Tensor& row_csc, const at::Tensor& csc_to_csr);
// dropout must lie in [0, 1).
void check_dropout(double dropout);
void check_gat_bwd_args(const at::Tensor& grad_out, const at::Tensor& h, const at::Tensor& s_src,
                        const at::Tensor& s_dst, const std::optional<at::Tensor>& e_score, const at::Tensor& rowptr,
                        const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row_csc,
                        const at::Tensor& csc_to_csr, const at::Tensor& out, const at::Tensor& row_max,
                        const at::Tensor& row_denom);


// GATv2 (schemas and semantics: pyunlearn/_ops.py, pyunlearn/reference/gat.py gatv2_*):
//   xl [N_src, H, C], xr [N_dst, H, C], att [H, C], e_feat [E, H, C] (CSR order) or none, all one dtype;
//   the graph arrays, row_max/row_denom and dropout exactly as above.
//   z_e = xl[j] + xr[i] (+ e_feat[e]);  s_e = sum_c att[c] * leaky_relu(z_e[c]);  alpha = softmax_i(s);
//   out[i] = sum_j alpha * m * xl[j];  g_s = alpha * (m * <grad_out_i, xl_j> - D_i);
//   g_z = g_s * att * leaky_relu'(z) (slope where z <= 0);  grad_xr[i] = sum_row g_z;  grad_e_feat[e] = g_z;
//   grad_att = sum_e g_s * leaky_relu(z);  grad_xl[j] = sum_{edges out of j} (alpha * m * grad_out[i] + g_z).
void check_gatv2_fwd_args(const at::Tensor& xl, const at::Tensor& xr, const at::Tensor& att,
                          const std::optional<at::Tensor>& e_feat, const at::Tensor& rowptr, const at::Tensor& col,
                          const at::Tensor& colptr, const at::Tensor& row_csc, const at::Tensor& csc_to_csr);
void check_gatv2_bwd_args(const at::Tensor& grad_out, const at::Tensor& xl, const at::Tensor& xr,
                          const at::Tensor& att, const std::optional<at::Tensor>& e_feat, const at::Tensor& rowptr,
                          const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row_csc,
                          const at::Tensor& csc_to_csr, const at::Tensor& out, const at::Tensor& row_max,
                          const at::Tensor& row_denom);

}  // namespace pyunlearn::gat
