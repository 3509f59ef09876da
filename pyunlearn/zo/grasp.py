"""ZO-GraSP (spec A1.3): pruning-at-initialisation scores from loss values only, used by DeepZero for its
layer-wise pruning ratios (which coordinates sparse CGE queries), not for pruning the model itself.

    g0 = RGE(θ)                 q = 192, μ = 5e-3, on a class-balanced probe batch, plain cross-entropy
    g1 = RGE(θ + μ g0)          the SAME seed: common random numbers — both estimates use the same directions,
                                so their noise largely cancels in the difference below
    Hg ≈ (g1 − g0) / μ          finite-difference Hessian-gradient product
    score = −θ ⊙ Hg             Conv2d / Linear weights only
    keep the (1 − sparsity) fraction of those coordinates with the largest |score| (global ranking by
    magnitude, as the DeepZero repository does) -> per-layer sparsity ratios {module_name: fraction pruned}

RGE here is the proper estimator of pyunlearn.zo.estimators.rge ((1/q) Σ c_k z_k with Gaussian z and the 1/μ
of the finite difference); the DeepZero repository's per-tensor unit-norm directions without 1/μ (spec A1.2)
are not reproduced. The ranking is scale-free, so only the estimator's variance matters here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass
class GraspResult:
    """ratios: {module name: fraction of its weight coordinates pruned}; scores: {module name: score tensor of
    the weight's shape}; threshold: the global |score| cut; sparsity: the requested global fraction."""

    ratios: dict[str, float]
    scores: dict[str, Tensor]
    threshold: float
    sparsity: float


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Conv2d / Linear modules of `model` (name -> module) whose weight is trainable."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad}


def balanced_probe(dataset, per_class: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A class-balanced probe batch (x, y): `per_class` samples of every class drawn with a seeded generator
    (fewer when a class has fewer), classes in ascending order (DeepZero: 25 per class on CIFAR-10)."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an int >= 1, got {per_class!r}")
    ys = torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))])
    g = torch.Generator().manual_seed(int(seed))
    picked = []
    for c in torch.unique(ys).tolist():
        idx = (ys == c).nonzero().flatten()
        picked.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    idx = torch.cat(picked)
    x = torch.stack([torch.as_tensor(dataset[i][0]) for i in idx.tolist()])
    return x, ys[idx]


@torch.no_grad()
def zo_grasp(model: nn.Module, batch: tuple[Tensor, Tensor], *, sparsity: float = 0.9, q: int = 192,
             mu: float = 5e-3, seed: int = 0, loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
             ) -> GraspResult:
    """ZO-GraSP layer-wise sparsity of `model`'s Conv2d/Linear weights (see the module docstring).

    The model is used in its current train/eval mode and left exactly as it came (parameters are restored by
    copy after the shifted estimate). sparsity: the global fraction of prunable coordinates to drop, in [0, 1).
    """
    from pyunlearn.zo.estimators import rge

    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not mu > 0:
        raise ValueError(f"mu must be > 0, got {mu!r}")
    if isinstance(q, bool) or not isinstance(q, int) or q < 1:
        raise ValueError(f"q must be an int >= 1, got {q!r}")
    layers = prunable_layers(model)
    if not layers:
        raise ValueError("model has no trainable Conv2d or Linear layer to score")
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    g0 = rge(model, loss_fn, batch, q=q, mu=mu, seed=seed)
    saved = {n: p.detach().clone() for n, p in named.items()}
    try:
        for n, p in named.items():
            p.add_(g0[n], alpha=mu)
        g1 = rge(model, loss_fn, batch, q=q, mu=mu, seed=seed)  # same seed: common random numbers
    finally:
        for n, p in named.items():
            p.copy_(saved[n])
    scores = {}
    for name, mod in layers.items():
        key = f"{name}.weight" if name else "weight"
        hg = (g1[key] - g0[key]) / mu
        scores[name] = -(mod.weight.detach() * hg)
    flat = torch.cat([s.abs().flatten() for s in scores.values()])
    n_keep = flat.numel() - round(sparsity * flat.numel())
    if n_keep <= 0:
        threshold = float("inf")
    else:
        threshold = float(torch.topk(flat, n_keep).values[-1])
    # rank exactly n_keep coordinates even with ties at the threshold: a global order by (|score| desc, index)
    order = torch.argsort(flat, descending=True, stable=True)
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order[:n_keep]] = True
    ratios, o = {}, 0
    for name, s in scores.items():
        k = keep[o:o + s.numel()]
        ratios[name] = 1.0 - float(k.sum()) / s.numel()
        o += s.numel()
    return GraspResult(ratios=ratios, scores=scores, threshold=threshold, sparsity=float(sparsity))


__all__ = ["GraspResult", "balanced_probe", "prunable_layers", "zo_grasp"]
