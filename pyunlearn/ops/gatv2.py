"""Fused GATv2 attention (Brody et al. 2022) over a GatGraph, differentiable in every tensor input.

    graph = gat_graph(edge_index, num_src, num_dst, add_self_loops=True)
    out = gatv2_attention(xl, xr, att, graph)          # [N_dst, H, C]

Per edge j -> i and head: z = xl[j] + xr[i] (+ e_feat[edge]); s = att . leaky_relu(z, slope); alpha = softmax of s
over the edges into i; out[i] = sum_j alpha * xl[j]. Unlike GAT v1 the logit is not separable per node, so att
goes into the op (and gets its gradient from it) instead of being folded into per-node scores by the caller.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from pyunlearn.ops.gat import GatGraph
from pyunlearn.reference.gat import dropout_scale, gatv2_attention_ref


def _setup_context(ctx, inputs, output):
    xl, xr, att, e_feat, rowptr, col, colptr, row_csc, csc_to_csr, slope, dropout, seed, deterministic = inputs
    out, row_max, row_denom = output
    ctx.mark_non_differentiable(row_max, row_denom)
    ctx.save_for_backward(xl, xr, att, e_feat, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max, row_denom)
    ctx.slope, ctx.dropout, ctx.seed, ctx.deterministic = slope, dropout, seed, deterministic


def _backward(ctx, grad_out, _grad_max, _grad_denom):
    xl, xr, att, e_feat, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max, row_denom = ctx.saved_tensors
    g_xl, g_xr, g_att, g_e = torch.ops.pyunlearn.gatv2_bwd(
        grad_out.contiguous(), xl, xr, att, e_feat, rowptr, col, colptr, row_csc, csc_to_csr, out, row_max,
        row_denom, ctx.slope, ctx.dropout, ctx.seed, ctx.deterministic)
    return (g_xl, g_xr, g_att, (g_e if e_feat is not None else None)) + (None,) * 9


torch.library.register_autograd("pyunlearn::gatv2_fwd", _backward, setup_context=_setup_context)


def _check_feature(name: str, t, shape: tuple, dims: str, ref: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a Tensor {dims}, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)} {dims}, got {list(t.shape)}")
    if t.dtype != ref.dtype or t.device != ref.device:
        raise ValueError(f"{name} must match xl's dtype {ref.dtype} and device {ref.device}, got {t.dtype} on "
                         f"{t.device}")


def _check_inputs(xl: Tensor, xr: Tensor, att: Tensor, e_feat: Optional[Tensor], graph: GatGraph) -> None:
    if not isinstance(graph, GatGraph):
        raise TypeError(f"graph must be a GatGraph (pyunlearn.ops.gat_graph), got {type(graph).__name__}")
    if not isinstance(xl, Tensor) or not xl.is_floating_point() or xl.dim() != 3:
        got = f"{xl.dtype} {list(xl.shape)}" if isinstance(xl, Tensor) else type(xl).__name__
        raise ValueError(f"xl must be a floating-point [N_src, H, C] tensor, got {got}")
    n_src, heads, ch = xl.shape
    if n_src != graph.num_src:
        raise ValueError(f"xl must have graph.num_src = {graph.num_src} rows, got {n_src}")
    _check_feature("xr", xr, (graph.num_dst, heads, ch), "[N_dst, H, C]", xl)
    _check_feature("att", att, (heads, ch), "[H, C]", xl)
    if e_feat is not None:
        _check_feature("e_feat", e_feat, (graph.col.numel(), heads, ch), "[E, H, C] (CSR edge order)", xl)
    if graph.rowptr.device != xl.device:
        raise ValueError(f"graph must be on xl's device {xl.device}, got {graph.rowptr.device}")


def _check_dropout_seed(dropout: float, seed: int) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")


def gatv2_attention(xl: Tensor, xr: Tensor, att: Tensor, graph: GatGraph, e_feat: Optional[Tensor] = None, *,
                    negative_slope: float = 0.2, dropout: float = 0.0, seed: int = 0, deterministic: bool = True,
                    return_stats: bool = False):
    """out [N_dst, H, C] (and, with return_stats, row_max and row_denom [N_dst, H] for attention weights).

    xl [N_src, H, C]: source features, both in the logit and as the messages; xr [N_dst, H, C]: destination
    features; att [H, C]; e_feat [E, H, C] (edge features in graph's CSR order, e.g. lin_edge(edge_attr)[perm]) or
    None. dropout: attention dropout probability; `seed` picks the (reproducible, backend-independent) keep
    pattern. deterministic=False lets GPU backends use atomics in the backward."""
    _check_inputs(xl, xr, att, e_feat, graph)
    _check_dropout_seed(dropout, seed)
    out, row_max, row_denom = torch.ops.pyunlearn.gatv2_fwd(
        xl.contiguous(), xr.contiguous(), att.contiguous(), None if e_feat is None else e_feat.contiguous(),
        graph.rowptr, graph.col, graph.colptr, graph.row_csc, graph.csc_to_csr, float(negative_slope),
        float(dropout), int(seed), bool(deterministic))
    return (out, row_max, row_denom) if return_stats else out


def gatv2_attention_weights(xl: Tensor, xr: Tensor, att: Tensor, graph: GatGraph, row_max: Tensor,
                            row_denom: Tensor, e_feat: Optional[Tensor] = None, *, negative_slope: float = 0.2,
                            dropout: float = 0.0, seed: int = 0) -> Tensor:
    """alpha [E, H] in graph.edge_index order (PyG's), from the forward's saved row statistics, after the same
    attention dropout as the forward; detached (the layer's gradients flow through its output). It recomputes
    the logits with the reference twin, which holds [E, H, C] temporaries: a diagnostics path, not the hot one."""
    _check_inputs(xl, xr, att, e_feat, graph)
    _check_dropout_seed(dropout, seed)
    with torch.no_grad():
        alpha_csr = gatv2_attention_ref(xl, xr, att, e_feat, graph.rowptr, graph.col, row_max, row_denom,
                                        negative_slope)
        m = dropout_scale(seed, dropout, graph.col.numel(), xl.shape[1], alpha_csr.device, alpha_csr.dtype)
        if m is not None:
            alpha_csr = alpha_csr * m
        alpha = torch.empty_like(alpha_csr)
        alpha[graph.perm] = alpha_csr
        return alpha.to(xl.dtype)
