"""UM2N losses (zo_graph_kernels.md B4; released config: element-area + Chamfer, coordinate loss off).

    A_e(X)  = ½[x1(y2 − y3) + x2(y3 − y1) + x3(y1 − y2)]                 signed area of cell e
    L_vol   = (s_vol / B) Σ_e |A_e(Y) − A_e(X̂)|        s_vol = 100, B = meshes in the batch
    L_ch    = s_ch · (mean_i min_j |X̂_i − Y_j|² + mean_j min_i |Y_j − X̂_i|²)   s_ch = 100 (batch = 1 cloud)
    L_coord = s_coord · mean |X̂ − Y|                   s_coord = 1000 (L1 over all N×2 entries)
    L       = w_coord L_coord + w_vol L_vol + w_ch L_ch     release: w_coord = 0, w_vol = 1, w_ch = 1

Chamfer is our own nearest-neighbour search (pytorch3d, the release's dependency, is not needed: B9,
UM2N #41): the argmin is found without autograd in row tiles of torch.cdist, then the squared distances to
the chosen neighbours are recomputed differentiably (the gradient of a min is the gradient at its argmin).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def signed_areas(points: Tensor, cells: Tensor) -> Tensor:
    """Signed areas [T] of triangles `cells` [T, 3] at `points` [N, 2] (positive when counter-clockwise)."""
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape [N, 2], got {list(points.shape)}")
    if cells.dim() != 2 or cells.shape[1] != 3:
        raise ValueError(f"cells must be triangles of shape [T, 3], got {list(cells.shape)}")
    p1, p2, p3 = points[cells[:, 0]], points[cells[:, 1]], points[cells[:, 2]]
    return 0.5 * (p1[:, 0] * (p2[:, 1] - p3[:, 1]) + p2[:, 0] * (p3[:, 1] - p1[:, 1])
                  + p3[:, 0] * (p1[:, 1] - p2[:, 1]))


def element_area_loss(pred: Tensor, target: Tensor, cells: Tensor, num_graphs: int = 1,
                      scale: float = 100.0) -> Tensor:
    """L_vol = (scale / num_graphs) Σ_e |A_e(target) − A_e(pred)|."""
    _check_pair(pred, target)
    if num_graphs < 1:
        raise ValueError(f"num_graphs must be >= 1, got {num_graphs}")
    return scale / num_graphs * (signed_areas(target, cells) - signed_areas(pred, cells)).abs().sum()


@torch.no_grad()
def nearest_neighbour(a: Tensor, b: Tensor, max_elements: int = 1 << 22) -> Tensor:
    """For every row of a [N, D] the index [N] of its nearest row of b [M, D] (Euclidean), computed in row
    tiles of at most `max_elements` distances."""
    if len(b) == 0:
        raise ValueError("b must hold at least one point, got 0")
    rows = max(1, max_elements // len(b))
    if len(a) == 0:
        return torch.zeros(0, dtype=torch.long, device=a.device)
    return torch.cat([torch.cdist(a[i:i + rows], b).argmin(1) for i in range(0, len(a), rows)])


def chamfer_distance(a: Tensor, b: Tensor, scale: float = 1.0) -> Tensor:
    """scale · (mean_i min_j |a_i − b_j|² + mean_j min_i |b_j − a_i|²) for point clouds a [N, D], b [M, D]
    (pytorch3d's chamfer_distance with one cloud per side and mean reductions). Symmetric; 0 iff the sets
    agree."""
    for name, t in (("a", a), ("b", b)):
        if t.dim() != 2 or len(t) == 0:
            raise ValueError(f"{name} must be a non-empty [N, D] point cloud, got shape {list(t.shape)}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    ab = (a - b[nearest_neighbour(a, b)]).pow(2).sum(1).mean()
    ba = (b - a[nearest_neighbour(b, a)]).pow(2).sum(1).mean()
    return scale * (ab + ba)


def coordinate_loss(pred: Tensor, target: Tensor, scale: float = 1000.0) -> Tensor:
    """L_coord = scale · mean |pred − target| (L1)."""
    _check_pair(pred, target)
    return scale * (pred - target).abs().mean()


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 2 or pred.shape[1] != 2:
        raise ValueError(f"pred and target must both have shape [N, 2], got {list(pred.shape)} and "
                         f"{list(target.shape)}")


@dataclass(frozen=True)
class LossConfig:
    """Weights and scales of the UM2N loss (B4). Defaults: the released model."""

    w_coord: float = 0.0
    w_vol: float = 1.0
    w_chamfer: float = 1.0
    coord_scale: float = 1000.0
    vol_scale: float = 100.0  # `train`; run_train.py's unsupervised path used 300
    chamfer_scale: float = 100.0

    def __post_init__(self):
        for name in ("w_coord", "w_vol", "w_chamfer", "coord_scale", "vol_scale", "chamfer_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"LossConfig.{name} must be a number >= 0, got {v!r}")
        if self.w_coord == self.w_vol == self.w_chamfer == 0:
            raise ValueError("LossConfig needs at least one non-zero weight (w_coord, w_vol, w_chamfer)")


def um2n_loss(pred: Tensor, target: Tensor, cells: Tensor, num_graphs: int,
              cfg: LossConfig | None = None) -> dict[str, Tensor]:
    """{"loss": weighted total, "coord", "vol", "chamfer": the scaled terms} (a term with weight 0 is still
    reported, detached, so logs show all three)."""
    cfg = LossConfig() if cfg is None else cfg
    _check_pair(pred, target)
    if not torch.isfinite(pred).all():
        raise FloatingPointError("pred holds NaN/inf coordinates (the model diverged or its input is bad)")
    terms = {}
    total = pred.new_zeros(())
    for name, w, fn in (("coord", cfg.w_coord, lambda: coordinate_loss(pred, target, cfg.coord_scale)),
                        ("vol", cfg.w_vol, lambda: element_area_loss(pred, target, cells, num_graphs,
                                                                     cfg.vol_scale)),
                        ("chamfer", cfg.w_chamfer,
                         lambda: chamfer_distance(pred, target, cfg.chamfer_scale))):
        if w:
            value = fn()
            total = total + w * value
            terms[name] = value.detach()
        else:
            with torch.no_grad():
                terms[name] = fn()
    return {"loss": total, **terms}


def tangled_per_mesh(pred: Tensor, original: Tensor, cells: Tensor, cell_batch: Tensor,
                     num_graphs: int) -> Tensor:
    """int64 [B]: cells per mesh whose signed area at `pred` has not the sign of the original one (or is 0),
    i.e. A_e(pred)·sgn(A_e(original)) <= 0 (B6)."""
    with torch.no_grad():
        a = signed_areas(pred, cells) * torch.sign(signed_areas(original, cells))
        return torch.zeros(num_graphs, dtype=torch.long, device=pred.device).index_add_(
            0, cell_batch, (a <= 0).long())
