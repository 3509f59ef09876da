"""pyunlearn.nn.GATConv: a drop-in for torch_geometric.nn.GATConv on the fused graph-attention op.

Same constructor and forward signatures and the same parameter names (lin / lin_src + lin_dst, att_src, att_dst,
lin_edge + att_edge, res, bias), so `load_state_dict(pyg_layer.state_dict())` reproduces PyG's outputs and
gradients. The attention itself (scores, segment softmax, weighted aggregation, and its backward) runs in one
fused op per direction that never materialises [E, H, C]. torch_geometric is not a dependency.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from pyunlearn.ops.gat import GatGraph, attention_weights, gat_attention, gat_graph

FILL_REDUCE = {"mean": "mean", "add": "sum", "sum": "sum", "max": "amax", "min": "amin", "mul": "prod"}


def _glorot(t: Tensor) -> None:
    # PyG's glorot for att_* [1, H, C]: uniform(-a, a), a = sqrt(6 / (H + C)) (its last two dims)
    a = math.sqrt(6.0 / (t.size(-2) + t.size(-1)))
    nn.init.uniform_(t, -a, a)


def _linear(fan_in: int, fan_out: int) -> nn.Linear:
    lin = nn.Linear(fan_in, fan_out, bias=False)
    nn.init.xavier_uniform_(lin.weight)  # PyG's 'glorot' weight initialiser
    return lin


class GATConv(nn.Module):
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
        if kwargs:
            raise TypeError(f"GATConv got unsupported keyword arguments {sorted(kwargs)} (PyG MessagePassing options "
                            "such as aggr or flow do not apply to the fused layer)")
        if not isinstance(heads, int) or heads < 1 or not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(f"heads and out_channels must be positive ints, got heads={heads!r}, "
                             f"out_channels={out_channels!r}")
        if isinstance(fill_value, str) and fill_value not in FILL_REDUCE:
            raise ValueError(f"fill_value must be a float, a Tensor or one of {sorted(FILL_REDUCE)}, got {fill_value!r}")
        self.in_channels, self.out_channels, self.heads, self.concat = in_channels, out_channels, heads, concat
        self.negative_slope, self.dropout, self.add_self_loops = negative_slope, dropout, add_self_loops
        self.edge_dim, self.fill_value, self.residual, self.deterministic = edge_dim, fill_value, residual, deterministic
        hc = heads * out_channels
        self.lin = self.lin_src = self.lin_dst = None
        if isinstance(in_channels, int):
            self.lin = _linear(in_channels, hc)
        else:
            self.lin_src, self.lin_dst = _linear(in_channels[0], hc), _linear(in_channels[1], hc)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        if edge_dim is not None:
            self.lin_edge = _linear(edge_dim, hc)
            self.att_edge = nn.Parameter(torch.empty(1, heads, out_channels))
        else:
            self.lin_edge = None
            self.register_parameter("att_edge", None)
        total = hc if concat else out_channels
        if residual:
            self.res = _linear(in_channels if isinstance(in_channels, int) else in_channels[1], total)
        else:
            self.register_parameter("res", None)
        if bias:
            self.bias = nn.Parameter(torch.zeros(total))
        else:
            self.register_parameter("bias", None)
        self._graph_key = None
        self._graph: Optional[GatGraph] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.lin, self.lin_src, self.lin_dst, self.lin_edge, self.res):
            if lin is not None:
                nn.init.xavier_uniform_(lin.weight)
        for att in (self.att_src, self.att_dst, self.att_edge):
            if att is not None:
                _glorot(att.data)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _graph_for(self, edge_index: Tensor, num_src: int, num_dst: int) -> GatGraph:
        """CSR/CSC built once per edge_index tensor. The cache keeps that tensor alive and matches it by identity
        and version (a data_ptr key could match a new tensor allocated at a freed one's address)."""
        key = (edge_index._version, num_src, num_dst, self.add_self_loops)
        cached = self._graph_key
        if cached is None or cached[0] is not edge_index or cached[1] != key:
            self._graph = gat_graph(edge_index, num_src, num_dst, add_self_loops=self.add_self_loops)
            self._graph_key = (edge_index, key)
        return self._graph

    def _edge_scores(self, edge_attr: Tensor, graph: GatGraph) -> Tensor:
        """[E, H] edge term of the attention logit in CSR order, from edge_attr in the input edge order."""
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.view(-1, 1)
        if graph.loop_of_edge is not None:  # PyG: remove self-loops, then add loops with fill_value attributes
            kept = graph.loop_of_edge[graph.loop_of_edge >= 0]
            n_loops = graph.loop_of_edge.numel() - kept.numel()
            attr = edge_attr[kept]
            if isinstance(self.fill_value, str):
                loop_attr = attr.new_zeros((n_loops, attr.size(1)))
                dst = graph.edge_index[1, : kept.numel()]
                in_range = dst < n_loops
                loop_attr = loop_attr.scatter_reduce(0, dst[in_range, None].expand(-1, attr.size(1)),
                                                     attr[in_range], FILL_REDUCE[self.fill_value],
                                                     include_self=False)
            else:
                loop_attr = torch.as_tensor(self.fill_value, dtype=attr.dtype, device=attr.device)
                loop_attr = loop_attr.expand(n_loops, attr.size(1)) if loop_attr.dim() <= 1 else loop_attr
            edge_attr = torch.cat([attr, loop_attr], 0)
        e = self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)
        return (e * self.att_edge).sum(-1)[graph.perm]

    def forward(self, x: Union[Tensor, tuple[Tensor, Optional[Tensor]]], edge_index: Tensor,
                edge_attr: Optional[Tensor] = None, size: Optional[tuple[int, int]] = None,
                return_attention_weights: Optional[bool] = None):
        H, C = self.heads, self.out_channels
        if not isinstance(edge_index, Tensor) or edge_index.is_sparse:
            raise TypeError("edge_index must be a dense [2, E] index tensor (SparseTensor adjacency is not supported)")
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
        # attention dropout in training: a fresh keep pattern per call, drawn from torch's CPU generator (so
        # torch.manual_seed reproduces it) and regenerated in the backward from the seed, never stored
        p = float(self.dropout) if self.training else 0.0
        seed = int(torch.randint(0, 2**62, (1,)).item()) if p > 0 else 0
        out, row_max, row_denom = gat_attention(x_src, s_src, s_dst, graph, e_score,
                                                negative_slope=self.negative_slope, dropout=p, seed=seed,
                                                deterministic=self.deterministic, return_stats=True)
        out = out.reshape(-1, H * C) if self.concat else out.mean(dim=1)
        if res is not None:
            out = out + res
        if self.bias is not None:
            out = out + self.bias
        if return_attention_weights:
            alpha = attention_weights(s_src.detach(), s_dst.detach(), graph, row_max, row_denom,
                                      None if e_score is None else e_score.detach(),
                                      negative_slope=self.negative_slope, dropout=p, seed=seed)
            return out, (graph.edge_index, alpha)
        return out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads})"
