"""pyunlearn.nn.GATConv: a drop-in for torch_geometric.nn.GATConv on the fused graph-attention op.

Same constructor and forward signatures and the same parameter names (lin / lin_src + lin_dst, att_src, att_dst,
lin_edge + att_edge, res, bias), so `load_state_dict(pyg_layer.state_dict())` reproduces PyG's outputs and
gradients. The attention itself (scores, segment softmax, weighted aggregation, and its backward) runs in one
fused op per direction that never materialises [E, H, C]. torch_geometric is not a dependency.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from pyunlearn.nn._gat_common import GraphAttentionBase, check_layer_args, glorot_, glorot_linear
from pyunlearn.ops.gat import GatGraph, attention_weights, gat_attention


class GATConv(GraphAttentionBase):
    """Graph attention layer (Veličković et al. 2018) with PyG GATConv's interface.

    Supported: in_channels int or (src, dst) tuple, out_channels, heads, concat, negative_slope, dropout (attention
    dropout in training: seeded in-kernel keep decisions, reproducible under torch.manual_seed but not PyG's
    pattern), add_self_loops, edge_dim, fill_value (float, Tensor or 'mean'|'add'|'sum'|'max'|'min'|'mul'), bias,
    residual, return_attention_weights (detached weights), size. Extra keyword: deterministic (default True): the
    backward without atomics. Not supported (clear errors): SparseTensor adjacency, x_dst = None.
    """

    def __init__(self, in_channels: Union[int, tuple[int, int]], out_channels: int, heads: int = 1,
                 concat: bool = True, negative_slope: float = 0.2, dropout: float = 0.0, add_self_loops: bool = True,
                 edge_dim: Optional[int] = None, fill_value: Union[float, Tensor, str] = "mean", bias: bool = True,
                 residual: bool = False, *, deterministic: bool = True, **kwargs):
        super().__init__()
        check_layer_args("GATConv", in_channels, out_channels, heads, fill_value, kwargs)
        self.in_channels, self.out_channels, self.heads, self.concat = in_channels, out_channels, heads, concat
        self.negative_slope, self.dropout, self.add_self_loops = negative_slope, dropout, add_self_loops
        self.edge_dim, self.fill_value, self.residual, self.deterministic = edge_dim, fill_value, residual, deterministic
        hc = heads * out_channels
        self.lin = self.lin_src = self.lin_dst = None
        if isinstance(in_channels, int):
            self.lin = glorot_linear(in_channels, hc)
        else:
            self.lin_src, self.lin_dst = glorot_linear(in_channels[0], hc), glorot_linear(in_channels[1], hc)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        if edge_dim is not None:
            self.lin_edge = glorot_linear(edge_dim, hc)
            self.att_edge = nn.Parameter(torch.empty(1, heads, out_channels))
        else:
            self.lin_edge = None
            self.register_parameter("att_edge", None)
        total = hc if concat else out_channels
        if residual:
            self.res = glorot_linear(in_channels if isinstance(in_channels, int) else in_channels[1], total)
        else:
            self.register_parameter("res", None)
        if bias:
            self.bias = nn.Parameter(torch.zeros(total))
        else:
            self.register_parameter("bias", None)
        self._init_graph_cache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.lin, self.lin_src, self.lin_dst, self.lin_edge, self.res):
            if lin is not None:
                nn.init.xavier_uniform_(lin.weight)
        for att in (self.att_src, self.att_dst, self.att_edge):
            if att is not None:
                glorot_(att.data)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _edge_scores(self, edge_attr: Tensor, graph: GatGraph) -> Tensor:
        """[E, H] edge term of the attention logit in CSR order, from edge_attr in the input edge order."""
        edge_attr = self._loop_edge_attr(edge_attr, graph)
        e = self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)
        return (e * self.att_edge).sum(-1)[graph.perm]

    def forward(self, x: Union[Tensor, tuple[Tensor, Optional[Tensor]]], edge_index: Tensor,
                edge_attr: Optional[Tensor] = None, size: Optional[tuple[int, int]] = None,
                return_attention_weights: Optional[bool] = None):
        H, C = self.heads, self.out_channels
        self._check_edge_index_arg(edge_index)
        res = None
        if isinstance(x, Tensor):
            if x.dim() != 2:
                raise ValueError(f"x must be [N, F], got shape {list(x.shape)}")
            res = self.res(x) if self.res is not None else None
            if self.lin is not None:
                x_src = x_dst = self.lin(x).view(-1, H, C)
            else:
                x_src, x_dst = self.lin_src(x).view(-1, H, C), self.lin_dst(x).view(-1, H, C)
        else:
            x_src, x_dst = x
            if x_dst is None:
                raise ValueError("x = (x_src, None) is not supported: give destination features")
            res = self.res(x_dst) if self.res is not None else None
            lin_s, lin_d = (self.lin, self.lin) if self.lin is not None else (self.lin_src, self.lin_dst)
            x_src, x_dst = lin_s(x_src).view(-1, H, C), lin_d(x_dst).view(-1, H, C)
        if x_src.device != edge_index.device:
            raise ValueError(f"edge_index must be on x's device {x_src.device}, got {edge_index.device}")
        num_src, num_dst = (x_src.size(0), x_dst.size(0)) if size is None else size
        graph = self._graph_for(edge_index, num_src, num_dst)
        s_src = (x_src * self.att_src).sum(-1)
        s_dst = (x_dst * self.att_dst).sum(-1)
        e_score = None
        if edge_attr is not None and self.lin_edge is not None and graph.col.numel() > 0:
            e_score = self._edge_scores(edge_attr, graph)
        p, seed = self._dropout_seed()
        out, row_max, row_denom = gat_attention(x_src, s_src, s_dst, graph, e_score,
                                                negative_slope=self.negative_slope, dropout=p, seed=seed,
                                                deterministic=self.deterministic, return_stats=True)
        out = self._finish(out, res)
        if return_attention_weights:
            alpha = attention_weights(s_src.detach(), s_dst.detach(), graph, row_max, row_denom,
                                      None if e_score is None else e_score.detach(),
                                      negative_slope=self.negative_slope, dropout=p, seed=seed)
            return out, (graph.edge_index, alpha)
        return out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads})"
