"""Triton kernels of the fused graph attention: the "triton" backend of torch.ops.pyunlearn.gat_fwd / gat_bwd.

Shapes and semantics are those of csrc/graph_attention/gat.h and the reference twins
(pyunlearn/reference/gat.py). Per edge j -> i and head k:
    pre = s_src[j,k] + s_dst[i,k] (+ e_score[edge,k]),  e = leaky_relu(pre, slope),
    alpha = exp(e - row_max[i,k]) / row_denom[i,k],    out[i,k,:] = sum_j alpha * h[j,k,:].

- forward (_gat_fwd_kernel): one program per destination row (CSR). It walks the row's edges in blocks of
  BLOCK_E with an online softmax: a running max, a denominator and an [H, C] accumulator rescaled whenever the
  max grows, so the row is read once and no [E, H, C] tensor exists anywhere. Every tile spans all heads
  and channels ([BLOCK_E, BLOCK_H, BLOCK_C], powers of two, padded lanes masked). A row without edges
  writes out 0, row_max 0 and row_denom 0.
- dropout: see below; the forward, the row pass and the column pass each recompute the keep decisions.
- backward, two launches, no atomics (fixed summation order, so bit-reproducible):
  _gat_bwd_rows_kernel, per destination row i: D = <grad_out[i], out[i]> per head, then per edge
  g_pre = alpha * (<grad_out[i], h[j]> - D) * (pre > 0 ? 1 : slope), the gradient of the pre-activation
  score. It is written to an [E, H] buffer in CSR order (that buffer is grad_e_score) and summed into
  grad_s_dst[i].
  _gat_bwd_cols_kernel, per source j over its CSC edges (colptr/row_csc/csc_to_csr): alpha is recomputed from
  the saved row statistics, grad_h[j] = sum alpha * grad_out[i] and grad_s_src[j] = sum g_pre[csr edge].
  `deterministic=False` takes the same path (there is no atomic fast path), so the gradients are
  bit-reproducible either way.

Arithmetic runs in fp32 (fp64 for fp64 h): fp16/bf16 values are converted right after the load and back only
at the store (bf16 arithmetic is also wrong under the Triton interpreter). fp32 division rounds to nearest
(tl.div_rn; `/` lowers to an approximate instruction on NVIDIA GPUs) and FMA contraction is off, as in the
other Triton kernels of pyunlearn. Index tensors are int32 or int64 (all five alike); addresses are int64.

Attention dropout (dropout p > 0, csrc/graph_attention/gat.h): CSR edge e of head k is kept iff
u(seed, e*H + k) >= p, u = splitmix64 of the counter, top 24 bits / 2**24 (dropout_m, uint64 arithmetic that
wraps). m = keep / (1 - p) multiplies alpha in the output sum, in <grad_out_i, h_j> of the row pass and in the
grad_h sum of the column pass (which recomputes m from the CSR position and head); row_max / row_denom and
D_i = <grad_out_i, out_i> are unchanged. The comparison u >= p and 1 / (1 - p) are those of the reference
(fp32 u compared with p rounded to fp32, i.e. top-24-bit integer >= ceil(fp32(p) * 2**24); 1 / (1 - p) rounded
to the compute dtype). p == 0 compiles the code without dropout (HAS_DROPOUT constexpr), bit for bit the same.

On CPU tensors the kernels need the Triton interpreter (TRITON_INTERPRET=1 set before triton is imported).
Arguments are checked by the Python layer (pyunlearn/ops/gat.py); this module only launches.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from pyunlearn.kernels._common import (check_device, compute_dtype, div_rn, dropout_args, dropout_m,
                                       gat_tile_config, leaky_relu, on_device, stat_dtype)


@triton.jit
def _gat_fwd_kernel(
    h_ptr, s_src_ptr, s_dst_ptr, e_ptr, rowptr_ptr, col_ptr, out_ptr, max_ptr, denom_ptr,
    slope: tl.float64, H, C, seed: tl.int64, keep_thr: tl.int64, keep_scale: tl.float64,
    CDT: tl.constexpr, HAS_E: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # One destination row i: read its edges once, write out[i] [H, C], row_max[i] and row_denom[i] [H].
    i = tl.program_id(0).to(tl.int64)
    slope = tl.full([], slope, CDT)
    k = tl.arange(0, BLOCK_H)  # [BH] head
    ch = tl.arange(0, BLOCK_C)  # [BC] channel
    head_ok = k < H  # [BH]
    hc_ok = head_ok[:, None] & (ch < C)[None, :]  # [BH, BC]
    hc_off = k[:, None] * C + ch[None, :]  # [BH, BC] offset inside one node's [H, C] slab
    start = tl.load(rowptr_ptr + i).to(tl.int64)
    end = tl.load(rowptr_ptr + i + 1).to(tl.int64)
    s_dst = tl.load(s_dst_ptr + i * H + k, mask=head_ok, other=0).to(CDT)  # [BH]
    run_max = tl.full([BLOCK_H], float("-inf"), CDT)  # [BH]
    denom = tl.zeros([BLOCK_H], CDT)  # [BH] sum of exp(e - run_max)
    acc = tl.zeros([BLOCK_H, BLOCK_C], CDT)  # [BH, BC] sum of exp(e - run_max) * h[j]
    for e0 in range(start, end, BLOCK_E):
        eid = e0 + tl.arange(0, BLOCK_E)  # [BE] CSR edge positions
        live = eid < end  # [BE]; every block holds at least one live edge, so the new max is finite
        eh_ok = live[:, None] & head_ok[None, :]  # [BE, BH]
        j = tl.load(col_ptr + eid, mask=live, other=0).to(tl.int64)  # [BE] sources
        pre = tl.load(s_src_ptr + j[:, None] * H + k[None, :], mask=eh_ok, other=0).to(CDT) + s_dst[None, :]
        if HAS_E:
            pre = pre + tl.load(e_ptr + eid[:, None] * H + k[None, :], mask=eh_ok, other=0).to(CDT)
        score = tl.where(live[:, None], leaky_relu(pre, slope), float("-inf"))  # [BE, BH]
        new_max = tl.maximum(run_max, tl.max(score, axis=0))  # [BH]
        rescale = tl.exp(run_max - new_max)  # [BH]; 0 on the first block (run_max = -inf)
        w = tl.exp(score - new_max[None, :])  # [BE, BH]; 0 on dead edges
        denom = denom * rescale + tl.sum(w, axis=0)
        hv = tl.load(h_ptr + j[:, None, None] * (H * C) + hc_off[None, :, :],
                     mask=live[:, None, None] & hc_ok[None, :, :], other=0).to(CDT)  # [BE, BH, BC]
        if HAS_DROPOUT:
            # Dropped edges still count in denom (the undropped softmax); only the output sum sees m.
            wm = w * dropout_m(seed, eid, k, H, keep_thr, keep_scale, CDT)  # [BE, BH]
            acc = acc * rescale[:, None] + tl.sum(wm[:, :, None] * hv, axis=0)
        else:
            acc = acc * rescale[:, None] + tl.sum(w[:, :, None] * hv, axis=0)
        run_max = new_max
    has_edges = denom > 0  # [BH]; False only for a row without edges
    out = div_rn(acc, tl.where(has_edges, denom, 1.0)[:, None], CDT)  # [BH, BC]; 0 without edges
    tl.store(out_ptr + i * (H * C) + hc_off, out.to(out_ptr.dtype.element_ty), mask=hc_ok)
    tl.store(max_ptr + i * H + k, tl.where(has_edges, run_max, 0.0), mask=head_ok)
    tl.store(denom_ptr + i * H + k, denom, mask=head_ok)


@triton.jit
def _gat_bwd_rows_kernel(
    grad_out_ptr, h_ptr, s_src_ptr, s_dst_ptr, e_ptr, rowptr_ptr, col_ptr, out_ptr, max_ptr, denom_ptr,
    g_pre_ptr, grad_e_ptr, grad_s_dst_ptr,
    slope: tl.float64, H, C, seed: tl.int64, keep_thr: tl.int64, keep_scale: tl.float64,
    CDT: tl.constexpr, HAS_E: tl.constexpr, STORE_GRAD_E: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # One destination row i: g_pre of each of its edges (CSR order) and grad_s_dst[i] = their sum.
    i = tl.program_id(0).to(tl.int64)
    slope = tl.full([], slope, CDT)
    k = tl.arange(0, BLOCK_H)  # [BH]
    ch = tl.arange(0, BLOCK_C)  # [BC]
    head_ok = k < H
    hc_ok = head_ok[:, None] & (ch < C)[None, :]  # [BH, BC]
    hc_off = k[:, None] * C + ch[None, :]  # [BH, BC]
    start = tl.load(rowptr_ptr + i).to(tl.int64)
    end = tl.load(rowptr_ptr + i + 1).to(tl.int64)
    go = tl.load(grad_out_ptr + i * (H * C) + hc_off, mask=hc_ok, other=0).to(CDT)  # [BH, BC]
    o = tl.load(out_ptr + i * (H * C) + hc_off, mask=hc_ok, other=0).to(CDT)  # [BH, BC]
    d_row = tl.sum(go * o, axis=1)  # [BH] D = <grad_out[i], out[i]> (the stored out, as the reference)
    s_dst = tl.load(s_dst_ptr + i * H + k, mask=head_ok, other=0).to(CDT)  # [BH]
    row_max = tl.load(max_ptr + i * H + k, mask=head_ok, other=0)  # [BH] stat dtype == CDT
    row_denom = tl.load(denom_ptr + i * H + k, mask=head_ok, other=1)  # [BH]; used only if the row has edges
    grad_s_dst = tl.zeros([BLOCK_H], CDT)  # [BH]
    for e0 in range(start, end, BLOCK_E):
        eid = e0 + tl.arange(0, BLOCK_E)  # [BE]
        live = eid < end
        eh_ok = live[:, None] & head_ok[None, :]  # [BE, BH]
        j = tl.load(col_ptr + eid, mask=live, other=0).to(tl.int64)  # [BE]
        pre = tl.load(s_src_ptr + j[:, None] * H + k[None, :], mask=eh_ok, other=0).to(CDT) + s_dst[None, :]
        if HAS_E:
            pre = pre + tl.load(e_ptr + eid[:, None] * H + k[None, :], mask=eh_ok, other=0).to(CDT)
        # Dead lanes get exp(-inf) = 0: their stand-in scores are arbitrary and could overflow exp.
        shifted = tl.where(eh_ok, leaky_relu(pre, slope) - row_max[None, :], float("-inf"))  # [BE, BH]
        alpha = div_rn(tl.exp(shifted), row_denom[None, :], CDT)  # [BE, BH]
        hv = tl.load(h_ptr + j[:, None, None] * (H * C) + hc_off[None, :, :],
                     mask=live[:, None, None] & hc_ok[None, :, :], other=0).to(CDT)  # [BE, BH, BC]
        d_alpha = tl.sum(go[None, :, :] * hv, axis=2)  # [BE, BH] <grad_out[i], h[j]>
        if HAS_DROPOUT:
            d_alpha = d_alpha * dropout_m(seed, eid, k, H, keep_thr, keep_scale, CDT)  # m * <grad_out[i], h[j]>
        # [BE, BH]; 0 on dead lanes (alpha = 0 there)
        g_pre = alpha * (d_alpha - d_row[None, :]) * tl.where(pre > 0, 1.0, slope)
        tl.store(g_pre_ptr + eid[:, None] * H + k[None, :], g_pre, mask=eh_ok)
        if STORE_GRAD_E:
            # fp16/bf16 e_score: the stat-dtype buffer stays for the column pass, the cast copy is returned.
            tl.store(grad_e_ptr + eid[:, None] * H + k[None, :], g_pre.to(grad_e_ptr.dtype.element_ty),
                     mask=eh_ok)
        grad_s_dst += tl.sum(g_pre, axis=0)
    tl.store(grad_s_dst_ptr + i * H + k, grad_s_dst.to(grad_s_dst_ptr.dtype.element_ty), mask=head_ok)


@triton.jit
def _gat_bwd_cols_kernel(
    grad_out_ptr, s_src_ptr, s_dst_ptr, e_ptr, colptr_ptr, row_csc_ptr, csc_to_csr_ptr, max_ptr, denom_ptr,
    g_pre_ptr, grad_h_ptr, grad_s_src_ptr,
    slope: tl.float64, H, C, seed: tl.int64, keep_thr: tl.int64, keep_scale: tl.float64,
    CDT: tl.constexpr, HAS_E: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # One source j: grad_h[j] [H, C] and grad_s_src[j] [H] over its out-edges in CSC order (no atomics).
    j = tl.program_id(0).to(tl.int64)
    slope = tl.full([], slope, CDT)
    k = tl.arange(0, BLOCK_H)  # [BH]
    ch = tl.arange(0, BLOCK_C)  # [BC]
    head_ok = k < H
    hc_ok = head_ok[:, None] & (ch < C)[None, :]  # [BH, BC]
    hc_off = k[:, None] * C + ch[None, :]  # [BH, BC]
    start = tl.load(colptr_ptr + j).to(tl.int64)
    end = tl.load(colptr_ptr + j + 1).to(tl.int64)
    s_src = tl.load(s_src_ptr + j * H + k, mask=head_ok, other=0).to(CDT)  # [BH]
    grad_h = tl.zeros([BLOCK_H, BLOCK_C], CDT)  # [BH, BC]
    grad_s_src = tl.zeros([BLOCK_H], CDT)  # [BH]
    for q0 in range(start, end, BLOCK_E):
        q = q0 + tl.arange(0, BLOCK_E)  # [BE] CSC positions
        live = q < end
        eh_ok = live[:, None] & head_ok[None, :]  # [BE, BH]
        i = tl.load(row_csc_ptr + q, mask=live, other=0).to(tl.int64)  # [BE] destinations
        eid = tl.load(csc_to_csr_ptr + q, mask=live, other=0).to(tl.int64)  # [BE] CSR positions
        # s_src + s_dst in this order, as the forward (IEEE addition commutes exactly anyway).
        pre = s_src[None, :] + tl.load(s_dst_ptr + i[:, None] * H + k[None, :], mask=eh_ok, other=0).to(CDT)
        if HAS_E:
            pre = pre + tl.load(e_ptr + eid[:, None] * H + k[None, :], mask=eh_ok, other=0).to(CDT)
        row_max = tl.load(max_ptr + i[:, None] * H + k[None, :], mask=eh_ok, other=0)  # [BE, BH]
        row_denom = tl.load(denom_ptr + i[:, None] * H + k[None, :], mask=eh_ok, other=1)  # [BE, BH]
        # Dead lanes get exp(-inf) = 0: their stand-in scores are arbitrary and could overflow exp.
        shifted = tl.where(eh_ok, leaky_relu(pre, slope) - row_max, float("-inf"))  # [BE, BH]
        alpha = div_rn(tl.exp(shifted), row_denom, CDT)  # [BE, BH]
        if HAS_DROPOUT:
            alpha_m = alpha * dropout_m(seed, eid, k, H, keep_thr, keep_scale, CDT)  # [BE, BH] alpha * m
        else:
            alpha_m = alpha
        gov = tl.load(grad_out_ptr + i[:, None, None] * (H * C) + hc_off[None, :, :],
                      mask=live[:, None, None] & hc_ok[None, :, :], other=0).to(CDT)  # [BE, BH, BC]
        grad_h += tl.sum(alpha_m[:, :, None] * gov, axis=0)
        grad_s_src += tl.sum(tl.load(g_pre_ptr + eid[:, None] * H + k[None, :], mask=eh_ok, other=0), axis=0)
    tl.store(grad_h_ptr + j * (H * C) + hc_off, grad_h.to(grad_h_ptr.dtype.element_ty), mask=hc_ok)
    tl.store(grad_s_src_ptr + j * H + k, grad_s_src.to(grad_s_src_ptr.dtype.element_ty), mask=head_ok)


def gat_fwd(h: Tensor, s_src: Tensor, s_dst: Tensor, e_score: Optional[Tensor], rowptr: Tensor, col: Tensor,
            colptr: Tensor, row_csc: Tensor, csc_to_csr: Tensor, negative_slope: float, dropout: float, seed: int,
            deterministic: bool) -> tuple[Tensor, Tensor, Tensor]:
    """out [N_dst, H, C] (h's dtype), row_max and row_denom [N_dst, H] (fp32, fp64 for fp64 h). The CSC arrays
    and `deterministic` are not read: they ride along for the backward. dropout p in [0, 1) (checked by the
    Python layer), seed: see the module docstring."""
    for t in (h, s_src, s_dst, e_score, rowptr, col):
        check_device(t)
    n_dst, heads, ch = s_dst.shape[0], h.shape[1], h.shape[2]
    h = h.contiguous()  # [N_src, H, C]
    s_src, s_dst = s_src.contiguous(), s_dst.contiguous()  # [N_src, H], [N_dst, H]
    rowptr, col = rowptr.contiguous(), col.contiguous()  # [N_dst+1], [E]
    has_e = e_score is not None
    e_arg = e_score.contiguous() if has_e else s_dst  # [E, H]; when absent an unread stand-in (HAS_E guards)
    out = torch.empty((n_dst, heads, ch), dtype=h.dtype, device=h.device)  # [N_dst, H, C]
    row_max = torch.empty((n_dst, heads), dtype=stat_dtype(h.dtype), device=h.device)  # [N_dst, H]
    row_denom = torch.empty_like(row_max)  # [N_dst, H]
    if n_dst == 0 or heads == 0:
        return out, row_max, row_denom
    seed, keep_thr, keep_scale = dropout_args(dropout, seed, h.dtype)
    with on_device(h):
        _gat_fwd_kernel[(n_dst,)](
            h, s_src, s_dst, e_arg, rowptr, col, out, row_max, row_denom, float(negative_slope), heads, ch,
            seed, keep_thr, keep_scale, CDT=compute_dtype(h.dtype), HAS_E=has_e, HAS_DROPOUT=dropout != 0,
            enable_fp_fusion=False, **gat_tile_config(heads, ch))
    return out, row_max, row_denom


def gat_bwd(grad_out: Tensor, h: Tensor, s_src: Tensor, s_dst: Tensor, e_score: Optional[Tensor],
            rowptr: Tensor, col: Tensor, colptr: Tensor, row_csc: Tensor, csc_to_csr: Tensor, out: Tensor,
            row_max: Tensor, row_denom: Tensor, negative_slope: float, dropout: float, seed: int,
            deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """grad_h [N_src, H, C], grad_s_src [N_src, H], grad_s_dst [N_dst, H], grad_e_score [E, H] (an empty [0]
    tensor when e_score is None). Always the deterministic two-pass path (see the module docstring)."""
    for t in (grad_out, h, s_src, s_dst, e_score, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max,
              row_denom):
        check_device(t)
    n_src, heads, ch = h.shape
    n_dst, n_edges = s_dst.shape[0], col.shape[0]
    grad_out, out = grad_out.contiguous(), out.contiguous()  # [N_dst, H, C] each
    h = h.contiguous()  # [N_src, H, C]
    s_src, s_dst = s_src.contiguous(), s_dst.contiguous()  # [N_src, H], [N_dst, H]
    row_max, row_denom = row_max.contiguous(), row_denom.contiguous()  # [N_dst, H] stat dtype
    rowptr, col = rowptr.contiguous(), col.contiguous()  # [N_dst+1], [E]
    colptr = colptr.contiguous()  # [N_src + 1]
    row_csc, csc_to_csr = row_csc.contiguous(), csc_to_csr.contiguous()  # [E], [E]
    has_e = e_score is not None
    e_arg = e_score.contiguous() if has_e else s_dst  # [E, H] or an unread stand-in
    stat = stat_dtype(h.dtype)
    g_pre = torch.empty((n_edges, heads), dtype=stat, device=h.device)  # [E, H] CSR order, every edge written
    # grad_e_score is g_pre itself when the dtypes agree, else a copy cast by the row kernel.
    store_grad_e = has_e and e_score.dtype != stat
    if not has_e:
        grad_e = h.new_empty((0,))
    elif store_grad_e:
        grad_e = torch.empty((n_edges, heads), dtype=e_score.dtype, device=h.device)  # [E, H]
    else:
        grad_e = g_pre
    grad_h = torch.empty((n_src, heads, ch), dtype=h.dtype, device=h.device)  # [N_src, H, C]
    grad_s_src = torch.empty((n_src, heads), dtype=s_src.dtype, device=h.device)  # [N_src, H]
    grad_s_dst = torch.empty((n_dst, heads), dtype=s_dst.dtype, device=h.device)  # [N_dst, H]
    if heads == 0:
        return grad_h, grad_s_src, grad_s_dst, grad_e
    cfg = gat_tile_config(heads, ch)
    slope, cdt = float(negative_slope), compute_dtype(h.dtype)
    drop = dropout_args(dropout, seed, h.dtype)  # seed, keep_thr, keep_scale
    has_drop = dropout != 0
    with on_device(h):
        # Rows first: the column pass sums the g_pre they write (same stream, so ordered).
        if n_dst > 0:
            _gat_bwd_rows_kernel[(n_dst,)](
                grad_out, h, s_src, s_dst, e_arg, rowptr, col, out, row_max, row_denom, g_pre,
                grad_e if store_grad_e else g_pre, grad_s_dst, slope, heads, ch, *drop,
                CDT=cdt, HAS_E=has_e, STORE_GRAD_E=store_grad_e, HAS_DROPOUT=has_drop, enable_fp_fusion=False,
                **cfg)
        if n_src > 0:
            _gat_bwd_cols_kernel[(n_src,)](
                grad_out, s_src, s_dst, e_arg, colptr, row_csc, csc_to_csr, row_max, row_denom, g_pre, grad_h,
                grad_s_src, slope, heads, ch, *drop, CDT=cdt, HAS_E=has_e, HAS_DROPOUT=has_drop,
                enable_fp_fusion=False, **cfg)
    return grad_h, grad_s_src, grad_s_dst, grad_e
