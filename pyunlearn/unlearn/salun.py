"""SalUn (image_mu.md §3.10): a weight-saliency mask from the forget loss's gradient at the original model, then
random labelling that moves only the salient weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyunlearn.unlearn._common import Context, register
from pyunlearn.unlearn.iterative import RLConfig, batches, device_of, make_sgd, random_label_epochs


@dataclass
class SalUnConfig(RLConfig):
    """10 epochs of RL (sequential schedule, alpha = 1) over the top `mask_ratio` of weights by saliency;
    lr 0.013 on CIFAR 10 % random (SalUn README), range 5e-3..2e-2; mask ratio 0.5 (the paper's median threshold).

    freeze: "strict" (default) = masked-off weights and their momentum never move, weight decay included
    (pyunlearn.optim.MaskedSGD; the current SalUn code, fix #33); "grad_only" = only the gradient is masked, so
    SGD's weight decay and momentum still shrink frozen weights (the code that produced the paper's numbers)."""

    lr: float = 0.013
    mask_ratio: float = 0.5
    freeze: str = "strict"

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.mask_ratio <= 1:
            raise ValueError(f"mask_ratio must lie in (0, 1], got {self.mask_ratio}")
        if self.freeze not in ("strict", "grad_only"):
            raise ValueError(f"freeze must be 'strict' or 'grad_only', got {self.freeze!r}")


def saliency_masks(model: nn.Module, forget, ratio: float, ctx: Context, batch_size: int = 64) -> dict[Tensor, Tensor]:
    """{param: bool mask}: the top `ratio` of all trainable entries by |sum over forget batches of the gradient
    of -CE| at the current weights, ranked globally (exactly floor(ratio * P) entries, ties broken by index).
    Eval mode (BN running statistics are used and not updated), augmented shuffled batches as the SalUn code."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) for p in params]
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(ctx.seed)
    for x, y in batches(forget, batch_size, ctx, gen, device_of(model)):
        g = torch.autograd.grad(-F.cross_entropy(model(x), y), params)
        torch._foreach_add_(grads, g)
    model.train(was)
    flat = torch.cat([g.abs().flatten() for g in grads])
    keep = int(ratio * flat.numel())
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[torch.topk(flat, keep, sorted=False).indices] = True
    masks, offset = {}, 0
    for p in params:
        masks[p] = chosen[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return masks


@register("salun", SalUnConfig)
def salun(model: nn.Module, forget, retain, cfg: SalUnConfig, ctx: Context) -> nn.Module:
    masks = saliency_masks(model, forget, cfg.mask_ratio, ctx, cfg.batch_size)
    hooks = []
    if cfg.freeze == "strict":
        opt = make_sgd(model, cfg, masks=masks)
    else:
        opt = make_sgd(model, cfg)
        hooks = [p.register_hook(lambda g, m=m: g * m) for p, m in masks.items()]
    random_label_epochs(model, forget, retain, cfg, ctx, opt, "salun")
    for h in hooks:
        h.remove()
    ctx.extra["salient_weights"] = sum(int(m.sum()) for m in masks.values())
    ctx.extra["weights"] = sum(m.numel() for m in masks.values())
    return model
