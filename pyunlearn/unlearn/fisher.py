"""FF — Fisher forgetting (spec §3.6, Unlearn-Sparse `fisher_new`): θ ← μ + sqrt(var)·ε, var from D_r's Fisher.

Fisher diagonal, model in eval mode, D_r in batches of 32 in dataset order: for every batch B and class y,
    F += p̄_y · (∇_θ mean_B CE(f(x), y))²,   p̄_y = mean_B softmax_y(f(x)),   labels forced to y,
then F /= #batches. All K class gradients of a batch come from one forward: the gradient of mean_B CE(f(x), y)
w.r.t. the logits is (softmax − e_y)/|B|, so one torch.func.vjp and a vmap over the K cotangents give the K
parameter gradients (class_chunk at a time, bounding memory to class_chunk × #params).

Per tensor: var = clamp(1/(F + 1e-8), max 1e3), clamped further to 1e2 for the head ("fc") tensors; var ← α·var;
tensors of ≥ 2 dims take the mean of var over dim 1 (the input-channel axis); μ = θ_o. Class-wise forgetting: the
forgotten class's head row gets μ = 0, var = 1e-4. Then head tensors, and otherwise 1-D tensors (BN, biases), get
var ×10 (the forgotten row ends at 1e-3). Finally θ = μ + sqrt(var)·ε, ε ~ N(0, I) from a generator seeded with
ctx.seed (drawn on the CPU in parameter order, so a seed gives the same model on every device).

α: the noise variance is α × the clamped inverse Fisher, so α scales var directly: with α = 1e-9 (authors'
suggestion, Unlearn-Sparse issue #5; the argparse default 0.2 destroys the model) the std is at most
sqrt(1e-9·1e3) = 1e-3 (×sqrt(10) on head and 1-D tensors); weights the Fisher says matter get far less.

Class-wise detection: the method only sees D_f and D_r, so forgetting counts as class-wise when every forget label
is one class c and no retain sample has label c (the repo hard-codes |D_f| = 4500 instead). classwise=True demands
it, False never applies it.

Head tensors: head="last_linear" (default) = the weight and bias of the last nn.Linear with K outputs — the "fc
layer" the spec means; head="first_dim" = the repo's literal rule, every tensor whose first dim is K (on CIFAR-10
ResNet-18 the two coincide; on a model with K-channel convs or BN the literal rule also catches those).
Only parameters with requires_grad are read and moved; on pruned models pruned weights are reset to 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

from pyunlearn.data import labels_of
from pyunlearn.unlearn._common import Context, register
from pyunlearn.unlearn.influence import Batches, check_int, check_number, trainable
from pyunlearn.unlearn.prune import enforce_masks

HEADS = ("last_linear", "first_dim")


@dataclass
class FFConfig:
    alpha: float = 1e-9  # var ← α·clamp(1/(F+1e-8)); authors suggest ~1e-9 (Unlearn-Sparse issue #5)
    batch_size: int = 32  # D_r batches of the Fisher pass (repo: 32)
    classwise: bool | None = None  # None: detect (one forget class absent from D_r); True: demand; False: off
    head: str = "last_linear"  # which tensors are "the fc layer": "last_linear" or the repo's "first_dim" rule
    class_chunk: int = 16  # classes whose gradients are computed together (memory: class_chunk × #params)
    augment: bool = False  # apply ctx.augment to D_r batches (the repo's loader carries train transforms)


def forgotten_class(forget, retain) -> int | None:
    """c when every forget label is c and no retain label is c (class-wise forgetting), else None."""
    f = labels_of(forget).unique()
    if f.numel() != 1:
        return None
    c = int(f[0])
    return None if bool((labels_of(retain) == c).any()) else c


def fisher_diagonal(model: nn.Module, names: list[str], params: list[Tensor], batches: Batches, K: int,
                    class_chunk: int) -> tuple[list[Tensor], int]:
    """Σ_batches Σ_y p̄_y (∇ mean_B CE(f(x), y))² / #batches, per parameter (model in eval mode)."""
    fisher = [torch.zeros_like(p) for p in params]
    detached = tuple(p.detach() for p in params)
    eye = torch.eye(K, dtype=params[0].dtype, device=params[0].device)
    count = 0
    for x, _ in batches:
        out, vjp_fn = vjp(lambda *ps, x=x: functional_call(model, dict(zip(names, ps)), (x,)), *detached)
        if out.ndim != 2 or out.shape[1] != K:
            raise ValueError(f"the model's output must be logits [batch, num_classes={K}], got {list(out.shape)}")
        B = out.shape[0]
        prob = out.detach().softmax(dim=1)  # [B, K]
        pbar = prob.mean(dim=0)  # [K]
        for c0 in range(0, K, class_chunk):
            c1 = min(K, c0 + class_chunk)
            cot = (prob.unsqueeze(0) - eye[c0:c1].unsqueeze(1)) / B  # [c, B, K]: d mean CE(out, y) / d out
            grads = vmap(vjp_fn)(cot)  # per parameter [c, *shape]
            w = pbar[c0:c1]
            for f, g in zip(fisher, grads):
                f += (w.view(-1, *([1] * (g.ndim - 1))) * g.square()).sum(dim=0)
        count += 1
    return [f / count for f in fisher], count


def head_names(model: nn.Module, named: list[tuple[str, Tensor]], K: int, rule: str) -> set[str]:
    if rule == "first_dim":
        return {n for n, p in named if p.ndim >= 1 and p.shape[0] == K}
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.out_features == K:
            last = name
    if last is None:
        raise ValueError(f"head='last_linear' found no nn.Linear with {K} outputs; use head='first_dim' (every "
                         f"tensor whose first dim is num_classes)")
    prefix = f"{last}." if last else ""
    return {f"{prefix}weight", f"{prefix}bias"} & {n for n, _ in named}


def mean_var(p: Tensor, fisher: Tensor, alpha: float, is_head: bool, forget_class: int | None,
             ) -> tuple[Tensor, Tensor]:
    """The spec §3.6 mean and variance of one tensor's noise distribution."""
    var = (1.0 / (fisher + 1e-8)).clamp(max=1e3)
    if is_head:
        var = var.clamp(max=1e2)
    var = alpha * var
    if p.ndim > 1:
        var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
    mu = p.detach().clone()
    if is_head and forget_class is not None:
        mu[forget_class] = 0
        var[forget_class] = 1e-4
    if is_head or p.ndim == 1:
        var = var * 10
    return mu, var


@register("ff", FFConfig)
def fisher_forgetting(model: nn.Module, forget, retain, cfg: FFConfig, ctx: Context) -> nn.Module:
    """θ ← μ + sqrt(var)·ε with the Fisher of D_r (see the module docstring); in place, returns the model."""
    alpha = check_number("alpha", cfg.alpha, low=0.0)
    check_int("batch_size", cfg.batch_size)
    check_int("class_chunk", cfg.class_chunk)
    if cfg.classwise not in (None, True, False):
        raise ValueError(f"classwise must be None (detect), True or False, got {cfg.classwise!r}")
    if cfg.head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {cfg.head!r}")
    if len(retain) == 0:
        raise ValueError("retain must not be empty: FF needs the retain Fisher, got a dataset of length 0")
    K = check_int("num_classes", ctx.num_classes, low=2)
    named = trainable(model)
    names, params = [n for n, _ in named], [p for _, p in named]
    heads = head_names(model, named, K, cfg.head)

    c = None
    if cfg.classwise is not False:
        c = forgotten_class(forget, retain)
        if cfg.classwise and c is None:
            raise ValueError("classwise=True needs class-wise forgetting: all forget labels one class that has no "
                             "retain sample")
        if c is not None and not 0 <= c < K:
            raise ValueError(f"the forgotten class {c} is outside [0, num_classes={K})")

    was_training = model.training
    model.eval()  # spec §6.3: FF gradients in eval mode
    try:
        batches = Batches(retain, cfg.batch_size, params[0], ctx, cfg.augment, "FF Fisher")
        fisher, nb = fisher_diagonal(model, names, params, batches, K, cfg.class_chunk)
    finally:
        model.train(was_training)

    gen = torch.Generator().manual_seed(ctx.seed)
    with torch.no_grad():
        for name, p, f in zip(names, params, fisher):
            mu, var = mean_var(p, f, alpha, name in heads, c)
            eps = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
            p.copy_(mu + var.sqrt() * eps)
    enforce_masks(model)
    ctx.extra.update({"forget_class": c, "fisher_batches": nb, "head": sorted(heads)})
    return model
