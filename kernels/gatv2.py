"""Triton kernels of GATv2 attention: the "triton" backend of torch.ops.pyunlearn.gatv2_fwd / gatv2_bwd.

Shapes and semantics are those of pyunlearn/_ops.py, csrc/graph_attention/gat.h and the reference twins
(pyunlearn/reference/gat.py, gatv2_*). Per edge e = (j -> i), head k, channel c:
    z = xl[j] + xr[i] (+ e_feat[e]),  s = sum_c att[k, c] * leaky_relu(z[c], slope),
    alpha = exp(s - row_max[i,k]) / row_denom[i,k],    out[i,k,:] = sum_j alpha * m * xl[j,k,:].

- forward (_gatv2_fwd_kernel): one program per destination row (CSR), an online softmax over blocks of BLOCK_E
  edges as the v1 kernel (kernels/gat.py): a running max, a denominator and an [H, C] accumulator rescaled when
  the max grows. xl[j] is loaded once per edge and serves both the score and the message. Every tile spans all
  heads and channels ([BLOCK_E, BLOCK_H, BLOCK_C], powers of two, padded lanes masked). A row without edges
  writes out 0, row_max 0 and row_denom 0.
- backward, row pass (_gatv2_bwd_rows_kernel): programs stride over the destination rows (row p, p + P, ...).
  Per row i: D_i = <grad_out_i, out_i> per head (the stored out, as the reference); per edge alpha from the saved
  statistics, g_s = alpha * (m <grad_out_i, xl_j> - D_i), g_z = g_s * att * leaky_relu'(z) (slope where z <= 0).
  grad_xr[i] = sum of the row's g_z, grad_e_feat[e] = g_z (stored straight in e_feat's dtype), and the program's
  share of grad_att = sum g_s * leaky_relu(z).
- deterministic=True (no atomics, bit-reproducible): the row pass writes D [N_dst, H] and its grad_att share to
  a [P, H, C] buffer that torch sums over P (a fixed order). The column pass (_gatv2_bwd_cols_kernel), one
  program per source j over its CSC edges (colptr/row_csc/csc_to_csr), recomputes z, s, alpha (row_max,
  row_denom), m (from the CSR position), g_s (from D) and g_z, and writes
  grad_xl[j] = sum (alpha * m * grad_out_i + g_z).
- deterministic=False: no column pass; the row pass adds alpha * m * grad_out_i + g_z into grad_xl[j] and its
  grad_att share into grad_att with atomics (fp32 buffers, fp64 for fp64; summation order not fixed).

Arithmetic runs in fp32 (fp64 for fp64 inputs): fp16/bf16 values are converted right after the load and back
only at the store (bf16 arithmetic is also wrong under the Triton interpreter). fp32 division rounds to nearest
(tl.div_rn) and FMA contraction is off, as in the other Triton kernels. Index tensors are int32 or int64 (all
five alike); addresses are int64.

Attention dropout (p > 0): identical to the v1 kernels (dropout_m of kernels/_common.py): CSR edge e of head k is
kept iff the splitmix64 hash of (seed, e*H + k) passes u >= fp32(p); m = keep / (1 - p) multiplies alpha in the
output sum, in <grad_out_i, xl_j> and in the grad_xl message term; row_max / row_denom / D are undropped.
p == 0 compiles the kernels without dropout (HAS_DROPOUT constexpr).

On CPU tensors the kernels need the Triton interpreter (TRITON_INTERPRET=1 set before triton is imported).
Arguments are checked by the Python layer and the C++ op checks; this module only launches.
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
def _scores(z, att, slope):
    """(leaky_relu(z) [BE, BH, BC], s = sum_c att * leaky_relu(z) [BE, BH]) for z [BE, BH, BC], att [BH, BC]."""
    lz = leaky_relu(z, slope)
    return lz, tl.sum(lz * att[None, :, :], axis=2)


@triton.jit
def _gatv2_fwd_kernel(
    xl_ptr, xr_ptr, att_ptr, e_ptr, rowptr_ptr, col_ptr, out_ptr, max_ptr, denom_ptr,
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
    hc_off = k[:, None] * C + ch[None, :]  # [BH, BC] offset inside one node's (or edge's) [H, C] slab
    start = tl.load(rowptr_ptr + i).to(tl.int64)
    end = tl.load(rowptr_ptr + i + 1).to(tl.int64)
    att = tl.load(att_ptr + hc_off, mask=hc_ok, other=0).to(CDT)  # [BH, BC]; 0 on padded lanes
    xr = tl.load(xr_ptr + i * (H * C) + hc_off, mask=hc_ok, other=0).to(CDT)  # [BH, BC]
    run_max = tl.full([BLOCK_H], float("-inf"), CDT)  # [BH]
    denom = tl.zeros([BLOCK_H], CDT)  # [BH] sum of exp(s - run_max)
    acc = tl.zeros([BLOCK_H, BLOCK_C], CDT)  # [BH, BC] sum of exp(s - run_max) * m * xl[j]
    for e0 in range(start, end, BLOCK_E):
        eid = e0 + tl.arange(0, BLOCK_E)  # [BE] CSR edge positions
        live = eid < end  # [BE]; every block holds at least one live edge, so the new max is finite
        ehc_ok = live[:, None, None] & hc_ok[None, :, :]  # [BE, BH, BC]
        j = tl.load(col_ptr + eid, mask=live, other=0).to(tl.int64)  # [BE] sources
        xv = tl.load(xl_ptr + j[:, None, None] * (H * C) + hc_off[None, :, :], mask=ehc_ok,
                     other=0).to(CDT)  # [BE, BH, BC]
        z = xv + xr[None, :, :]  # xl[j] + xr[i] in this order, as the reference
        if HAS_E:
            z = z + tl.load(e_ptr + eid[:, None, None] * (H * C) + hc_off[None, :, :], mask=ehc_ok,
                            other=0).to(CDT)
        _, s = _scores(z, att, slope)  # [BE, BH]
        score = tl.where(live[:, None], s, float("-inf"))  # [BE, BH]
        new_max = tl.maximum(run_max, tl.max(score, axis=0))  # [BH]
        rescale = tl.exp(run_max - new_max)  # [BH]; 0 on the first block (run_max = -inf)
        w = tl.exp(score - new_max[None, :])  # [BE, BH]; 0 on dead edges
        denom = denom * rescale + tl.sum(w, axis=0)
        if HAS_DROPOUT:
            # Dropped edges still count in denom (the undropped softmax); only the output sum sees m.
            w = w * dropout_m(seed, eid, k, H, keep_thr, keep_scale, CDT)  # [BE, BH]
        acc = acc * rescale[:, None] + tl.sum(w[:, :, None] * xv, axis=0)
        run_max = new_max
    has_edges = denom > 0  # [BH]; False only for a row without edges
    out = div_rn(acc, tl.where(has_edges, denom, 1.0)[:, None], CDT)  # [BH, BC]; 0 without edges
    tl.store(out_ptr + i * (H * C) + hc_off, out.to(out_ptr.dtype.element_ty), mask=hc_ok)
    tl.store(max_ptr + i * H + k, tl.where(has_edges, run_max, 0.0), mask=head_ok)
    tl.store(denom_ptr + i * H + k, denom, mask=head_ok)


@triton.jit
def _gatv2_bwd_rows_kernel(
    grad_out_ptr, xl_ptr, xr_ptr, att_ptr, e_ptr, rowptr_ptr, col_ptr, out_ptr, max_ptr, denom_ptr,
    d_ptr, grad_xr_ptr, grad_e_ptr, grad_att_ptr, grad_xl_ptr,
    slope: tl.float64, n_dst, H, C, seed: tl.int64, keep_thr: tl.int64, keep_scale: tl.float64,
    CDT: tl.constexpr, HAS_E: tl.constexpr, HAS_DROPOUT: tl.constexpr, ATOMIC: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # Rows pid, pid + P, ...: grad_xr[i], grad_e_feat of the row's edges and this program's grad_att share.
    # ATOMIC: also grad_xl by atomic adds (grad_att_ptr is then the [H, C] sum, else this program's [P, H, C] slot;
    # without ATOMIC, D_i goes to d_ptr for the column pass and grad_xl_ptr is not read).
    pid = tl.program_id(0).to(tl.int64)
    n_prog = tl.num_programs(0).to(tl.int64)
    slope = tl.full([], slope, CDT)
    k = tl.arange(0, BLOCK_H)  # [BH]
    ch = tl.arange(0, BLOCK_C)  # [BC]
    head_ok = k < H
    hc_ok = head_ok[:, None] & (ch < C)[None, :]  # [BH, BC]
    hc_off = k[:, None] * C + ch[None, :]  # [BH, BC]
    att = tl.load(att_ptr + hc_off, mask=hc_ok, other=0).to(CDT)  # [BH, BC]
    grad_att = tl.zeros([BLOCK_H, BLOCK_C], CDT)  # [BH, BC] this program's sum of g_s * leaky_relu(z)
    for i in range(pid, n_dst, n_prog):  # int64 rows
        start = tl.load(rowptr_ptr + i).to(tl.int64)
        end = tl.load(rowptr_ptr + i + 1).to(tl.int64)
        go = tl.load(grad_out_ptr + i * (H * C) + hc_off, mask=hc_ok, other=0).to(CDT)  # [BH, BC]
        o = tl.load(out_ptr + i * (H * C) + hc_off, mask=hc_ok, other=0).to(CDT)  # [BH, BC]
        d_row = tl.sum(go * o, axis=1)  # [BH] D_i = <grad_out[i], out[i]>
        if not ATOMIC:
            tl.store(d_ptr + i * H + k, d_row, mask=head_ok)
        xr = tl.load(xr_ptr + i * (H * C) + hc_off, mask=hc_ok, other=0).to(CDT)  # [BH, BC]
        row_max = tl.load(max_ptr + i * H + k, mask=head_ok, other=0)  # [BH] stat dtype == CDT
        row_denom = tl.load(denom_ptr + i * H + k, mask=head_ok, other=1)  # [BH]; read only if the row has edges
        grad_xr = tl.zeros([BLOCK_H, BLOCK_C], CDT)  # [BH, BC]
        for e0 in range(start, end, BLOCK_E):
            eid = e0 + tl.arange(0, BLOCK_E)  # [BE]
            live = eid < end
            eh_ok = live[:, None] & head_ok[None, :]  # [BE, BH]
            ehc_ok = live[:, None, None] & hc_ok[None, :, :]  # [BE, BH, BC]
            j = tl.load(col_ptr + eid, mask=live, other=0).to(tl.int64)  # [BE]
            xv = tl.load(xl_ptr + j[:, None, None] * (H * C) + hc_off[None, :, :], mask=ehc_ok,
                         other=0).to(CDT)  # [BE, BH, BC]
            z = xv + xr[None, :, :]
            if HAS_E:
                z = z + tl.load(e_ptr + eid[:, None, None] * (H * C) + hc_off[None, :, :], mask=ehc_ok,
                                other=0).to(CDT)
            lz, s = _scores(z, att, slope)  # [BE, BH, BC], [BE, BH]
            # Dead lanes get exp(-inf) = 0, so every term below vanishes there.
            shifted = tl.where(eh_ok, s - row_max[None, :], float("-inf"))  # [BE, BH]
            alpha = div_rn(tl.exp(shifted), row_denom[None, :], CDT)  # [BE, BH]
            d_alpha = tl.sum(go[None, :, :] * xv, axis=2)  # [BE, BH] <grad_out[i], xl[j]>
            if HAS_DROPOUT:
                m = dropout_m(seed, eid, k, H, keep_thr, keep_scale, CDT)  # [BE, BH]
                d_alpha = d_alpha * m
                alpha_m = alpha * m
            else:
                alpha_m = alpha
            g_s = alpha * (d_alpha - d_row[None, :])  # [BE, BH]
            g_z = g_s[:, :, None] * att[None, :, :] * tl.where(z > 0, 1.0, slope)  # [BE, BH, BC]
            grad_xr += tl.sum(g_z, axis=0)
            grad_att += tl.sum(g_s[:, :, None] * lz, axis=0)
            if HAS_E:
                tl.store(grad_e_ptr + eid[:, None, None] * (H * C) + hc_off[None, :, :],
                         g_z.to(grad_e_ptr.dtype.element_ty), mask=ehc_ok)
            if ATOMIC:
                tl.atomic_add(grad_xl_ptr + j[:, None, None] * (H * C) + hc_off[None, :, :],
                              alpha_m[:, :, None] * go[None, :, :] + g_z, mask=ehc_ok, sem="relaxed")
        tl.store(grad_xr_ptr + i * (H * C) + hc_off, grad_xr.to(grad_xr_ptr.dtype.element_ty), mask=hc_ok)
    if ATOMIC:
        tl.atomic_add(grad_att_ptr + hc_off, grad_att, mask=hc_ok, sem="relaxed")
    else:
        tl.store(grad_att_ptr + pid * (H * C) + hc_off, grad_att, mask=hc_ok)


@triton.jit
def _gatv2_bwd_cols_kernel(
    grad_out_ptr, xl_ptr, xr_ptr, att_ptr, e_ptr, colptr_ptr, row_csc_ptr, csc_to_csr_ptr, max_ptr, denom_ptr,
    d_ptr, grad_xl_ptr,
    slope: tl.float64, H, C, seed: tl.int64, keep_thr: tl.int64, keep_scale: tl.float64,
    CDT: tl.constexpr, HAS_E: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # One source j: grad_xl[j] [H, C] over its out-edges in CSC order, everything recomputed (no atomics).
    j = tl.program_id(0).to(tl.int64)
    slope = tl.full([], slope, CDT)
    k = tl.arange(0, BLOCK_H)  # [BH]
    ch = tl.arange(0, BLOCK_C)  # [BC]
    head_ok = k < H
    hc_ok = head_ok[:, None] & (ch < C)[None, :]  # [BH, BC]
    hc_off = k[:, None] * C + ch[None, :]  # [BH, BC]
    start = tl.load(colptr_ptr + j).to(tl.int64)
    end = tl.load(colptr_ptr + j + 1).to(tl.int64)
    att = tl.load(att_ptr + hc_off, mask=hc_ok, other=0).to(CDT)  # [BH, BC]
    xv = tl.load(xl_ptr + j * (H * C) + hc_off, mask=hc_ok, other=0).to(CDT)  # [BH, BC] xl[j]
    grad_xl = tl.zeros([BLOCK_H, BLOCK_C], CDT)  # [BH, BC]
    for q0 in range(start, end, BLOCK_E):
        q = q0 + tl.arange(0, BLOCK_E)  # [BE] CSC positions
        live = q < end
        eh_ok = live[:, None] & head_ok[None, :]  # [BE, BH]
        ehc_ok = live[:, None, None] & hc_ok[None, :, :]  # [BE, BH, BC]
        i = tl.load(row_csc_ptr + q, mask=live, other=0).to(tl.int64)  # [BE] destinations
        eid = tl.load(csc_to_csr_ptr + q, mask=live, other=0).to(tl.int64)  # [BE] CSR positions
        i_hc = i[:, None, None] * (H * C) + hc_off[None, :, :]  # [BE, BH, BC]
        z = xv[None, :, :] + tl.load(xr_ptr + i_hc, mask=ehc_ok, other=0).to(CDT)  # [BE, BH, BC]
        if HAS_E:
            z = z + tl.load(e_ptr + eid[:, None, None] * (H * C) + hc_off[None, :, :], mask=ehc_ok,
                            other=0).to(CDT)
        _, s = _scores(z, att, slope)  # [BE, BH]
        i_h = i[:, None] * H + k[None, :]  # [BE, BH]
        row_max = tl.load(max_ptr + i_h, mask=eh_ok, other=0)  # [BE, BH]
        row_denom = tl.load(denom_ptr + i_h, mask=eh_ok, other=1)  # [BE, BH]
        d_row = tl.load(d_ptr + i_h, mask=eh_ok, other=0)  # [BE, BH]
        shifted = tl.where(eh_ok, s - row_max, float("-inf"))  # [BE, BH]; dead lanes: alpha = 0
        alpha = div_rn(tl.exp(shifted), row_denom, CDT)  # [BE, BH]
        gov = tl.load(grad_out_ptr + i_hc, mask=ehc_ok, other=0).to(CDT)  # [BE, BH, BC] grad_out[i]
        d_alpha = tl.sum(gov * xv[None, :, :], axis=2)  # [BE, BH] <grad_out[i], xl[j]>
        if HAS_DROPOUT:
            m = dropout_m(seed, eid, k, H, keep_thr, keep_scale, CDT)  # [BE, BH]
            d_alpha = d_alpha * m
            alpha_m = alpha * m
        else:
            alpha_m = alpha
        g_s = alpha * (d_alpha - d_row)  # [BE, BH]
        g_z = g_s[:, :, None] * att[None, :, :] * tl.where(z > 0, 1.0, slope)  # [BE, BH, BC]
        grad_xl += tl.sum(alpha_m[:, :, None] * gov + g_z, axis=0)
    tl.store(grad_xl_ptr + j * (H * C) + hc_off, grad_xl.to(grad_xl_ptr.dtype.element_ty), mask=hc_ok)


def _tiles(heads: int, ch: int, kernel: str, dtype: torch.dtype) -> dict:
    """Tile config per kernel: [BLOCK_E, BLOCK_H, BLOCK_C] tiles of ~1024 values in the forward and ~512 in the
    backward passes (which hold several such tiles: xl or xr, z, leaky_relu(z), e_feat, g_z, grad_out, and
    their int64 addresses), halved for fp64. Checked offline for sm_90 with ptxas -v (triton 3.7.1; every
    dtype and flag at H x C = 4 x 16, and 8x8, 8x64, 1x256, 2x33 in fp32/fp64): at most 96 registers in the
    forward and 128 in the backward (182 for fp64 at 8 x 64), spills of at most 20 bytes; doubling the budgets
    took the backward to 255 registers with spills of up to 252 bytes."""
    budget = (1024 if kernel == "fwd" else 512) // (2 if dtype == torch.float64 else 1)
    return gat_tile_config(heads, ch, budget)


def _row_programs(n_dst: int, device: torch.device) -> int:
    """Programs of the backward row pass: at most 8 per SM on a GPU (each strides over rows, so the grad_att
    partials stay [P, H, C] however many rows there are); 4 under the interpreter (cheap, and it runs the row
    loop of a program more than once on small test graphs)."""
    if device.type == "cuda":
        cap = 8 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        cap = 4
    return max(1, min(n_dst, cap))


def gatv2_fwd(xl: Tensor, xr: Tensor, att: Tensor, e_feat: Optional[Tensor], rowptr: Tensor, col: Tensor,
              colptr: Tensor, row_csc: Tensor, csc_to_csr: Tensor, negative_slope: float, dropout: float, seed: int,
              deterministic: bool) -> tuple[Tensor, Tensor, Tensor]:
    """out [N_dst, H, C] (xl's dtype), row_max and row_denom [N_dst, H] (fp32, fp64 for fp64 xl). The CSC arrays
    and `deterministic` are not read: they ride along for the backward."""
    for t in (xl, xr, att, e_feat, rowptr, col):
        check_device(t)
    n_dst, heads, ch = xr.shape
    xl, xr, att = xl.contiguous(), xr.contiguous(), att.contiguous()  # [N_src, H, C], [N_dst, H, C], [H, C]
    rowptr, col = rowptr.contiguous(), col.contiguous()  # [N_dst + 1], [E]
    has_e = e_feat is not None
    e_arg = e_feat.contiguous() if has_e else xr  # [E, H, C]; when absent an unread stand-in (HAS_E guards)
    out = torch.empty((n_dst, heads, ch), dtype=xl.dtype, device=xl.device)  # [N_dst, H, C]
    row_max = torch.empty((n_dst, heads), dtype=stat_dtype(xl.dtype), device=xl.device)  # [N_dst, H]
    row_denom = torch.empty_like(row_max)  # [N_dst, H]
    if n_dst == 0 or heads == 0:
        return out, row_max, row_denom
    seed, keep_thr, keep_scale = dropout_args(dropout, seed, xl.dtype)
    with on_device(xl):
        _gatv2_fwd_kernel[(n_dst,)](
            xl, xr, att, e_arg, rowptr, col, out, row_max, row_denom, float(negative_slope), heads, ch,
            seed, keep_thr, keep_scale, CDT=compute_dtype(xl.dtype), HAS_E=has_e, HAS_DROPOUT=dropout != 0,
            enable_fp_fusion=False, **_tiles(heads, ch, "fwd", xl.dtype))
    return out, row_max, row_denom


def gatv2_bwd(grad_out: Tensor, xl: Tensor, xr: Tensor, att: Tensor, e_feat: Optional[Tensor], rowptr: Tensor,
              col: Tensor, colptr: Tensor, row_csc: Tensor, csc_to_csr: Tensor, out: Tensor, row_max: Tensor,
              row_denom: Tensor, negative_slope: float, dropout: float, seed: int,
              deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """grad_xl [N_src, H, C], grad_xr [N_dst, H, C], grad_att [H, C], grad_e_feat [E, H, C] (an empty [0] tensor
    when e_feat is None). deterministic: row pass + CSC column pass, no atomics; else one row pass with atomics."""
    for t in (grad_out, xl, xr, att, e_feat, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max, row_denom):
        check_device(t)
    n_src, heads, ch = xl.shape
    n_dst = xr.shape[0]
    dev = xl.device
    grad_out, out = grad_out.contiguous(), out.contiguous()  # [N_dst, H, C] each
    xl, xr, att = xl.contiguous(), xr.contiguous(), att.contiguous()  # [N_src, H, C], [N_dst, H, C], [H, C]
    row_max, row_denom = row_max.contiguous(), row_denom.contiguous()  # [N_dst, H] stat dtype
    rowptr, col = rowptr.contiguous(), col.contiguous()  # [N_dst + 1], [E]
    colptr = colptr.contiguous()  # [N_src + 1]
    row_csc, csc_to_csr = row_csc.contiguous(), csc_to_csr.contiguous()  # [E], [E]
    has_e = e_feat is not None
    e_arg = e_feat.contiguous() if has_e else xr  # [E, H, C] or an unread stand-in
    stat = stat_dtype(xl.dtype)
    # Every CSR edge lies in one row, so the row pass writes all of grad_e_feat.
    grad_e = torch.empty(e_feat.shape, dtype=e_feat.dtype, device=dev) if has_e else xl.new_empty((0,))
    grad_xr = torch.empty((n_dst, heads, ch), dtype=xr.dtype, device=dev)  # [N_dst, H, C], every row written
    if heads == 0 or n_dst == 0:
        return (torch.zeros((n_src, heads, ch), dtype=xl.dtype, device=dev), grad_xr,
                torch.zeros((heads, ch), dtype=att.dtype, device=dev), grad_e)
    atomic = not deterministic
    n_prog = _row_programs(n_dst, dev)
    if atomic:
        grad_att_buf = torch.zeros((heads, ch), dtype=stat, device=dev)  # [H, C]
        grad_xl_buf = torch.zeros((n_src, heads, ch), dtype=stat, device=dev)  # [N_src, H, C]
        d_buf = row_max  # unread stand-in
    else:
        grad_att_buf = torch.empty((n_prog, heads, ch), dtype=stat, device=dev)  # [P, H, C], every slot written
        grad_xl_buf = torch.empty((n_src, heads, ch), dtype=xl.dtype, device=dev)  # written by the column pass
        d_buf = torch.empty((n_dst, heads), dtype=stat, device=dev)  # [N_dst, H] D_i
    cfg = _tiles(heads, ch, "bwd", xl.dtype)
    slope, cdt = float(negative_slope), compute_dtype(xl.dtype)
    drop = dropout_args(dropout, seed, xl.dtype)  # seed, keep_thr, keep_scale
    has_drop = dropout != 0
    with on_device(xl):
        _gatv2_bwd_rows_kernel[(n_prog,)](
            grad_out, xl, xr, att, e_arg, rowptr, col, out, row_max, row_denom, d_buf, grad_xr,
            grad_e if has_e else grad_xr, grad_att_buf, grad_xl_buf, slope, n_dst, heads, ch, *drop,
            CDT=cdt, HAS_E=has_e, HAS_DROPOUT=has_drop, ATOMIC=atomic, enable_fp_fusion=False, **cfg)
        if not atomic and n_src > 0:
            # Same stream: ordered after the row pass that wrote D.
            _gatv2_bwd_cols_kernel[(n_src,)](
                grad_out, xl, xr, att, e_arg, colptr, row_csc, csc_to_csr, row_max, row_denom, d_buf, grad_xl_buf,
                slope, heads, ch, *drop, CDT=cdt, HAS_E=has_e, HAS_DROPOUT=has_drop, enable_fp_fusion=False,
                **cfg)
    if atomic:
        grad_att = grad_att_buf.to(att.dtype)
    else:
        grad_att = grad_att_buf.sum(0).to(att.dtype)  # a fixed-order reduction over the P partials
    return grad_xl_buf.to(xl.dtype), grad_xr, grad_att, grad_e
