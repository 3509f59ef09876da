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


def _scores(s_src, s_dst, e_score, col, dst):
    pre = s_src[col].to(_stat(s_src)) + s_dst[dst].to(_stat(s_src))
    if e_score is not None:
        pre = pre + e_score.to(pre.dtype)
    return pre  # [E, H]


def gat_fwd_ref(h: Tensor, s_src: Tensor, s_dst: Tensor, e_score: Optional[Tensor], rowptr: Tensor, col: Tensor,
                colptr: Tensor, row_csc: Tensor, csc_to_csr: Tensor, negative_slope: float,
                deterministic: bool):
    n_dst, heads, ch = s_dst.shape[0], h.shape[1], h.shape[2]
    st = _stat(h)
    col = col.long()
    dst = csr_rows(rowptr, col.numel())
    e = torch.nn.functional.leaky_relu(_scores(s_src, s_dst, e_score, col, dst), negative_slope)
    idx = dst[:, None].expand(-1, heads)
    row_max = torch.full((n_dst, heads), float("-inf"), dtype=st, device=h.device)
    row_max = row_max.scatter_reduce(0, idx, e, "amax", include_self=True)
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)  # rows without edges
    w = torch.exp(e - row_max[dst])
    denom = torch.zeros((n_dst, heads), dtype=st, device=h.device).index_add_(0, dst, w)
    alpha = w / denom[dst]
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
                row_max: Tensor, row_denom: Tensor, negative_slope: float, deterministic: bool):
    """d/dh, d/ds_src, d/ds_dst, d/de_score of sum(grad_out * out). With D_i = <grad_out_i, out_i> (per head):
    d e_ij = alpha_ij * (<grad_out_i, h_j> - D_i), then through the LeakyReLU (slope where its input is <= 0)."""
    st = _stat(h)
    col = col.long()
    dst = csr_rows(rowptr, col.numel())
    go = grad_out.to(st)
    alpha = gat_attention_ref(s_src, s_dst, e_score, rowptr, col, row_max, row_denom, negative_slope)
    d_alpha = (go[dst] * h[col].to(st)).sum(-1)  # [E, H]
    d_row = (go * out.to(st)).sum(-1)  # [N_dst, H]
    pre = _scores(s_src, s_dst, e_score, col, dst)
    slope = torch.where(pre > 0, torch.ones_like(pre), torch.full_like(pre, negative_slope))  # in st, not fp32
    g_pre = alpha * (d_alpha - d_row[dst]) * slope
    g_s_dst = torch.zeros(s_dst.shape, dtype=st, device=h.device).index_add_(0, dst, g_pre)
    g_s_src = torch.zeros(s_src.shape, dtype=st, device=h.device).index_add_(0, col, g_pre)
    g_h = torch.zeros(h.shape, dtype=st, device=h.device).index_add_(0, col, alpha[..., None] * go[dst])
    g_e = g_pre.to(e_score.dtype) if e_score is not None else h.new_empty((0,))
    return g_h.to(h.dtype), g_s_src.to(s_src.dtype), g_s_dst.to(s_dst.dtype), g_e
