"""pyunlearn.nn.GATv2Conv: a drop-in for torch_geometric.nn.GATv2Conv on the fused GATv2 op.

Same constructor and forward signatures and the same parameter names (lin_l, lin_r, att, lin_edge, res, bias), so
`load_state_dict(pyg_layer.state_dict())` reproduces PyG's outputs and gradients. The attention (per-edge logits,
segment softmax, weighted aggregation, and its backward) runs in one fused op per direction that never
materialises [E, H, C] (only the edge features lin_edge(edge_attr), an input of that size, exist).
torch_geometric is not a dependency.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from pyunlearn.nn._gat_common import GraphAttentionBase, check_layer_args, glorot_, glorot_linear, reset_linear
from pyunlearn.ops.gatv2 import gatv2_attention, gatv2_attention_weights


class GATv2Conv(GraphAttentionBase):
    """GATv2 layer (Brody et al. 2022, "How Attentive are Graph Attention Networks?") with PyG GATv2Conv's
    interface: out[i] = sum_j alpha_ij lin_l(x_j), alpha = softmax_j(att . leaky_relu(lin_l(x_j) + lin_r(x_i)
    (+ lin_edge(e_ij)))).

    Supported: in_channels int or (src, dst) tuple, out_channels, heads, concat, negative_slope, dropout (attention
    dropout in training: seeded in-kernel keep decisions, reproducible under torch.manual_seed but not PyG's
    pattern), add_self_loops, edge_dim, fill_value (float, Tensor or 'mean'|'add'|'sum'|'max'|'min'|'mul'), bias
    (lin_l/lin_r biases and the output bias, as PyG), share_weights, residual, return_attention_weights (detached
    weights). Extra keywords: deterministic (default True): the backward without atomics; size=(N_src, N_dst)
    (forward, keyword-only; PyG's GATv2Conv takes the sizes from x). Not supported (clear errors): SparseTensor
    adjacency, x = (x_src, None), lazy in_channels=-1, PyG MessagePassing keyword options.
    """

    def __init__(self, in_channels: Union[int, tuple[int, int]], out_channels: int, heads: int = 1,
                 concat: bool = True, negative_slope: float = 0.2, dropout: float = 0.0, add_self_loops: bool = True,
                 edge_dim: Optional[int] = None, fill_value: Union[float, Tensor, str] = "mean", bias: bool = True,
                 share_weights: bool = False, residual: bool = False, *, deterministic: bool = True, **kwargs):
        super().__init__()
        check_layer_args("GATv2Conv", in_channels, out_channels, heads, fill_value, kwargs)
        src_in, dst_in = (in_channels, in_channels) if isinstance(in_channels, int) else tuple(in_channels)
        if share_weights and src_in != dst_in:
            raise ValueError(f"share_weights=True applies one lin to sources and destinations: in_channels must "
                             f"agree, got {in_channels!r}")
        self.in_channels, self.out_channels, self.heads, self.concat = in_channels, out_channels, heads, concat
        self.negative_slope, self.dropout, self.add_self_loops = negative_slope, dropout, add_self_loops
        self.edge_dim, self.fill_value, self.residual = edge_dim, fill_value, residual
        self.share_weights, self.deterministic = share_weights, deterministic
        hc = heads * out_channels
        # As PyG: lin_l (sources, also the messages) and lin_r (destinations) carry a bias when `bias` is set;
        # with share_weights lin_r IS lin_l (both names appear in the state_dict, as in PyG's).
        self.lin_l = glorot_linear(src_in, hc, bias=bias)
        self.lin_r = self.lin_l if share_weights else glorot_linear(dst_in, hc, bias=bias)
        self.att = nn.Parameter(torch.empty(1, heads, out_channels))
        self.lin_edge = glorot_linear(edge_dim, hc) if edge_dim is not None else None
        total = hc if concat else out_channels
        if residual:
            self.res = glorot_linear(dst_in, total)
        else:
            self.register_parameter("res", None)
        if bias:
            self.bias = nn.Parameter(torch.zeros(total))
        else:
            self.register_parameter("bias", None)
        self._init_graph_cache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.lin_l, self.lin_r, self.lin_edge, self.res):
            if lin is not None:
                reset_linear(lin)
        glorot_(self.att.data)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Union[Tensor, tuple[Tensor, Optional[Tensor]]], edge_index: Tensor,
                edge_attr: Optional[Tensor] = None, return_attention_weights: Optional[bool] = None, *,
                size: Optional[tuple[int, int]] = None):
        H, C = self.heads, self.out_channels
        self._check_edge_index_arg(edge_index)
        if isinstance(x, Tensor):
            if x.dim() != 2:
                raise ValueError(f"x must be [N, F], got shape {list(x.shape)}")
            res = self.res(x) if self.res is not None else None
            x_l = self.lin_l(x).view(-1, H, C)
            x_r = x_l if self.share_weights else self.lin_r(x).view(-1, H, C)
        else:
            x_src, x_dst = x
            if x_dst is None:
                raise ValueError("x = (x_src, None) is not supported: give destination features")
            if x_src.dim() != 2 or x_dst.dim() != 2:
                raise ValueError(f"x must be a pair of [N, F] tensors, got shapes {list(x_src.shape)} and "
                                 f"{list(x_dst.shape)}")
            res = self.res(x_dst) if self.res is not None else None
            x_l, x_r = self.lin_l(x_src).view(-1, H, C), self.lin_r(x_dst).view(-1, H, C)
        if x_l.device != edge_index.device:
            raise ValueError(f"edge_index must be on x's device {x_l.device}, got {edge_index.device}")
        num_src, num_dst = (x_l.size(0), x_r.size(0)) if size is None else size
        graph = self._graph_for(edge_index, num_src, num_dst)
        e_feat = None
        if edge_attr is not None:
            if self.lin_edge is None:
                raise ValueError("edge_attr was given but the layer has no edge_dim (construct it with edge_dim=D)")
            if graph.col.numel() > 0:
                e_feat = self.lin_edge(self._loop_edge_attr(edge_attr, graph)).view(-1, H, C)[graph.perm]
        att = self.att.view(H, C)
        p, seed = self._dropout_seed()
        out, row_max, row_denom = gatv2_attention(x_l, x_r, att, graph, e_feat, negative_slope=self.negative_slope,
                                                  dropout=p, seed=seed, deterministic=self.deterministic,
                                                  return_stats=True)
        out = self._finish(out, res)
        if return_attention_weights:
            alpha = gatv2_attention_weights(x_l.detach(), x_r.detach(), att.detach(), graph, row_max, row_denom,
                                            None if e_feat is None else e_feat.detach(),
                                            negative_slope=self.negative_slope, dropout=p, seed=seed)
            return out, (graph.edge_index, alpha)
        return out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads})"
