"""Pieces shared by the GATConv and GATv2Conv drop-ins: PyG-compatible initialisers, argument checks, the cached
CSR/CSC of an edge_index, self-loop edge attributes (fill_value), the per-call dropout seed and the output tail
(concat/mean, residual, bias)."""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from pyunlearn.ops.gat import GatGraph, gat_graph

# PyG fill_value names -> Tensor.scatter_reduce reductions
FILL_REDUCE = {"mean": "mean", "add": "sum", "sum": "sum", "max": "amax", "min": "amin", "mul": "prod"}


def glorot_(t: Tensor) -> None:
    """PyG's glorot for att* [1, H, C]: uniform(-a, a), a = sqrt(6 / (H + C)) (its last two dims)."""
    a = math.sqrt(6.0 / (t.size(-2) + t.size(-1)))
    nn.init.uniform_(t, -a, a)


def glorot_linear(fan_in: int, fan_out: int, bias: bool = False) -> nn.Linear:
    """nn.Linear initialised as PyG's Linear(weight_initializer='glorot'): glorot weight, and a bias (if any)
    uniform in +-1/sqrt(fan_in)."""
    lin = nn.Linear(fan_in, fan_out, bias=bias)
    reset_linear(lin)
    return lin


def reset_linear(lin: nn.Linear) -> None:
    nn.init.xavier_uniform_(lin.weight)
    if lin.bias is not None:
        bound = 1.0 / math.sqrt(lin.in_features)
        nn.init.uniform_(lin.bias, -bound, bound)


def check_layer_args(cls_name: str, in_channels, out_channels, heads, fill_value, kwargs: dict) -> None:
    if kwargs:
        raise TypeError(f"{cls_name} got unsupported keyword arguments {sorted(kwargs)} (PyG MessagePassing options "
                        "such as aggr or flow do not apply to the fused layer)")
    if not isinstance(heads, int) or heads < 1 or not isinstance(out_channels, int) or out_channels < 1:
        raise ValueError(f"heads and out_channels must be positive ints, got heads={heads!r}, "
                         f"out_channels={out_channels!r}")
    dims = tuple(in_channels) if isinstance(in_channels, (tuple, list)) else (in_channels,)
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims) or len(dims) not in (1, 2):
        raise TypeError(f"in_channels must be an int or a (source, destination) pair of ints, got {in_channels!r}")
    if any(d <= 0 for d in dims):
        raise ValueError(f"in_channels must be positive (PyG's lazy -1 is not supported), got {in_channels!r}")
    if isinstance(fill_value, str) and fill_value not in FILL_REDUCE:
        raise ValueError(f"fill_value must be a float, a Tensor or one of {sorted(FILL_REDUCE)}, got {fill_value!r}")


class GraphAttentionBase(nn.Module):
    """Base of the attention drop-ins. Subclasses set heads, out_channels, concat, dropout, add_self_loops,
    fill_value and the optional `res` / `bias` parameters, and call _init_graph_cache()."""

    heads: int
    out_channels: int
    concat: bool
    dropout: float
    add_self_loops: bool
    fill_value: Union[float, Tensor, str]
    res: Optional[nn.Module]
    bias: Optional[Tensor]

    def _init_graph_cache(self) -> None:
        self._graph_key = None
        self._graph: Optional[GatGraph] = None

    def _graph_for(self, edge_index: Tensor, num_src: int, num_dst: int) -> GatGraph:
        """CSR/CSC built once per edge_index tensor. The cache keeps that tensor alive and matches it by identity
        and version (a data_ptr key could match a new tensor allocated at a freed one's address)."""
        key = (edge_index._version, num_src, num_dst, self.add_self_loops)
        cached = self._graph_key
        if cached is None or cached[0] is not edge_index or cached[1] != key:
            self._graph = gat_graph(edge_index, num_src, num_dst, add_self_loops=self.add_self_loops)
            self._graph_key = (edge_index, key)
        return self._graph

    @staticmethod
    def _check_edge_index_arg(edge_index) -> None:
        if not isinstance(edge_index, Tensor) or edge_index.is_sparse:
            raise TypeError("edge_index must be a dense [2, E] index tensor (SparseTensor adjacency is not supported)")

    def _loop_edge_attr(self, edge_attr: Tensor, graph: GatGraph) -> Tensor:
        """edge_attr [E_in, D] (or [E_in]) in the input edge order -> [E, D] in graph.edge_index order: as PyG,
        input self-loops removed and the added loops given fill_value attributes."""
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.view(-1, 1)
        if graph.loop_of_edge is None:
            return edge_attr
        kept = graph.loop_of_edge[graph.loop_of_edge >= 0]
        n_loops = graph.loop_of_edge.numel() - kept.numel()
        attr = edge_attr[kept]
        if isinstance(self.fill_value, str):
            loop_attr = attr.new_zeros((n_loops, attr.size(1)))
            dst = graph.edge_index[1, : kept.numel()]
            in_range = dst < n_loops
            loop_attr = loop_attr.scatter_reduce(0, dst[in_range, None].expand(-1, attr.size(1)), attr[in_range],
                                                 FILL_REDUCE[self.fill_value], include_self=False)
        else:
            loop_attr = torch.as_tensor(self.fill_value, dtype=attr.dtype, device=attr.device)
            loop_attr = loop_attr.expand(n_loops, attr.size(1)) if loop_attr.dim() <= 1 else loop_attr
        return torch.cat([attr, loop_attr], 0)

    def _dropout_seed(self) -> tuple[float, int]:
        """Attention dropout in training: a fresh keep pattern per call, drawn from torch's CPU generator (so
        torch.manual_seed reproduces it) and regenerated in the backward from the seed, never stored."""
        p = float(self.dropout) if self.training else 0.0
        seed = int(torch.randint(0, 2**62, (1,)).item()) if p > 0 else 0
        return p, seed

    def _finish(self, out: Tensor, res: Optional[Tensor]) -> Tensor:
        """[N_dst, H, C] -> concat or head mean, + residual, + bias."""
        out = out.reshape(-1, self.heads * self.out_channels) if self.concat else out.mean(dim=1)
        if res is not None:
            out = out + res
        if self.bias is not None:
            out = out + self.bias
        return out
