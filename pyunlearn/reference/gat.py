"""Reference twins of the fused graph-attention ops (same signatures as torch.ops.pyunlearn.gat_*).

Plain PyTorch over per-edge tensors: gathers, scatter-max, index_add. They materialise [E, H, C] products,
which the kernels never do; they define the semantics. Statistics and sums run in fp32 (fp64 for fp64 inputs).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _stat(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def csr_rows(rowptr: Tensor, n_edges: int) -> Tensor:
    """Destination row of every CSR edge: [E] int64."""
    counts = rowptr[1:].long() - rowptr[:-1].long()
    return torch.repeat_interleave(torch.arange(counts.numel(), device=rowptr.device), counts,
                                   output_size=n_edges)


_M64 = (1 << 64) - 1


def _wrap(x: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    return x - (1 << 64) if x >= 1 << 63 else x


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic on int64)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def dropout_u(seed: int, counter: Tensor) -> Tensor:
    """u in [0, 1) per counter: splitmix64(seed, counter), top 24 bits, as csrc/graph_attention/gat.h. int64
    arithmetic wraps like uint64, so the bits are the same."""
    z = _wrap(seed & _M64) + (counter + 1) * _wrap(0x9E3779B97F4A7C15)
    z = (z ^ _shr(z, 30)) * _wrap(0xBF58476D1CE4E5B9)
    z = (z ^ _shr(z, 27)) * _wrap(0x94D049BB133111EB)
    z = z ^ _shr(z, 31)
    return _shr(z, 40).to(torch.float32) * (1.0 / 16777216.0)


def dropout_scale(seed: int, p: float, n_edges: int, heads: int, device, dtype) -> Optional[Tensor]:
    """m [E, H]: keep / (1 - p) per CSR edge and head, or None when p == 0."""
    if p == 0:
        return None
    counter = torch.arange(n_edges * heads, device=device, dtype=torch.int64).view(n_edges, heads)
    keep = dropout_u(seed, counter) >= p
    return keep.to(dtype) / (1.0 - p)


def _scores(s_src, s_dst, e_score, col, dst):
    pre = s_src[col].to(_stat(s_src)) + s_dst[dst].to(_stat(s_src))
    if e_score is not None:
        pre = pre + e_score.to(pre.dtype)
    return pre  # [E, H]


def gat_fwd_ref(h: Tensor, s_src: Tensor, s_dst: Tensor, e_score: Optional[Tensor], rowptr: Tensor, col: Tensor,
                colptr: Tensor, row_csc: Tensor, csc_to_csr: Tensor, negative_slope: float, dropout: float,
                seed: int, deterministic: bool):
    col = col.long()
    dst = csr_rows(rowptr, col.numel())
    e = torch.nn.functional.leaky_relu(_scores(s_src, s_dst, e_score, col, dst), negative_slope)
    return _softmax_aggregate(e, h, col, dst, s_dst.shape[0], dropout, seed)


def _softmax_aggregate(e: Tensor, h: Tensor, col: Tensor, dst: Tensor, n_dst: int, dropout: float, seed: int):
    """The shared tail of both forwards: per-row softmax of the scores e [E, H] (in the statistics dtype), the
    seeded dropout, out[i] = sum alpha * h[col]; returns (out in h's dtype, row_max, row_denom)."""
    heads, ch = h.shape[1], h.shape[2]
    st = _stat(h)
    idx = dst[:, None].expand(-1, heads)
    row_max = torch.full((n_dst, heads), float("-inf"), dtype=st, device=h.device)
    row_max = row_max.scatter_reduce(0, idx, e, "amax", include_self=True)
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)  # rows without edges
    w = torch.exp(e - row_max[dst])
    denom = torch.zeros((n_dst, heads), dtype=st, device=h.device).index_add_(0, dst, w)
    alpha = w / denom[dst]
    m = dropout_scale(seed, dropout, col.numel(), heads, h.device, st)
    if m is not None:
        alpha = alpha * m
    out = torch.zeros((n_dst, heads, ch), dtype=st, device=h.device)
    out.index_add_(0, dst, alpha[..., None] * h[col].to(st))
    return out.to(h.dtype), row_max, denom


def gat_attention_ref(s_src: Tensor, s_dst: Tensor, e_score: Optional[Tensor], rowptr: Tensor, col: Tensor,
                      row_max: Tensor, row_denom: Tensor, negative_slope: float) -> Tensor:
    """alpha [E, H] in CSR order, recomputed from the saved row statistics (what the kernels do too)."""
    col = col.long()
    dst = csr_rows(rowptr, col.numel())
    e = torch.nn.functional.leaky_relu(_scores(s_src, s_dst, e_score, col, dst), negative_slope)
    return torch.exp(e - row_max[dst]) / row_denom[dst]


def gat_bwd_ref(grad_out: Tensor, h: Tensor, s_src: Tensor, s_dst: Tensor, e_score: Optional[Tensor],
                rowptr: Tensor, col: Tensor, colptr: Tensor, row_csc: Tensor, csc_to_csr: Tensor, out: Tensor,
                row_max: Tensor, row_denom: Tensor, negative_slope: float, dropout: float, seed: int,
                deterministic: bool):
    """d/dh, d/ds_src, d/ds_dst, d/de_score of sum(grad_out * out). With D_i = <grad_out_i, out_i> (per head) and
    m the dropout scale (1 without dropout): d e_ij = alpha_ij * (m_ij <grad_out_i, h_j> - D_i), then through the
    LeakyReLU (slope where its input is <= 0); grad_h[j] += alpha_ij m_ij grad_out[i]."""
    st = _stat(h)
    col = col.long()
    dst = csr_rows(rowptr, col.numel())
    go = grad_out.to(st)
    alpha = gat_attention_ref(s_src, s_dst, e_score, rowptr, col, row_max, row_denom, negative_slope)
    m = dropout_scale(seed, dropout, col.numel(), h.shape[1], h.device, st)
    d_alpha = (go[dst] * h[col].to(st)).sum(-1)  # [E, H]
    if m is not None:
        d_alpha = d_alpha * m
    d_row = (go * out.to(st)).sum(-1)  # [N_dst, H]
    pre = _scores(s_src, s_dst, e_score, col, dst)
    slope = torch.where(pre > 0, torch.ones_like(pre), torch.full_like(pre, negative_slope))  # in st, not fp32
    g_pre = alpha * (d_alpha - d_row[dst]) * slope
    g_s_dst = torch.zeros(s_dst.shape, dtype=st, device=h.device).index_add_(0, dst, g_pre)
    g_s_src = torch.zeros(s_src.shape, dtype=st, device=h.device).index_add_(0, col, g_pre)
    a_m = alpha if m is None else alpha * m
    g_h = torch.zeros(h.shape, dtype=st, device=h.device).index_add_(0, col, a_m[..., None] * go[dst])
    g_e = g_pre.to(e_score.dtype) if e_score is not None else h.new_empty((0,))
    return g_h.to(h.dtype), g_s_src.to(s_src.dtype), g_s_dst.to(s_dst.dtype), g_e


# --- GATv2 -------------------------------------------------------------------------------------------------------

def _v2_pre(xl, xr, e_feat, col, dst):
    """z [E, H, C] = xl[j] + xr[i] (+ e_feat) in the statistics dtype."""
    st = _stat(xl)
    z = xl[col].to(st) + xr[dst].to(st)
    return z if e_feat is None else z + e_feat.to(st)


def gatv2_scores_ref(xl: Tensor, xr: Tensor, att: Tensor, e_feat: Optional[Tensor], rowptr: Tensor, col: Tensor,
                     negative_slope: float) -> Tensor:
    """s [E, H] in CSR order: att . leaky_relu(xl[j] + xr[i] (+ e_feat))."""
    col = col.long()
    dst = csr_rows(rowptr, col.numel())
    z = torch.nn.functional.leaky_relu(_v2_pre(xl, xr, e_feat, col, dst), negative_slope)
    return (z * att.to(z.dtype)).sum(-1)


def gatv2_attention_ref(xl: Tensor, xr: Tensor, att: Tensor, e_feat: Optional[Tensor], rowptr: Tensor, col: Tensor,
                        row_max: Tensor, row_denom: Tensor, negative_slope: float) -> Tensor:
    """alpha [E, H] in CSR order from the saved row statistics."""
    dst = csr_rows(rowptr, col.numel())
    s = gatv2_scores_ref(xl, xr, att, e_feat, rowptr, col, negative_slope)
    return torch.exp(s - row_max[dst]) / row_denom[dst]


def gatv2_fwd_ref(xl: Tensor, xr: Tensor, att: Tensor, e_feat: Optional[Tensor], rowptr: Tensor, col: Tensor,
                  colptr: Tensor, row_csc: Tensor, csc_to_csr: Tensor, negative_slope: float, dropout: float,
                  seed: int, deterministic: bool):
    col = col.long()
    dst = csr_rows(rowptr, col.numel())
    s = gatv2_scores_ref(xl, xr, att, e_feat, rowptr, col, negative_slope)
    return _softmax_aggregate(s, xl, col, dst, xr.shape[0], dropout, seed)


def gatv2_bwd_ref(grad_out: Tensor, xl: Tensor, xr: Tensor, att: Tensor, e_feat: Optional[Tensor], rowptr: Tensor,
                  col: Tensor, colptr: Tensor, row_csc: Tensor, csc_to_csr: Tensor, out: Tensor, row_max: Tensor,
                  row_denom: Tensor, negative_slope: float, dropout: float, seed: int, deterministic: bool):
    """With D_i = <grad_out_i, out_i> per head and m the dropout scale: g_s = alpha (m <grad_out_i, xl_j> - D_i);
    g_z = g_s * att * leaky_relu'(z) (slope where z <= 0); grad_xr[i] = sum_row g_z; grad_e_feat = g_z;
    grad_att = sum_e g_s * leaky_relu(z); grad_xl[j] = sum_out-edges (alpha m grad_out_i + g_z)."""
    st = _stat(xl)
    col = col.long()
    dst = csr_rows(rowptr, col.numel())
    go = grad_out.to(st)
    alpha = gatv2_attention_ref(xl, xr, att, e_feat, rowptr, col, row_max, row_denom, negative_slope)
    m = dropout_scale(seed, dropout, col.numel(), xl.shape[1], xl.device, st)
    d_alpha = (go[dst] * xl[col].to(st)).sum(-1)  # [E, H]
    if m is not None:
        d_alpha = d_alpha * m
    d_row = (go * out.to(st)).sum(-1)  # [N_dst, H]
    g_s = alpha * (d_alpha - d_row[dst])  # [E, H]
    z = _v2_pre(xl, xr, e_feat, col, dst)
    slope = torch.where(z > 0, torch.ones_like(z), torch.full_like(z, negative_slope))
    g_z = g_s[..., None] * att.to(st) * slope  # [E, H, C]
    g_att = (g_s[..., None] * torch.nn.functional.leaky_relu(z, negative_slope)).sum(0)
    g_xr = torch.zeros(xr.shape, dtype=st, device=xl.device).index_add_(0, dst, g_z)
    a_m = alpha if m is None else alpha * m
    g_xl = torch.zeros(xl.shape, dtype=st, device=xl.device).index_add_(0, col, a_m[..., None] * go[dst] + g_z)
    g_e = g_z.to(e_feat.dtype) if e_feat is not None else xl.new_empty((0,))
    return g_xl.to(xl.dtype), g_xr.to(xr.dtype), g_att.to(att.dtype), g_e
