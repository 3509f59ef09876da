"""The UM2N model (zo_graph_kernels.md B2, B3.1; released ``M2N_T``): a graph-transformer encoder over
[x, y, m̂], a local edge encoder, and four DeformGAT blocks on the fused graph-attention op.

    batch = make_batch([sample, ...])        # dataset dicts: points, cells, edge_index, boundary, monitor
    model = UM2N()                           # released widths; UM2NConfig.small() for tests
    moved = model(batch)                     # [N, 2] moved vertex coordinates, boundary handled exactly

What differs from the release, and why:
* Encoder attention is ``scaled_dot_product_attention`` (no [B, heads, N, N] weights kept), and meshes of
  different sizes share a batch: vertices are padded to the largest mesh and padded keys are masked out
  (the release needs equal N in a batch). A batch of equal-N meshes takes the unpadded path.
* The DeformGAT softmaxes run on ``pyunlearn.ops.gat_attention`` (the fused op behind
  ``pyunlearn.nn.GATConv``): one CSR/CSC layout per forward, shared by all 8 attention passes. ``GATConv``
  computes one softmax over LeakyReLU logits; DeformGAT needs two softmaxes over the same per-node logits
  (coordinates with logits scaled by 0.2, features unscaled) and SELU logits. With ``attention="selu"``
  (the release) the [E, H] logits are formed with one gather and passed as the op's edge score (LeakyReLU
  slope 1 = identity); with ``attention="leaky_relu"`` the per-node halves go straight into the op (no
  [E, H] tensor at all).
* Boundary (B1): ``boundary="slide"`` (default) resets, after every block, the x of vertices that lie on a
  vertical side of the mesh's bounding box and the y of vertices on a horizontal side to their original value,
  so boundary vertices slide along straight sides and corners stay fixed (as the MA targets); any other
  boundary vertex (a non-axis-aligned side) is held fixed. ``boundary="fixed"`` holds every boundary vertex
  (the release's bd_mask reset). Both are exact (``torch.where`` against the original coordinates).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyunlearn.ops.gat import GatGraph, gat_attention, gat_graph

ATTENTIONS = ("selu", "leaky_relu")
BOUNDARIES = ("slide", "fixed")


@dataclass(frozen=True)
class UM2NConfig:
    """Widths of the UM2N model. Defaults: the released M2N_T (B3.1)."""

    encoder_dim: int = 64  # MLP_in width and transformer width
    encoder_heads: int = 4  # head dim 16
    encoder_ff: int = 256  # dense ratio 4
    global_dim: int = 16  # per-vertex features out of the encoder
    local_hidden: int = 64  # local edge MLP width
    local_dim: int = 16  # local features (last one is the edge length)
    deform_in: int = 256  # [X0, SELU(Linear(35 -> 254))]
    deform_out: tuple[int, ...] = (508, 250, 120, 20)  # DeformGAT feature widths C per block
    deform_heads: int = 6  # heads are averaged
    dropout: float = 0.1  # encoder attention / residual dropout
    attention: str = "selu"  # DeformGAT logit nonlinearity: "selu" (release) | "leaky_relu"
    boundary: str = "slide"  # "slide" (B1) | "fixed" (release bd_mask reset)

    def __post_init__(self):
        for name in ("encoder_dim", "encoder_heads", "encoder_ff", "global_dim", "local_hidden", "local_dim",
                     "deform_in", "deform_heads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"UM2NConfig.{name} must be an int >= 1, got {v!r}")
        if self.encoder_dim % self.encoder_heads:
            raise ValueError(f"UM2NConfig.encoder_dim ({self.encoder_dim}) must be divisible by "
                             f"encoder_heads ({self.encoder_heads})")
        if self.local_dim < 2 or self.deform_in < 3:
            raise ValueError(f"UM2NConfig.local_dim must be >= 2 and deform_in >= 3, got {self.local_dim}, "
                             f"{self.deform_in}")
        out = tuple(self.deform_out)
        if not out or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in out):
            raise ValueError(f"UM2NConfig.deform_out must be a non-empty tuple of ints >= 1, got "
                             f"{self.deform_out!r}")
        object.__setattr__(self, "deform_out", out)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UM2NConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"UM2NConfig.attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.boundary not in BOUNDARIES:
            raise ValueError(f"UM2NConfig.boundary must be one of {BOUNDARIES}, got {self.boundary!r}")

    @classmethod
    def small(cls, **overrides) -> UM2NConfig:
        """A narrow model (about 30k parameters) for tests and CPU demos; same structure as the release."""
        base = {"encoder_dim": 32, "encoder_heads": 4, "encoder_ff": 64, "global_dim": 16, "local_hidden": 32,
                "local_dim": 16, "deform_in": 64, "deform_out": (64, 48, 32, 8), "deform_heads": 4}
        return cls(**{**base, **overrides})


# ----------------------------------------------------------------------------------------------------
# Input batch
# ----------------------------------------------------------------------------------------------------

@dataclass
class MeshBatch:
    """Several meshes as one disjoint graph (vertices of mesh b are contiguous, in order)."""

    coords: Tensor  # [N, 2] original vertex positions ξ
    monitor: Tensor  # [N] m̂ = monitor / max|monitor| of its mesh (B2 `normalise`)
    boundary: Tensor  # [N] bool, boundary vertices
    edge_index: Tensor  # [2, E] int64, row 0 source j, row 1 target i, offsets applied
    cells: Tensor  # [T, 3] int64, offsets applied
    batch: Tensor  # [N] int64 mesh id of each vertex
    cell_batch: Tensor  # [T] int64 mesh id of each cell
    num_graphs: int
    target: Tensor | None = None  # [N, 2] MA-moved positions, when known

    @property
    def counts(self) -> Tensor:  # [B] vertices per mesh
        return torch.bincount(self.batch, minlength=self.num_graphs)

    def to(self, device=None, dtype=None) -> MeshBatch:
        f = (lambda t: None if t is None else t.to(device=device, dtype=dtype))
        i = (lambda t: t.to(device=device))
        return MeshBatch(f(self.coords), f(self.monitor), i(self.boundary), i(self.edge_index), i(self.cells),
                         i(self.batch), i(self.cell_batch), self.num_graphs, f(self.target))


_SHAPES = {"points": "[P, 2]", "target": "[P, 2]", "cells": "[T, 3]", "edge_index": "[2, E]",
           "monitor": "[P]", "boundary": "[P]"}


def _as_array(sample: dict, key: str, idx: int, kind: str) -> np.ndarray:
    """sample[key] as an array, checked against _SHAPES[key] and the dtype kind ("float", "int", "any")."""
    if key not in sample:
        raise KeyError(f"sample {idx} has no {key!r} (keys: {sorted(sample)})")
    a = np.asarray(sample[key])
    want = _SHAPES[key]
    ok = a.ndim == want.count(",") + 1
    if ok and key in ("points", "target", "cells"):
        ok = a.shape[1] == int(want[-2])
    if ok and key == "edge_index":
        ok = a.shape[0] == 2
    if not ok:
        raise ValueError(f"sample {idx}: {key} must have shape {want}, got {list(a.shape)}")
    if kind == "float" and not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"sample {idx}: {key} must be floating point, got {a.dtype}")
    if kind == "int" and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"sample {idx}: {key} must be an integer array, got {a.dtype}")
    return a


def make_batch(samples: Sequence[dict], *, dtype: torch.dtype = torch.float32,
               with_target: bool | None = None, device: Any = None) -> MeshBatch:
    """Collate dataset samples (dicts with points [P,2], cells [T,3], edge_index [2,E], boundary [P],
    monitor [P] and optionally target [P,2]) into a MeshBatch. The monitor is normalised per mesh by its
    max |value|.

    with_target: None = include targets when every sample has one; True = require them; False = ignore.
    Raises ValueError/KeyError naming the sample and key for wrong shapes, non-finite values, a zero monitor,
    an edge index out of range or a vertex without incoming edges (it would have nothing to attend to)."""
    if isinstance(samples, dict):
        samples = [samples]
    if len(samples) == 0:
        raise ValueError("samples must hold at least one mesh, got 0")
    if with_target is None:
        with_target = all("target" in s for s in samples)
    coords, mon, bd, ei, cells, batch, cbatch, target = [], [], [], [], [], [], [], []
    offset = 0
    for b, s in enumerate(samples):
        p = _as_array(s, "points", b, "float")
        n = len(p)
        c = _as_array(s, "cells", b, "int")
        e = _as_array(s, "edge_index", b, "int")
        m = _as_array(s, "monitor", b, "float")
        bmask = _as_array(s, "boundary", b, "any")
        if len(m) != n or len(bmask) != n:
            raise ValueError(f"sample {b}: monitor and boundary must have one entry per point ({n}), got "
                             f"{len(m)} and {len(bmask)}")
        if not np.isfinite(p).all():
            raise ValueError(f"sample {b}: points must be finite")
        if not np.isfinite(m).all():
            raise ValueError(f"sample {b}: monitor must be finite, got {int((~np.isfinite(m)).sum())} "
                             f"NaN/inf value(s)")
        scale = float(np.abs(m).max())
        if scale == 0.0:
            raise ValueError(f"sample {b}: monitor is zero everywhere; it cannot be normalised by max |m|")
        if (c.size and (c.min() < 0 or c.max() >= n)) or (e.size and (e.min() < 0 or e.max() >= n)):
            raise ValueError(f"sample {b}: cells and edge_index must index points in [0, {n})")
        if np.bincount(e[1], minlength=n).min() == 0:
            raise ValueError(f"sample {b}: every vertex needs at least one incoming edge in edge_index (an "
                             f"isolated vertex has no neighbour to move towards)")
        coords.append(torch.as_tensor(p, dtype=dtype))
        mon.append(torch.as_tensor(m / scale, dtype=dtype))
        bd.append(torch.as_tensor(np.asarray(bmask).astype(bool)))
        ei.append(torch.as_tensor(e.astype(np.int64)) + offset)
        cells.append(torch.as_tensor(c.astype(np.int64)) + offset)
        batch.append(torch.full((n,), b, dtype=torch.long))
        cbatch.append(torch.full((len(c),), b, dtype=torch.long))
        if with_target:
            t = _as_array(s, "target", b, "float")
            if len(t) != n or not np.isfinite(t).all():
                raise ValueError(f"sample {b}: target must be finite with shape [{n}, 2], got "
                                 f"{list(t.shape)}")
            target.append(torch.as_tensor(t, dtype=dtype))
        offset += n
    out = MeshBatch(torch.cat(coords), torch.cat(mon), torch.cat(bd), torch.cat(ei, 1), torch.cat(cells),
                    torch.cat(batch), torch.cat(cbatch), len(samples),
                    torch.cat(target) if with_target else None)
    return out.to(device) if device is not None else out


def sample_from_mesh(mesh, monitor: np.ndarray, target: np.ndarray | None = None) -> dict:
    """A make_batch sample from a geometry.Mesh and monitor values [P] (and optionally target [P, 2])."""
    s = {"points": mesh.points, "cells": mesh.cells, "edge_index": mesh.edge_index(),
         "boundary": mesh.boundary_mask(), "monitor": np.asarray(monitor, dtype=np.float64)}
    if target is not None:
        s["target"] = np.asarray(target, dtype=np.float64)
    return s


# ----------------------------------------------------------------------------------------------------
# Encoder (B3.1 step 1)
# ----------------------------------------------------------------------------------------------------

class _EncoderBlock(nn.Module):
    """LN -> MHA (SDPA) -> per-head scale c_h (channels reordered (head, dim) -> (dim, head) as the
    release) -> LN -> dropout -> + x; then LN -> Linear(d, ff) -> GELU -> dropout -> LN(ff) ->
    Linear(ff, d) -> dropout -> + w ⊙ x."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.heads, self.p = heads, dropout
        self.ln_attn, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.head_scale = nn.Parameter(torch.ones(heads))
        self.ln_post = nn.LayerNorm(d)
        self.ln_ff, self.ff1 = nn.LayerNorm(d), nn.Linear(d, ff)
        self.ln_mid, self.ff2 = nn.LayerNorm(ff), nn.Linear(ff, d)
        self.res_weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:  # x: [B, L, d]; mask: [B, 1, 1, L] bool
        bsz, length, d = x.shape
        h, dh = self.heads, d // self.heads
        q, k, v = self.qkv(self.ln_attn(x)).view(bsz, length, 3, h, dh).permute(2, 0, 3, 1, 4)  # [B,h,L,dh]
        p = self.p if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        a = self.proj(a.transpose(1, 2).reshape(bsz, length, d)).view(bsz, length, h, dh)
        a = torch.einsum("blhd,h->bldh", a, self.head_scale).reshape(bsz, length, d)
        x = x + F.dropout(self.ln_post(a), self.p, self.training)
        y = F.dropout(F.gelu(self.ff1(self.ln_ff(x))), self.p, self.training)
        y = F.dropout(self.ff2(self.ln_mid(y)), self.p, self.training)
        return y + self.res_weight * x


class GraphTransformerEncoder(nn.Module):
    """Dense self-attention over all vertices of each mesh (no graph mask): [x, y, m̂] -> global features."""

    def __init__(self, cfg: UM2NConfig):
        super().__init__()
        d = cfg.encoder_dim
        self.mlp_in = nn.Sequential(nn.Linear(3, d), nn.GELU(), nn.Linear(d, d), nn.GELU())
        self.block = _EncoderBlock(d, cfg.encoder_heads, cfg.encoder_ff, cfg.dropout)
        self.mlp_out = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, cfg.global_dim), nn.GELU(),
                                     nn.SELU())

    def forward(self, feat: Tensor, batch: Tensor, num_graphs: int) -> Tensor:  # [N, 3] -> [N, global_dim]
        h = self.mlp_in(feat)  # [N, d]
        counts = torch.bincount(batch, minlength=num_graphs)
        n_max = int(counts.max())
        if bool((counts == n_max).all()):  # equal sizes: no padding, no mask
            return self.mlp_out(self.block(h.view(num_graphs, n_max, -1), None).reshape(len(h), -1))
        ptr = torch.zeros(num_graphs, dtype=torch.long, device=h.device)
        ptr[1:] = torch.cumsum(counts, 0)[:-1]
        pos = torch.arange(len(h), device=h.device) - ptr[batch]
        padded = h.new_zeros(num_graphs, n_max, h.shape[1])
        padded[batch, pos] = h
        valid = torch.zeros(num_graphs, n_max, dtype=torch.bool, device=h.device)
        valid[batch, pos] = True
        out = self.block(padded, valid[:, None, None, :])  # padded keys masked; padded queries discarded
        return self.mlp_out(out[batch, pos])


# ----------------------------------------------------------------------------------------------------
# Local edge features (step 2) and DeformGAT (step 4)
# ----------------------------------------------------------------------------------------------------

class LocalFeatExtractor(nn.Module):
    """Per edge j -> i: [x_j - x_i, |x_j - x_i|, m̂_i, m̂_j] -> MLP (SELU) -> local_dim - 1, concat
    |x_j - x_i|; summed over the edges into i."""

    def __init__(self, cfg: UM2NConfig):
        super().__init__()
        w = cfg.local_hidden
        self.mlp = nn.Sequential(nn.Linear(5, w), nn.SELU(), nn.Linear(w, w), nn.SELU(),
                                 nn.Linear(w, cfg.local_dim - 1), nn.SELU())

    def forward(self, coords: Tensor, monitor: Tensor, edge_index: Tensor) -> Tensor:  # -> [N, local_dim]
        src, dst = edge_index[0], edge_index[1]
        d = coords[src] - coords[dst]  # [E, 2]
        dist = d.norm(dim=1, keepdim=True)  # [E, 1]
        msg = torch.cat([self.mlp(torch.cat([d, dist, monitor[dst, None], monitor[src, None]], 1)), dist], 1)
        return msg.new_zeros(len(coords), msg.shape[1]).index_add_(0, dst, msg)


class DeformGAT(nn.Module):
    """One deformer block (B3.1 step 4). Z = W F + b [N, H, C]; a = <Z, att_src>, b = <Z, att_dst> [N, H].
    Coordinates: X_out,i = mean_h Σ_j softmax_j(σ(0.2 a_j + 0.2 b_i)) X_in,j (a convex combination of the
    neighbours' positions); features: F_out,i = SELU(mean_h Σ_j softmax_j(σ(a_j + b_i)) Z_j); σ = SELU
    (release) or LeakyReLU(0.2). Both passes run on pyunlearn.ops.gat_attention over one shared graph
    layout."""

    def __init__(self, in_channels: int, out_channels: int, heads: int, attention: str = "selu"):
        super().__init__()
        self.heads, self.out_channels, self.attention = heads, out_channels, attention
        self.lin = nn.Linear(in_channels, heads * out_channels)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        for w in (self.lin.weight, self.att_src, self.att_dst):  # Glorot, as the release
            bound = (6.0 / (w.shape[-2] + w.shape[-1])) ** 0.5
            nn.init.uniform_(w, -bound, bound)
        nn.init.zeros_(self.lin.bias)

    def forward(self, coords: Tensor, feats: Tensor, graph: GatGraph,
                dst_csr: Tensor) -> tuple[Tensor, Tensor]:
        n, h = len(coords), self.heads
        z = self.lin(feats).view(n, h, self.out_channels)  # [N, H, C]
        a = (z * self.att_src).sum(-1)  # [N, H]
        b = (z * self.att_dst).sum(-1)  # [N, H]
        xs = coords[:, None, :].expand(n, h, 2).contiguous()  # [N, H, 2]
        if self.attention == "selu":
            logit = a[graph.col.long()] + b[dst_csr]  # [E, H] in CSR order
            zero = torch.zeros_like(a)
            # slope 1: the op's LeakyReLU is the identity, so the softmax runs over the SELU logits given here
            x_out = gat_attention(xs, zero, zero, graph, F.selu(0.2 * logit), negative_slope=1.0)
            f_out = gat_attention(z, zero, zero, graph, F.selu(logit), negative_slope=1.0)
        else:
            x_out = gat_attention(xs, 0.2 * a, 0.2 * b, graph, negative_slope=0.2)
            f_out = gat_attention(z, a, b, graph, negative_slope=0.2)
        return x_out.mean(1), F.selu(f_out.mean(1))


def _boundary_masks(coords: Tensor, boundary: Tensor, batch: Tensor, num_graphs: int, mode: str):
    """(keep_x, keep_y) bool [N]: coordinates reset to their original value after every block."""
    if mode == "fixed":
        return boundary, boundary
    lo = torch.full((num_graphs, 2), float("inf"), dtype=coords.dtype, device=coords.device)
    hi = torch.full((num_graphs, 2), float("-inf"), dtype=coords.dtype, device=coords.device)
    lo = lo.scatter_reduce(0, batch[:, None].expand(-1, 2), coords, "amin")
    hi = hi.scatter_reduce(0, batch[:, None].expand(-1, 2), coords, "amax")
    tol = 1e-9 * (hi - lo).amax(1, keepdim=True)[batch]  # [N, 1]
    on_side = ((coords - lo[batch]).abs() <= tol) | ((coords - hi[batch]).abs() <= tol)  # [N, 2]
    on_side &= boundary[:, None]
    other = boundary & ~on_side.any(1)  # boundary vertex off the box sides: held fixed
    return on_side[:, 0] | other, on_side[:, 1] | other


def boundary_keep_mask(batch: MeshBatch, mode: str = "slide") -> Tensor:
    """bool [N, 2]: the coordinates the model copies from its input (the module docstring's boundary rule)."""
    if mode not in BOUNDARIES:
        raise ValueError(f"mode must be one of {BOUNDARIES}, got {mode!r}")
    keep_x, keep_y = _boundary_masks(batch.coords, batch.boundary, batch.batch, batch.num_graphs, mode)
    return torch.stack([keep_x, keep_y], 1)


class UM2N(nn.Module):
    """UM2N M2N_T: forward(batch: MeshBatch) -> moved coordinates [N, 2]."""

    def __init__(self, config: UM2NConfig | None = None):
        super().__init__()
        cfg = UM2NConfig() if config is None else config
        if not isinstance(cfg, UM2NConfig):
            raise TypeError(f"config must be a UM2NConfig, got {type(cfg).__name__}")
        self.config = cfg
        self.encoder = GraphTransformerEncoder(cfg)
        self.local = LocalFeatExtractor(cfg)
        self.lin_in = nn.Linear(3 + cfg.local_dim + cfg.global_dim, cfg.deform_in - 2)
        blocks, width = [], cfg.deform_in
        for k, c in enumerate(cfg.deform_out):
            blocks.append(DeformGAT(width, c, cfg.deform_heads, cfg.attention))
            width = 2 * (k + 2) + c  # [X_k+1, ..., X_0, F_k+1]
        self.blocks = nn.ModuleList(blocks)

    def _check(self, batch: MeshBatch) -> None:
        if not isinstance(batch, MeshBatch):
            raise TypeError(f"batch must be a MeshBatch (see make_batch), got {type(batch).__name__}")
        n = batch.coords.shape[0]
        if batch.coords.shape != (n, 2):
            raise ValueError(f"batch.coords must have shape [N, 2], got {list(batch.coords.shape)}")
        if batch.monitor.shape != (n,) or batch.boundary.shape != (n,) or batch.batch.shape != (n,):
            raise ValueError(f"batch.monitor, boundary and batch must have shape [{n}], got "
                             f"{list(batch.monitor.shape)}, {list(batch.boundary.shape)}, "
                             f"{list(batch.batch.shape)}")
        if n > 1 and not bool((batch.batch[1:] >= batch.batch[:-1]).all()):
            raise ValueError("batch.batch must be non-decreasing (the vertices of each mesh contiguous, as "
                             "make_batch builds them)")
        if not torch.isfinite(batch.monitor).all():
            raise ValueError("batch.monitor must be finite, got NaN/inf values")
        if batch.edge_index.dim() != 2 or batch.edge_index.shape[0] != 2:
            raise ValueError(f"batch.edge_index must have shape [2, E], got {list(batch.edge_index.shape)}")
        p = next(self.parameters())
        if batch.coords.dtype != p.dtype:
            raise ValueError(f"batch dtype {batch.coords.dtype} must match the model's {p.dtype} "
                             f"(batch.to(dtype=...))")

    def forward(self, batch: MeshBatch) -> Tensor:
        self._check(batch)
        x0, bd = batch.coords, batch.boundary
        glob = self.encoder(torch.cat([x0, batch.monitor[:, None]], 1), batch.batch, batch.num_graphs)
        loc = self.local(x0, batch.monitor, batch.edge_index)
        h0 = torch.cat([x0, bd[:, None].to(x0.dtype), loc, glob], 1)
        feats = torch.cat([x0, F.selu(self.lin_in(h0))], 1)  # [N, deform_in]
        graph = gat_graph(batch.edge_index, len(x0))
        dst_csr = torch.repeat_interleave(torch.arange(len(x0), device=x0.device),
                                          torch.diff(graph.rowptr.long()))  # [E] target of each CSR edge
        keep = boundary_keep_mask(batch, self.config.boundary)  # [N, 2]
        history = [x0]
        x = x0
        for k, block in enumerate(self.blocks):
            x, f = block(x, feats, graph, dst_csr)
            x = torch.where(keep, x0, x)  # exact: boundary coordinates are copies of the original ones
            history.insert(0, x)
            if k + 1 < len(self.blocks):
                feats = torch.cat(history + [f], 1)
        return x


# ----------------------------------------------------------------------------------------------------
# Save / load
# ----------------------------------------------------------------------------------------------------

def save_model(model: UM2N, path, extra: dict | None = None) -> Path:
    """Write {"config", "state_dict", **extra} atomically to `path` (a .pt file)."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"kind": "um2n", "config": dataclasses.asdict(model.config), "state_dict": state,
                **(extra or {})}, tmp)
    os.replace(tmp, path)
    return path


def load_model(path, map_location="cpu") -> UM2N:
    """A UM2N from save_model's file or from a train_um2n checkpoint (its "model" entry); eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "config" not in state:
        raise ValueError(f"{str(path)!r} is not a UM2N model file or training checkpoint (no 'config' entry)")
    cfg = dict(state["config"])
    cfg["deform_out"] = tuple(cfg["deform_out"])
    model = UM2N(UM2NConfig(**cfg))
    model.load_state_dict(state["state_dict"] if "state_dict" in state else state["model"])
    return model.eval()
