"""WAGLE weight attribution (spec llm_mu.md §2.6; the code's `GenerateMask.snip_advanced`): which weights may move.

    scores = wagle_scores(model, forget_ds, retain_ds, gamma=1e-6)   # {name: |(θ_o − g_r/γ) ⊙ g_f|}
    masks = wagle_masks(scores, ratio=0.8)                            # {name: bool}, top 80 % of all weights
    unlearn_llm(model, forget_ds, retain_ds, loss=..., masks=masks)   # masked optimizer: the rest never moves

Score (§2.6 (2)): g_f = Σ_i ∇ℓ_HF(θ_o; f_i) over the forget set (batch size 1 by default, as upstream), g_r = the
same sum over as many paired retain batches (retain item drawn uniformly with a seeded generator, the SOUL/WAGLE
random pairing of §1.2), and S = |(θ_o − g_r/γ) ⊙ g_f| elementwise over every parameter (embeddings, norms and
lm_head included). γ (upstream `mu`) defaults to 1e-6, the value of every shipped config. The gradients are of the
plain NLL (the sign does not matter after |·|), summed, not averaged: the balance of θ_o against g_r/γ depends on
the forget-set size and the batch size (§2.6 pitfall), so keep batch_size=1 to compare with upstream masks.

Mask (§2.6 (2)): rank all eligible entries globally by S and mark the top ⌊ratio·N⌋ (ratio = fraction UPDATED, not
the sparsity). Ties at the threshold are broken by position (first in parameter order, then row-major), so exactly
⌊ratio·N⌋ entries are selected and every selected score is ≥ every unselected one. scope="per_tensor" selects
⌊ratio·n_t⌋ inside each tensor instead. Gradients are accumulated into fresh tensors (upstream kept the first
`.grad` by reference, §2.6 pitfall).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from pyunlearn.unlearn.llm.losses import token_mean_nll

__all__ = ["wagle_masks", "wagle_scores"]


def _batches(data: Any, batch_size: int, collate_fn: Callable | None, name: str, order: Iterable[int] | None = None):
    """Batches of a dataset (with .collate or collate_fn) in `order`, or the batches of a DataLoader/iterable."""
    if isinstance(data, torch.utils.data.DataLoader) or (not hasattr(data, "__getitem__") and
                                                          hasattr(data, "__iter__")):
        yield from data
        return
    collate = collate_fn or getattr(data, "collate", None)
    if collate is None:
        raise TypeError(f"{name} must be a DataLoader, or a dataset with .collate (or pass {name}_collate_fn)")
    idx = list(range(len(data))) if order is None else list(order)
    for s in range(0, len(idx), batch_size):
        yield collate([data[i] for i in idx[s:s + batch_size]])


def _grad_sum(model: torch.nn.Module, batches: Iterable[Mapping[str, Tensor]], params: list[Tensor],
              name: str, progress: bool) -> tuple[list[Tensor], int]:
    from tqdm.auto import tqdm

    dev = params[0].device
    acc = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    n = 0
    for batch in tqdm(batches, desc=f"WAGLE {name} gradients", disable=not progress, leave=False):
        ids = batch["input_ids"].to(dev)
        am = batch.get("attention_mask")
        logits = model(input_ids=ids, attention_mask=None if am is None else am.to(dev)).logits
        grads = torch.autograd.grad(token_mean_nll(logits, batch["labels"].to(dev)), params, allow_unused=True)
        for a, g in zip(acc, grads):
            if g is not None:
                a.add_(g.float())
        n += 1
    if n == 0:
        raise ValueError(f"{name} set is empty: WAGLE needs at least one {name} batch")
    return acc, n


def wagle_scores(model: torch.nn.Module, forget: Any, retain: Any, *, gamma: float = 1e-6, batch_size: int = 1,
                 seed: int = 0, forget_collate_fn: Callable | None = None,
                 retain_collate_fn: Callable | None = None, progress: bool = False) -> dict[str, Tensor]:
    """S[name] = |(θ_o − g_r/γ) ⊙ g_f| for every parameter with requires_grad (fp32, the parameter's shape).

    forget / retain: datasets of {input_ids, attention_mask, labels} items with .collate (e.g. QADataset), or
    DataLoaders yielding such batches. With datasets, the forget set is visited in order in batches of
    `batch_size`, and each forget batch gets a retain batch of uniformly drawn items (torch.Generator(seed)); with
    a retain DataLoader its batches are cycled. The model is evaluated in eval mode (no dropout) and left as found."""
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no parameter with requires_grad=True")
    params = [p for _, p in named]
    was_training = model.training
    model.eval()
    try:
        g_f, n_f = _grad_sum(model, _batches(forget, batch_size, forget_collate_fn, "forget"), params, "forget",
                             progress)
        if isinstance(retain, torch.utils.data.DataLoader):
            r_batches = itertools.islice(itertools.cycle(retain), n_f)
        else:
            if retain is None or len(retain) == 0:
                raise ValueError("retain set is empty: WAGLE needs retain gradients")
            gen = torch.Generator().manual_seed(seed)
            order = torch.randint(len(retain), (n_f * batch_size,), generator=gen).tolist()
            r_batches = _batches(retain, batch_size, retain_collate_fn, "retain", order)
        g_r, _ = _grad_sum(model, r_batches, params, "retain", progress)
    finally:
        model.train(was_training)
    with torch.no_grad():
        return {n: ((p.detach().float() - gr / gamma) * gf).abs() for (n, p), gf, gr in zip(named, g_f, g_r)}


def _top_k_flat(flat: Tensor, k: int) -> Tensor:
    """Bool mask of exactly k entries of flat: every entry > the k-th largest value, then ties in index order."""
    n = flat.numel()
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=flat.device)
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=flat.device)
    # threshold by kthvalue (O(N) memory, no argsort of all entries; §2.6 pitfall on 7e9-element sorts)
    thr = torch.kthvalue(flat, n - k + 1).values
    above = flat > thr
    need = k - int(above.sum())
    tie = flat == thr
    return above | (tie & (torch.cumsum(tie, 0) <= need))


def check_mask_args(scores: Mapping[str, Tensor], ratio: float, scope: str) -> None:
    """The argument checks of wagle_masks (and of its distributed twin): ratio, scope, floating scores."""
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
        raise ValueError(f"ratio must be a fraction in [0, 1], got {ratio!r}")
    if scope not in ("global", "per_tensor"):
        raise ValueError(f"scope must be 'global' or 'per_tensor', got {scope!r}")
    if not scores:
        raise ValueError("scores is empty")
    for n, s in scores.items():
        if not isinstance(s, Tensor) or not s.is_floating_point():
            raise TypeError(f"scores[{n!r}] must be a floating tensor, got {type(s).__name__}")


def wagle_masks(scores: Mapping[str, Tensor], ratio: float, *, scope: str = "global",
                include: Callable[[str], bool] | None = None) -> dict[str, Tensor]:
    """Bool masks {name: True where the weight may be updated} from WAGLE (or any) scores.

    ratio ∈ [0, 1] is the fraction updated. scope="global" (WAGLE): the top ⌊ratio·N⌋ over all eligible entries;
    "per_tensor": the top ⌊ratio·n_t⌋ inside each tensor. include(name) -> False makes a parameter ineligible
    (mask all False, frozen); None = every parameter is eligible, as upstream."""
    check_mask_args(scores, ratio, scope)
    for n, s in scores.items():
        if bool(torch.isnan(s).any()):
            raise ValueError(f"scores[{n!r}] has NaN entries")
    eligible = [n for n in scores if include is None or include(n)]
    masks = {n: torch.zeros_like(s, dtype=torch.bool) for n, s in scores.items()}
    if not eligible:
        return masks
    if scope == "per_tensor":
        for n in eligible:
            s = scores[n]
            masks[n] = _top_k_flat(s.reshape(-1).float(), math.floor(ratio * s.numel())).view_as(s)
        return masks
    flat = torch.cat([scores[n].reshape(-1).float() for n in eligible])  # [N]
    sel = _top_k_flat(flat, math.floor(ratio * flat.numel()))
    start = 0
    for n in eligible:
        s = scores[n]
        masks[n] = sel[start:start + s.numel()].view_as(s).clone()
        start += s.numel()
    return masks
