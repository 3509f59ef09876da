"""Every op schema and fake of pyunlearn, one block per op (torch.library).

Kernels only attach: C++ CPU/CUDA via TORCH_LIBRARY_IMPL in csrc/, Triton and the reference twins through
pyunlearn._backends. Grep an op name here to land on its contract.
"""

from __future__ import annotations

import torch

LIB = torch.library.Library("pyunlearn", "DEF")

# ---------------------------------------------------------------------------------------------------------------
# Masked / sparse optimizer steps. Lists are parameter groups (multi-tensor); masks[i] is None (update all), a
# bool/uint8 dense mask of params[i]'s shape, or a 1-D int32/int64 list of flat indices. Where the mask is off,
# the parameter and all of its state stay bit-identical. State is fp32 for fp16/bf16 params, else param dtype.
# ---------------------------------------------------------------------------------------------------------------

# torch.optim.SGD semantics; first_step: buffers are set to the (decayed) gradient instead of updated.
LIB.define(
    "masked_sgd_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, Tensor?[] masks, "
    "float lr, float momentum, float dampening, float weight_decay, bool nesterov, bool maximize, "
    "bool first_step) -> ()"
)


@torch.library.register_fake("pyunlearn::masked_sgd_step")
def _masked_sgd_step_fake(params, grads, momentum_buffers, masks, lr, momentum, dampening, weight_decay,
                          nesterov, maximize, first_step) -> None:
    return None


# torch.optim.AdamW semantics (decoupled decay); step = the step count after this update (>= 1).
LIB.define(
    "masked_adamw_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
    "Tensor(d!)[] max_exp_avg_sqs, Tensor?[] masks, float lr, float beta1, float beta2, float weight_decay, "
    "float eps, float step, bool amsgrad, bool maximize) -> ()"
)


@torch.library.register_fake("pyunlearn::masked_adamw_step")
def _masked_adamw_step_fake(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks, lr, beta1, beta2,
                            weight_decay, eps, step, amsgrad, maximize) -> None:
    return None


# Sophia (SophiaG clipping, SOUL usage): update_hessian folds h = b2 h + (1-b2) g^2 into the step.
LIB.define(
    "masked_sophia_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] hessians, "
    "Tensor?[] masks, float lr, float beta1, float beta2, float rho, float bs, float weight_decay, float eps, "
    "bool update_hessian, bool maximize) -> ()"
)


@torch.library.register_fake("pyunlearn::masked_sophia_step")
def _masked_sophia_step_fake(params, grads, exp_avgs, hessians, masks, lr, beta1, beta2, rho, bs, weight_decay,
                             eps, update_hessian, maximize) -> None:
    return None


# ---------------------------------------------------------------------------------------------------------------
# Fused graph attention (GAT). The graph is CSR by destination: rowptr [N_dst+1], col [E] (source of each edge,
# rows in destination order), int32 or int64 alike; the backward also walks the CSC by source: colptr [N_src+1],
# row_csc [E] (destination of each edge in source order) and csc_to_csr [E] (that edge's CSR position).
# Per edge (j -> i) and head: e = leaky_relu(s_src[j] + s_dst[i] (+ e_score[edge]), negative_slope);
# alpha = softmax of e over the edges into i; out[i] = sum_j alpha * h[j]. A row without edges gives out = 0.
# Only row_max and row_denom [N_dst, H] are saved for the backward, never an [E, H, C] tensor.
# Attention dropout (dropout > 0): edge e (CSR position) of head k is kept iff u(seed, e*H + k) >= dropout, kept
# weights scaled by 1/(1-dropout); u is the counter-based hash of csrc/graph_attention/gat.h (splitmix64, top 24
# bits), identical on every backend and recomputed in the backward, never stored. row_max/row_denom are those of
# the undropped softmax.
# ---------------------------------------------------------------------------------------------------------------

#   h [N_src, H, C], s_src [N_src, H], s_dst [N_dst, H], e_score [E, H] (CSR order) or None
#   -> out [N_dst, H, C], row_max [N_dst, H], row_denom [N_dst, H]  (max/denom in fp32, fp64 for fp64 h)
# The CSC arrays and `deterministic` are not read by the forward: they ride along for the registered backward.
LIB.define(
    "gat_fwd(Tensor h, Tensor s_src, Tensor s_dst, Tensor? e_score, Tensor rowptr, Tensor col, Tensor colptr, "
    "Tensor row_csc, Tensor csc_to_csr, float negative_slope, float dropout, int seed, bool deterministic) "
    "-> (Tensor, Tensor, Tensor)"
)


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.register_fake("pyunlearn::gat_fwd")
def _gat_fwd_fake(h, s_src, s_dst, e_score, rowptr, col, colptr, row_csc, csc_to_csr, negative_slope, dropout,
                  seed, deterministic):
    n_dst = s_dst.shape[0]
    stats = s_dst.new_empty((n_dst, h.shape[1]), dtype=_stat_dtype(h.dtype))
    return h.new_empty((n_dst, h.shape[1], h.shape[2])), stats, torch.empty_like(stats)


#   grad_out [N_dst, H, C]; the forward's inputs and outputs; deterministic: no atomics (fixed summation order)
#   -> grad_h [N_src, H, C], grad_s_src [N_src, H], grad_s_dst [N_dst, H], grad_e_score [E, H] ([0] if None)
LIB.define(
    "gat_bwd(Tensor grad_out, Tensor h, Tensor s_src, Tensor s_dst, Tensor? e_score, Tensor rowptr, Tensor col, "
    "Tensor colptr, Tensor row_csc, Tensor csc_to_csr, Tensor out, Tensor row_max, Tensor row_denom, "
    "float negative_slope, float dropout, int seed, bool deterministic) -> (Tensor, Tensor, Tensor, Tensor)"
)


@torch.library.register_fake("pyunlearn::gat_bwd")
def _gat_bwd_fake(grad_out, h, s_src, s_dst, e_score, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max,
                  row_denom, negative_slope, dropout, seed, deterministic):
    g_e = e_score.new_empty(e_score.shape) if e_score is not None else h.new_empty((0,))
    return torch.empty_like(h), torch.empty_like(s_src), torch.empty_like(s_dst), g_e


# ---------------------------------------------------------------------------------------------------------------
# GATv2 scoring (Brody et al.): the logit is not separable per node, so it has its own ops over the same graph
# arrays, dropout hash and saved statistics as gat_fwd/gat_bwd. Per edge e = (j -> i) and head:
#   z_e = xl[j] + xr[i] (+ e_feat[e])        [C]
#   s_e = sum_c att[c] * leaky_relu(z_e[c], negative_slope)
#   alpha = softmax of s over the edges into i (then the same seeded dropout); out[i] = sum_j alpha * xl[j].
# ---------------------------------------------------------------------------------------------------------------

#   xl [N_src, H, C] (source features and messages), xr [N_dst, H, C], att [H, C], e_feat [E, H, C] (CSR order)
#   or None -> out [N_dst, H, C], row_max [N_dst, H], row_denom [N_dst, H]  (stats fp32, fp64 for fp64 xl)
LIB.define(
    "gatv2_fwd(Tensor xl, Tensor xr, Tensor att, Tensor? e_feat, Tensor rowptr, Tensor col, Tensor colptr, "
    "Tensor row_csc, Tensor csc_to_csr, float negative_slope, float dropout, int seed, bool deterministic) "
    "-> (Tensor, Tensor, Tensor)"
)


@torch.library.register_fake("pyunlearn::gatv2_fwd")
def _gatv2_fwd_fake(xl, xr, att, e_feat, rowptr, col, colptr, row_csc, csc_to_csr, negative_slope, dropout, seed,
                    deterministic):
    stats = xr.new_empty((xr.shape[0], xl.shape[1]), dtype=_stat_dtype(xl.dtype))
    return xl.new_empty(xr.shape), stats, torch.empty_like(stats)


#   -> grad_xl [N_src, H, C], grad_xr [N_dst, H, C], grad_att [H, C], grad_e_feat [E, H, C] ([0] if None).
#   deterministic: no atomics (grad_att reduced in a fixed order, grad_xl by walking the CSC).
LIB.define(
    "gatv2_bwd(Tensor grad_out, Tensor xl, Tensor xr, Tensor att, Tensor? e_feat, Tensor rowptr, Tensor col, "
    "Tensor colptr, Tensor row_csc, Tensor csc_to_csr, Tensor out, Tensor row_max, Tensor row_denom, "
    "float negative_slope, float dropout, int seed, bool deterministic) -> (Tensor, Tensor, Tensor, Tensor)"
)


@torch.library.register_fake("pyunlearn::gatv2_bwd")
def _gatv2_bwd_fake(grad_out, xl, xr, att, e_feat, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max,
                    row_denom, negative_slope, dropout, seed, deterministic):
    g_e = e_feat.new_empty(e_feat.shape) if e_feat is not None else xl.new_empty((0,))
    return torch.empty_like(xl), torch.empty_like(xr), torch.empty_like(att), g_e


# ---------------------------------------------------------------------------------------------------------------
# Seeded ZO directions, generated in-kernel and never stored (docs/zo_ops.md; twin: pyunlearn/reference/zo.py).
# z(seed, k, j) for direction k >= 0 and element j >= 0 of the flat parameter space (tensors of a list are
# consecutive segments from `offset`; element j of a tensor is its row-major flat index):
#   Philox4x32-10, key = (seed & 0xffffffff, seed >> 32) (the int64 `seed` is read as its uint64 bit pattern),
#   counter = (g & 0xffffffff, g >> 32, k & 0xffffffff, k >> 32) with g = j >> 2 -> words x0..x3; element j owns
#   x[j & 3] (its raw bits). dist "rademacher": z = -1 if bit 31 of x[j & 3] is set, else +1 (exact).
#   dist "gaussian": Box-Muller in fp32 on (x0, x1) for elements 4g, 4g+1 and (x2, x3) for 4g+2, 4g+3:
#   u = ((a >> 8) + 1) * 2^-24, v = (b >> 8) * 2^-24, r = sqrt(-2 log u), t = float32(2 pi) * v,
#   z = r cos t (even j), r sin t (odd j). Raw words are bit-identical on every backend; Gaussian values differ by
#   the libm/CUDA/Triton ulps of log, cos and sin only. z is fp32 whatever the tensor dtype.
# ---------------------------------------------------------------------------------------------------------------

# In place: t += scale * sum_{k < len(coeffs)} coeffs[k] * z(seed, direction0 + k, j) for every element of every
# tensor, accumulated in fp32 (fp64 for fp64 tensors) as acc = 0; acc += c_k z_k (k ascending); t = t + scale * acc.
# tensors: one dtype (fp16/bf16/fp32/fp64) and device; coeffs: 1-D fp32/fp64 on that device (read in-kernel,
# no host sync); dist: "gaussian" | "rademacher"; offset >= 0; direction0 >= 0.
LIB.define(
    "zo_accumulate(Tensor(a!)[] tensors, Tensor coeffs, int seed, int direction0, float scale, str dist, "
    "int offset) -> ()"
)


@torch.library.register_fake("pyunlearn::zo_accumulate")
def _zo_accumulate_fake(tensors, coeffs, seed, direction0, scale, dist, offset) -> None:
    return None


# In place, K directions at once: every tensors[i] is 2-D [K, n_i] (same K; rows with contiguous elements are the
# fast path, anything else is stepped in a contiguous copy). Row k of the list, viewed as one flat vector whose
# tensor i starts at offset + sum_{i' < i} n_i', gets t += alpha * z(seed, direction0 + k, j): the same values and
# roundings as zo_accumulate([row k of every tensor], alpha, seed, direction0 + k, 1.0, dist, offset).
# alpha: a one-element fp32/fp64 tensor on the tensors' device (read in-kernel).
LIB.define(
    "zo_accumulate_rows(Tensor(a!)[] tensors, Tensor alpha, int seed, int direction0, str dist, int offset) -> ()"
)


@torch.library.register_fake("pyunlearn::zo_accumulate_rows")
def _zo_accumulate_rows_fake(tensors, alpha, seed, direction0, dist, offset) -> None:
    return None


# In place: out[i] = the raw Philox word of element offset + i of direction `direction` (int64 out holding
# uint32 values, row-major). For tests of bit-identity across backends and for users who need the bits.
LIB.define("zo_philox_bits(Tensor(a!) out, int seed, int direction, int offset) -> ()")


@torch.library.register_fake("pyunlearn::zo_philox_bits")
def _zo_philox_bits_fake(out, seed, direction, offset) -> None:
    return None
