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
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace pyunlearn::gat {

// fp32 statistics for fp32/fp16/bf16 inputs, fp64 for fp64.
at::ScalarType stat_dtype(at::ScalarType h);

// Shapes, dtypes, devices and CSR/CSC consistency (sizes only: no device read). Throws ValueError/TypeError.
void check_gat_fwd_args(const at::Tensor& h, const at::Tensor& s_src, const at::Tensor& s_dst,
                        const std::optional<at::Tensor>& e_score, const at::Tensor& rowptr, const at::Tensor& col,
                        const at::Tensor& colptr, const at::Tensor& row_csc, const at::Tensor& csc_to_csr);
void check_gat_bwd_args(const at::Tensor& grad_out, const at::Tensor& h, const at::Tensor& s_src,
                        const at::Tensor& s_dst, const std::optional<at::Tensor>& e_score, const at::Tensor& rowptr,
                        const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row_csc,
                        const at::Tensor& csc_to_csr, const at::Tensor& out, const at::Tensor& row_max,
                        const at::Tensor& row_denom);

}  // namespace pyunlearn::gat
