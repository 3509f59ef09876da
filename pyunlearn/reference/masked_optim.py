"""Reference twins of the masked optimizer steps (same signatures as torch.ops.pyunlearn.*).

Each step computes the new values densely in the state dtype (fp32 for fp16/bf16 params) with the formulas of
csrc/masked_optim/masked_optim_math.h, in the same order, then writes them back only where the mask is on.
An index-list mask is turned into a dense one here: the twin is about semantics, not speed.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from pyunlearn.ops._checks import state_dtype


def dense_mask(mask: Optional[Tensor], param: Tensor) -> Optional[Tensor]:
    """None (all on), or a bool tensor of param's shape, from any accepted mask form."""
    if mask is None:
        return None
    if mask.dtype in (torch.bool, torch.uint8):
        return mask != 0
    flat = torch.zeros(param.numel(), dtype=torch.bool, device=param.device)
    flat[mask.long()] = True
    return flat.view(param.shape)


def _put(dst: Tensor, new: Tensor, on: Optional[Tensor]) -> None:
    new = new.to(dst.dtype)
    dst.copy_(new if on is None else torch.where(on, new, dst))


def masked_sgd_step_ref(params: Sequence[Tensor], grads: Sequence[Tensor], momentum_buffers: Sequence[Tensor],
                        masks: Sequence[Optional[Tensor]], lr: float, momentum: float, dampening: float,
                        weight_decay: float, nesterov: bool, maximize: bool, first_step: bool) -> None:
    for i, (p, g) in enumerate(zip(params, grads)):
        on = dense_mask(masks[i], p)
        s = state_dtype(p.dtype)
        g = g.to(s)
        pv = p.to(s)
        if maximize:
            g = -g
        if weight_decay != 0:
            g = g + weight_decay * pv
        if momentum != 0:
            buf = momentum_buffers[i]
            b = g if first_step else momentum * buf + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
            _put(buf, b, on)
        _put(p, pv - lr * g, on)


def masked_adamw_step_ref(params: Sequence[Tensor], grads: Sequence[Tensor], exp_avgs: Sequence[Tensor],
                          exp_avg_sqs: Sequence[Tensor], max_exp_avg_sqs: Sequence[Tensor],
                          masks: Sequence[Optional[Tensor]], lr: float, beta1: float, beta2: float,
                          weight_decay: float, eps: float, step: float, amsgrad: bool, maximize: bool) -> None:
    step_size = lr / (1 - beta1 ** step)
    bc2_sqrt = math.sqrt(1 - beta2 ** step)
    for i, (p, g) in enumerate(zip(params, grads)):
        on = dense_mask(masks[i], p)
        s = state_dtype(p.dtype)
        g = g.to(s)
        if maximize:
            g = -g
        m, v = exp_avgs[i], exp_avg_sqs[i]
        pv = p.to(s) * (1 - lr * weight_decay)
        nm = beta1 * m + (1 - beta1) * g
        nv = beta2 * v + (1 - beta2) * g * g
        vv = nv
        if amsgrad:
            vv = torch.maximum(max_exp_avg_sqs[i], nv)
            _put(max_exp_avg_sqs[i], vv, on)
        denom = vv.sqrt() / bc2_sqrt + eps
        _put(p, pv - step_size * nm / denom, on)
        _put(m, nm, on)
        _put(v, nv, on)


def masked_sophia_step_ref(params: Sequence[Tensor], grads: Sequence[Tensor], exp_avgs: Sequence[Tensor],
                           hessians: Sequence[Tensor], masks: Sequence[Optional[Tensor]], lr: float, beta1: float,
                           beta2: float, rho: float, bs: float, weight_decay: float, eps: float,
                           update_hessian: bool, maximize: bool) -> None:
    rho_bs = rho * bs
    for i, (p, g) in enumerate(zip(params, grads)):
        on = dense_mask(masks[i], p)
        s = state_dtype(p.dtype)
        g = g.to(s)
        if maximize:
            g = -g
        m, h = exp_avgs[i], hessians[i]
        nh = beta2 * h + (1 - beta2) * g * g if update_hessian else h
        nm = beta1 * m + (1 - beta1) * g
        pv = p.to(s) * (1 - lr * weight_decay)
        ratio = (nm.abs() / (rho_bs * nh.clamp(min=0) + eps)).clamp(max=1)
        _put(p, pv - lr * torch.sign(nm) * ratio, on)
        _put(m, nm, on)
        if update_hessian:
            _put(h, nh, on)
