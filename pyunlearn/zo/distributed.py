"""Forward parallelism for ZO estimation across the ranks of a torch.distributed process group (issue #4, item 2).

Every rank holds the same parameters and the same batch. The work of one estimate is split into contiguous
slices by rank, each rank evaluates its slice from the SAME seed (directions are regenerated from
(seed, direction, flat index), never sent), and ONE all-reduce per step combines the results:

    RGE / SPSA   rank r evaluates directions rank_slice(q, r, world); the q projected-gradient scalars are
                 all-reduced (q float64 numbers); every rank then regenerates z and applies the identical
                 update (ZO optimizers with process_group=...)
    CGE          rank r evaluates its slice of the coordinate list (all parameters' coords concatenated in
                 parameter order); the gradient (one flat vector) is all-reduced, zero outside each slice

Parameters then stay identical on every rank without a broadcast (the RGE path restores θ from a copy after
its in-place queries: the rounding left by perturb/restore would differ between ranks). DeepZero's rpc master/worker layout
(spec A1.6: per-scalar [tensor_id, idx, value] lists and .item() per coordinate) is replaced by this one
collective. Cost balancing by module depth (A1.6) is not done: slices are equal in coordinate count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.distributed as tdist
from torch import Tensor, nn


def rank_slice(n: int, rank: int, world: int) -> range:
    """The contiguous share [n r / W, n (r+1) / W) of n items for rank r of W (sizes differ by at most 1)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world={world}), got {rank}")
    return range(n * rank // world, n * (rank + 1) // world)


def _group_info(group) -> tuple[int, int]:
    if not tdist.is_available() or not tdist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call torch.distributed.init_process_group first")
    return tdist.get_rank(group), tdist.get_world_size(group)


def distributed_spsa_projections(closure: Callable[[], Tensor], params: Sequence[Tensor], *, q: int, mu: float,
                                 seed: int, central: bool = False, dist: str = "gaussian", group=None,
                                 offset: int = 0) -> tuple[Tensor, Tensor]:
    """spsa_projections with the q directions split over the ranks of `group` (default: the world) and one
    all-reduce of the q coefficients. Returns (loss0, coeffs[q]) — the same on every rank, equal to the
    single-process result (each coefficient is computed by exactly one rank; the others add zeros). Memory: one
    copy of the parameters per rank, to restore θ bit-exactly after the in-place queries."""
    from pyunlearn.zo.estimators import spsa_projections

    if isinstance(q, bool) or not isinstance(q, int) or q < 1:
        raise ValueError(f"q must be an int >= 1, got {q!r}")
    rank, world = _group_info(group)
    mine = rank_slice(q, rank, world)
    params = list(params)
    if len(mine):
        # in-place perturb + restore is exact only up to rounding, and ranks perturb along different
        # directions: restore θ from a copy so that every rank continues from the bit-identical θ
        saved = [p.detach().clone() for p in params]
        loss0, c = spsa_projections(closure, params, q=q, mu=mu, seed=seed, central=central, dist=dist,
                                    directions=mine, offset=offset)
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    else:  # more ranks than directions: this rank only contributes zeros (and needs l(θ) for the return)
        with torch.no_grad():
            loss0 = closure().detach().reshape(()).double()
        c = torch.zeros(0, dtype=torch.float64, device=loss0.device)
    full = torch.zeros(q, dtype=torch.float64, device=loss0.device)
    full[mine.start:mine.stop] = c.to(torch.float64)
    _all_reduce(full, group)
    return loss0, full


def _all_reduce(t: Tensor, group) -> None:
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM, group=group)


def distributed_cge(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], batch, *,
                    coords: Mapping[str, Tensor] | None = None, mu: float,
                    params: Mapping[str, Tensor] | None = None, chunk: int | None = None,
                    group=None) -> dict[str, Tensor]:
    """cge with the coordinates split over the ranks of `group` and one all-reduce of the flat gradient.
    Same arguments and result as pyunlearn.zo.estimators.cge (zero outside coords), on every rank."""
    from pyunlearn.zo.estimators import cge

    rank, world = _group_info(group)
    named = list(params.items()) if params is not None else \
        [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    full = {n: torch.arange(p.numel(), device=p.device) for n, p in named} if coords is None else dict(coords)
    unknown = sorted(set(full) - {n for n, _ in named})
    if unknown:
        raise ValueError(f"coords names unknown parameters {unknown}")
    sizes = [int(full[n].numel()) if n in full else 0 for n, _ in named]
    mine = rank_slice(sum(sizes), rank, world)
    sub, o = {}, 0
    for (n, p), s in zip(named, sizes):
        lo, hi = max(mine.start, o), min(mine.stop, o + s)
        if hi > lo:
            sub[n] = full[n][lo - o:hi - o]
        o += s
    if sub:
        grads = cge(model, loss_fn, batch, coords=sub, mu=mu, params=dict(named), chunk=chunk)
    else:
        grads = {n: torch.zeros_like(p) for n, p in named}
    flat = torch.cat([grads[n].reshape(-1) for n, _ in named])
    _all_reduce(flat, group)
    out, o = {}, 0
    for n, p in named:
        out[n] = flat[o:o + p.numel()].view_as(p)
        o += p.numel()
    return out


__all__ = ["distributed_cge", "distributed_spsa_projections", "rank_slice"]
