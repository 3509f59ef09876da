"""Fused graph attention: graph preparation (CSR by destination + CSC by source, cached by callers) and the
differentiable attention op over it.

    graph = gat_graph(edge_index, num_src, num_dst, add_self_loops=True)
    out = gat_attention(h, s_src, s_dst, graph)          # [N_dst, H, C]

Per edge j -> i and head: e = leaky_relu(s_src[j] + s_dst[i] (+ e_score), slope); alpha = softmax over the edges
into i; out[i] = sum_j alpha * h[j]. s_src/s_dst are the per-node halves of GAT's attention logit
((h * a_src).sum(-1)), computed by the caller so autograd reaches a_src/a_dst through plain torch ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from pyunlearn.reference.gat import dropout_scale, gat_attention_ref


@dataclass(frozen=True)
class GatGraph:
    """A graph laid out for the kernels. Edge e of the CSR is edge perm[e] of `edge_index` (the edges the layer
    attends over, self-loops included, in PyG's order: kept input edges, then one loop per node)."""

    rowptr: Tensor  # [N_dst + 1]
    col: Tensor  # [E] source of each edge, grouped by destination
    colptr: Tensor  # [N_src + 1]
    row_csc: Tensor  # [E] destination of each edge, grouped by source
    csc_to_csr: Tensor  # [E] CSR position of each CSC edge
    perm: Tensor  # [E] int64: index into edge_index of each CSR edge
    edge_index: Tensor  # [2, E] int64, the edges attended over (PyG order)
    loop_of_edge: Optional[Tensor]  # [E] int64: input edge id of each edge_index column, -1 for added loops
    num_src: int
    num_dst: int


def _check_edge_index(edge_index: Tensor, num_src: int, num_dst: int) -> None:
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index must be a Tensor [2, E], got {type(edge_index).__name__}")
    if edge_index.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"edge_index must be int32 or int64, got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {list(edge_index.shape)}")
    if edge_index.numel():
        lo_s, hi_s = (int(v) for v in torch.aminmax(edge_index[0]))
        lo_d, hi_d = (int(v) for v in torch.aminmax(edge_index[1]))
        if lo_s < 0 or hi_s >= num_src:
            raise IndexError(f"edge_index[0] (sources) must lie in [0, {num_src}), got values in [{lo_s}, {hi_s}]")
        if lo_d < 0 or hi_d >= num_dst:
            raise IndexError(f"edge_index[1] (destinations) must lie in [0, {num_dst}), got values in "
                             f"[{lo_d}, {hi_d}]")


def gat_graph(edge_index: Tensor, num_src: int, num_dst: Optional[int] = None, *, add_self_loops: bool = False,
              index_dtype: Optional[torch.dtype] = None) -> GatGraph:
    """CSR/CSC of `edge_index` ([2, E]: row 0 sources, row 1 destinations, PyG's flow). With add_self_loops,
    existing self-loops are removed and one loop is appended for each node 0..min(num_src, num_dst)-1 (as PyG's
    GATConv does); duplicate edges are kept (each counts in the softmax, as in PyG). index_dtype: int32 or int64
    for the kernels (default: edge_index's)."""
    num_dst = num_src if num_dst is None else num_dst
    _check_edge_index(edge_index, num_src, num_dst)
    index_dtype = index_dtype or edge_index.dtype
    if index_dtype not in (torch.int32, torch.int64):
        raise TypeError(f"index_dtype must be torch.int32 or torch.int64, got {index_dtype}")
    dev = edge_index.device
    ei = edge_index.long()
    loop_of_edge = None
    if add_self_loops:
        keep = (ei[0] != ei[1]).nonzero().squeeze(1)
        loops = torch.arange(min(num_src, num_dst), device=dev)
        ei = torch.cat([ei[:, keep], torch.stack([loops, loops])], dim=1)
        loop_of_edge = torch.cat([keep, torch.full((loops.numel(),), -1, dtype=torch.long, device=dev)])
    src, dst = ei[0], ei[1]
    perm = torch.argsort(dst, stable=True)
    col = src[perm]
    rowptr = torch.zeros(num_dst + 1, dtype=torch.long, device=dev)
    rowptr[1:] = torch.cumsum(torch.bincount(dst, minlength=num_dst), 0)
    csc_to_csr = torch.argsort(col, stable=True)
    row_csc = dst[perm][csc_to_csr]
    colptr = torch.zeros(num_src + 1, dtype=torch.long, device=dev)
    colptr[1:] = torch.cumsum(torch.bincount(col, minlength=num_src), 0)
    cast = (lambda t: t.to(index_dtype).contiguous())
    return GatGraph(cast(rowptr), cast(col), cast(colptr), cast(row_csc), cast(csc_to_csr), perm, ei, loop_of_edge,
                    num_src, num_dst)


def _setup_context(ctx, inputs, output):
    h, s_src, s_dst, e_score, rowptr, col, colptr, row_csc, csc_to_csr, slope, dropout, seed, deterministic = inputs
    out, row_max, row_denom = output
    ctx.mark_non_differentiable(row_max, row_denom)
    ctx.save_for_backward(h, s_src, s_dst, e_score, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max,
                          row_denom)
    ctx.slope, ctx.dropout, ctx.seed, ctx.deterministic = slope, dropout, seed, deterministic


def _backward(ctx, grad_out, _grad_max, _grad_denom):
    h, s_src, s_dst, e_score, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max, row_denom = ctx.saved_tensors
    g_h, g_src, g_dst, g_e = torch.ops.pyunlearn.gat_bwd(
        grad_out.contiguous(), h, s_src, s_dst, e_score, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max,
        row_denom, ctx.slope, ctx.dropout, ctx.seed, ctx.deterministic)
    return (g_h, g_src, g_dst, (g_e if e_score is not None else None)) + (None,) * 9


torch.library.register_autograd("pyunlearn::gat_fwd", _backward, setup_context=_setup_context)


def _check_attention_inputs(h: Tensor, s_src: Tensor, s_dst: Tensor, e_score: Optional[Tensor], graph: GatGraph):
    if not h.is_floating_point() or h.dim() != 3:
        raise ValueError(f"h must be a floating-point [N_src, H, C] tensor, got {h.dtype} {list(h.shape)}")
    n_src, heads, _ = h.shape
    if n_src != graph.num_src:
        raise ValueError(f"h must have graph.num_src = {graph.num_src} rows, got {n_src}")
    for name, t, n in (("s_src", s_src, graph.num_src), ("s_dst", s_dst, graph.num_dst)):
        if t.shape != (n, heads):
            raise ValueError(f"{name} must have shape [{n}, {heads}] (nodes, heads), got {list(t.shape)}")
        if t.dtype != h.dtype or t.device != h.device:
            raise ValueError(f"{name} must match h's dtype {h.dtype} and device {h.device}, got {t.dtype} on "
                             f"{t.device}")
    if graph.rowptr.device != h.device:
        raise ValueError(f"graph must be on h's device {h.device}, got {graph.rowptr.device}")
    if e_score is not None and (e_score.shape != (graph.col.numel(), heads) or e_score.dtype != h.dtype):
        raise ValueError(f"e_score must be a {h.dtype} [{graph.col.numel()}, {heads}] tensor in CSR edge order, "
                         f"got {e_score.dtype} {list(e_score.shape)}")


def gat_attention(h: Tensor, s_src: Tensor, s_dst: Tensor, graph: GatGraph, e_score: Optional[Tensor] = None, *,
                  negative_slope: float = 0.2, dropout: float = 0.0, seed: int = 0, deterministic: bool = True,
                  return_stats: bool = False):
    """out [N_dst, H, C] (and, with return_stats, row_max and row_denom [N_dst, H] for attention weights).
    dropout: attention dropout probability; `seed` picks the (reproducible, backend-independent) keep pattern."""
    _check_attention_inputs(h, s_src, s_dst, e_score, graph)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    out, row_max, row_denom = torch.ops.pyunlearn.gat_fwd(
        h.contiguous(), s_src.contiguous(), s_dst.contiguous(), None if e_score is None else e_score.contiguous(),
        graph.rowptr, graph.col, graph.colptr, graph.row_csc, graph.csc_to_csr, float(negative_slope),
        float(dropout), int(seed), bool(deterministic))
    return (out, row_max, row_denom) if return_stats else out


def attention_weights(s_src: Tensor, s_dst: Tensor, graph: GatGraph, row_max: Tensor, row_denom: Tensor,
                      e_score: Optional[Tensor] = None, *, negative_slope: float = 0.2, dropout: float = 0.0,
                      seed: int = 0) -> Tensor:
    """alpha [E, H] in graph.edge_index order (PyG's), from the forward's saved row statistics, after the same
    attention dropout as the forward: one gather pass over [E, H], detached (the layer's gradients flow through
    its output, not through these weights)."""
    with torch.no_grad():
        alpha_csr = gat_attention_ref(s_src, s_dst, e_score, graph.rowptr, graph.col, row_max, row_denom,
                                      negative_slope)
        m = dropout_scale(seed, dropout, graph.col.numel(), s_src.shape[1], alpha_csr.device, alpha_csr.dtype)
        if m is not None:
            alpha_csr = alpha_csr * m
        alpha = torch.empty_like(alpha_csr)
        alpha[graph.perm] = alpha_csr
        return alpha.to(s_src.dtype)
