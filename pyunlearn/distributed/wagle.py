"""WAGLE on N ranks (issue 9): scores from gradients summed across ranks (sharded under FSDP2) and an exact global
top-k, so the masks are those of `pyunlearn.unlearn.llm.wagle_masks` on the gathered scores, without gathering.

    scores = wagle_scores_distributed(model, forget_ds, retain_ds, gamma=1e-6)  # DTensors under fully_shard
    masks = wagle_masks_distributed(scores, ratio=0.8)                           # sharded like the parameters
    unlearn_llm_distributed(model, forget_ds, retain_ds, strategy="fsdp2", masks=masks, ...)

Scores: the forget (and paired retain) batches of `wagle_scores` — same order, same seeded retain draw — are dealt
round-robin to the ranks (batch b to rank b mod N; ranks short of a batch run batch 0 with weight 0, so every
rank makes the same collectives). A replicated model (plain or DDP) sums its batches' gradients locally and
all-reduces the sums; a fully_shard-ed model backpropagates N·loss into the sharded .grad (FSDP2 averages over
ranks), so the sums never exist unsharded. S = |(θ − g_r/γ) ⊙ g_f| is then elementwise on whatever each rank holds.
The sums differ from one process's in summation order only (fp32 rounding).

Top-k: the k-th largest score is found by bisection on the order-preserving int32 image of the fp32 scores (32
rounds, one all-reduce of a count per round), then ties at the threshold are taken in global position order
(parameter order, row-major = rank order of the Shard(0) pieces) from one all-gather of the per-tensor tie counts:
exactly the selection of `wagle_masks` on the full scores, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from pyunlearn.unlearn.llm.losses import token_mean_nll
from pyunlearn.unlearn.llm.wagle import _batches

__all__ = ["wagle_masks_distributed", "wagle_scores_distributed"]


def _dist():
    from pyunlearn.distributed.llm import _dist as d

    return d()


def _is_dt(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _grad_sums(model: torch.nn.Module, batches: list[dict], params: list[Tensor], sharded: bool, name: str,
               progress: bool) -> list[Tensor]:
    """Σ over all ranks' batches of ∇ token_mean_nll (fp32), this rank running batches rank, rank+N, ..."""
    from tqdm.auto import tqdm

    dist = _dist()
    rank, world = dist.get_rank(), dist.get_world_size()
    if not batches:
        raise ValueError(f"{name} set is empty: WAGLE needs at least one {name} batch")
    mine = batches[rank::world]
    n_mine = math.ceil(len(batches) / world)
    work = [(b, 1.0) for b in mine] + [(batches[0], 0.0)] * (n_mine - len(mine))
    dev = next(model.parameters()).device
    for p in params:
        p.grad = None
    acc = None if sharded else [torch.zeros(p.shape, dtype=torch.float32, device=dev) for p in params]
    for batch, w in tqdm(work, desc=f"WAGLE {name} gradients", disable=not progress or rank != 0, leave=False):
        ids = batch["input_ids"].to(dev)
        am = batch.get("attention_mask")
        logits = model(input_ids=ids, attention_mask=None if am is None else am.to(dev)).logits
        value = token_mean_nll(logits, batch["labels"].to(dev))
        if sharded:  # FSDP2 reduce-scatters the mean over ranks into the sharded .grad: scale by N
            (value * (w * world)).backward()
            continue
        grads = torch.autograd.grad(value, params, allow_unused=True)
        if w:
            for a, g in zip(acc, grads):
                if g is not None:
                    a.add_(g.float())
    if sharded:
        out = []
        for p in params:
            out.append(torch.zeros_like(p, dtype=torch.float32) if p.grad is None else p.grad.detach().float())
            p.grad = None
        return out
    for a in acc:
        dist.all_reduce(a)
    return acc


def wagle_scores_distributed(model: torch.nn.Module, forget: Any, retain: Any, *, gamma: float = 1e-6,
                             batch_size: int = 1, seed: int = 0, forget_collate_fn: Callable | None = None,
                             retain_collate_fn: Callable | None = None,
                             progress: bool = False) -> dict[str, Tensor]:
    """`wagle_scores` on every rank of the default process group (call on all ranks with the same arguments).

    model: a plain model with the same weights on every rank (scores replicated, plain tensors), or a
    fully_shard-ed one (scores are DTensors sharded like the parameters). forget / retain: datasets with .collate
    (as wagle_scores; DataLoaders are not accepted here, the batches must be dealt to ranks by index)."""
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    for name, data in (("forget", forget), ("retain", retain)):
        if isinstance(data, torch.utils.data.DataLoader) or not hasattr(data, "__getitem__"):
            raise TypeError(f"{name} must be a dataset with __getitem__ and .collate (got {type(data).__name__}); "
                            "the distributed version deals batches to ranks by index")
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no parameter with requires_grad=True")
    params = [p for _, p in named]
    sharded = any(_is_dt(p) for p in params)
    was_training = model.training
    model.eval()
    try:
        f_batches = list(_batches(forget, batch_size, forget_collate_fn, "forget"))
        g_f = _grad_sums(model, f_batches, params, sharded, "forget", progress)
        if retain is None or len(retain) == 0:
            raise ValueError("retain set is empty: WAGLE needs retain gradients")
        gen = torch.Generator().manual_seed(seed)
        order = torch.randint(len(retain), (len(f_batches) * batch_size,), generator=gen).tolist()
        r_batches = list(_batches(retain, batch_size, retain_collate_fn, "retain", order))
        g_r = _grad_sums(model, r_batches, params, sharded, "retain", progress)
    finally:
        model.train(was_training)
    with torch.no_grad():
        return {n: ((p.detach().float() - gr / gamma) * gf).abs() for (n, p), gf, gr in zip(named, g_f, g_r)}


# --------------------------------------------------------------------------------------------------- top-k
def _keys(t: Tensor) -> Tensor:
    """int64 keys ordered like the fp32 values (−0.0 folded into +0.0, as == does)."""
    f = t.float().reshape(-1) + 0.0
    i = f.view(torch.int32).to(torch.int64)
    return torch.where(i < 0, i ^ 0x7FFFFFFF, i)


def _local(t: Tensor) -> Tensor:
    return t.to_local() if _is_dt(t) else t


def _check_layout(name: str, s: Tensor) -> None:
    if _is_dt(s):
        from torch.distributed.tensor import Shard

        if s.device_mesh.ndim != 1 or len(s.placements) != 1 or not (
                isinstance(s.placements[0], Shard) and s.placements[0].dim == 0):
            raise ValueError(f"scores[{name!r}] must be a plain tensor or a DTensor sharded on dim 0 over a 1-D mesh "
                             f"(FSDP2's layout), got placements {s.placements} on a {s.device_mesh.ndim}-D mesh")


def _select(groups: list[list[str]], keys: dict[str, Tensor], sharded: dict[str, bool], numel: dict[str, int],
            ratio: float) -> dict[str, Tensor]:
    """Local bool selections (flat) of the top ⌊ratio·n_g⌋ of each group, exact across ranks."""
    dist = _dist()
    rank, world = dist.get_rank(), dist.get_world_size()
    dev = next(iter(keys.values())).device
    n_g = [sum(numel[n] for n in g) for g in groups]
    k_g = torch.tensor([math.floor(ratio * n) for n in n_g], dtype=torch.int64, device=dev)

    def count(pred: Callable[[Tensor, int], Tensor]) -> Tensor:
        """Σ over ranks of pred's count per group; replicated tensors counted on rank 0 only."""
        c = torch.zeros(len(groups), dtype=torch.int64, device=dev)
        for gi, g in enumerate(groups):
            for n in g:
                if sharded[n] or rank == 0:
                    c[gi] += pred(keys[n], gi).sum()
        dist.all_reduce(c)
        return c

    lo = torch.full((len(groups),), -(2 ** 31), dtype=torch.int64, device=dev)  # count(>= lo) >= k always
    hi = torch.full((len(groups),), 2 ** 31, dtype=torch.int64, device=dev)  # count(>= hi) < k
    for _ in range(33):
        if bool((hi - lo <= 1).all()):
            break
        mid = (lo + hi) // 2
        c = count(lambda kk, gi, mid=mid: kk >= mid[gi])
        ok = c >= k_g
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    thr = lo  # the k-th largest key of each group
    above = count(lambda kk, gi, thr=thr: kk > thr[gi])
    need = k_g - above
    # ties: global order = tensors in group order, inside a tensor the Shard(0) pieces in rank order
    names = [n for g in groups for n in g]
    gi_of = {n: gi for gi, g in enumerate(groups) for n in g}
    ties = torch.tensor([int((keys[n] == thr[gi_of[n]]).sum()) if (sharded[n] or rank == 0) else 0
                         for n in names], dtype=torch.int64, device=dev)
    all_ties = [torch.zeros_like(ties) for _ in range(world)]
    dist.all_gather(all_ties, ties)
    tt = torch.stack(all_ties)  # [world, tensors]
    out = {}
    pos = 0
    for gi, g in enumerate(groups):
        before = 0  # ties of this group in earlier tensors
        for n in g:
            kk, t_ = keys[n], thr[gi]
            if k_g[gi] <= 0:
                out[n] = torch.zeros_like(kk, dtype=torch.bool)
            elif k_g[gi] >= n_g[gi]:
                out[n] = torch.ones_like(kk, dtype=torch.bool)
            else:
                offset = before + (int(tt[:rank, pos].sum()) if sharded[n] else 0)
                tie = kk == t_
                out[n] = (kk > t_) | (tie & (torch.cumsum(tie, 0) + offset <= need[gi]))
            before += int(tt[:, pos].sum())
            pos += 1
    return out


def wagle_masks_distributed(scores: Mapping[str, Tensor], ratio: float, *, scope: str = "global",
                            include: Callable[[str], bool] | None = None) -> dict[str, Tensor]:
    """`wagle_masks` for scores spread over ranks (DTensors sharded on dim 0, and/or plain tensors replicated on
    every rank); masks come back in the scores' layout and equal wagle_masks of the gathered scores exactly."""
    from pyunlearn.unlearn.llm.wagle import check_mask_args, wagle_masks

    check_mask_args(scores, ratio, scope)
    if not any(_is_dt(s) for s in scores.values()):
        return wagle_masks(scores, ratio, scope=scope, include=include)  # replicated: the same on every rank
    for n, s in scores.items():
        _check_layout(n, s)
    dev = _local(next(iter(scores.values()))).device  # collectives on the scores' device (nccl: CUDA only)
    nan = torch.tensor([int(bool(torch.isnan(_local(s)).any())) for s in scores.values()], dtype=torch.int64,
                       device=dev)
    _dist().all_reduce(nan)
    bad = [n for n, v in zip(scores, nan.tolist()) if v]
    if bad:
        raise ValueError(f"scores[{bad[0]!r}] has NaN entries")
    eligible = [n for n in scores if include is None or include(n)]
    masks = {}
    if eligible:
        keys = {n: _keys(_local(scores[n])) for n in eligible}
        sharded = {n: _is_dt(scores[n]) for n in eligible}
        numel = {n: scores[n].numel() for n in eligible}
        groups = [eligible] if scope == "global" else [[n] for n in eligible]
        sel = _select(groups, keys, sharded, numel, ratio)
    for n, s in scores.items():
        local = _local(s)
        m = sel[n].view(local.shape) if n in eligible else torch.zeros_like(local, dtype=torch.bool)
        if _is_dt(s):
            from torch.distributed.tensor import DTensor

            m = DTensor.from_local(m, s.device_mesh, s.placements, run_check=False, shape=s.shape,
                                   stride=s.stride())
        masks[n] = m
    return masks

