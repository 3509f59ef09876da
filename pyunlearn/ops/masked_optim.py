"""Functional masked optimizer steps over one tensor or a list of tensors (one parameter group).

Where a mask is off, the parameter and its state stay bit-identical; where it is on the result equals
torch.optim's step to fp32 rounding. A mask is None (update all), a bool/uint8 tensor of the parameter's shape,
or a 1-D int32/int64 tensor of flat indices (only those entries are touched: the fast path at low density).
State tensors are fp32 for fp16/bf16 parameters, else the parameter's dtype.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from pyunlearn.ops._checks import as_mask_list, as_tensor_list, check_group, check_number

Tensors = Tensor | Sequence[Tensor]
Masks = None | Tensor | Sequence[Optional[Tensor]]


def _bounds() -> bool:
    # Index bounds need a host read; skipped while torch.compile traces (the kernels skip out-of-range entries).
    return not torch.compiler.is_compiling()


def masked_sgd_step(params: Tensors, grads: Tensors, momentum_buffers: Tensors = (), masks: Masks = None, *,
                    lr: float, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                    nesterov: bool = False, maximize: bool = False, first_step: bool = False) -> None:
    """torch.optim.SGD's step, in place, only where `masks` select. `first_step` sets the momentum buffers to
    the (decayed) gradient, as SGD does when a buffer is new."""
    params, grads = as_tensor_list("params", params), as_tensor_list("grads", grads)
    bufs = as_tensor_list("momentum_buffers", momentum_buffers)
    masks = as_mask_list(masks, len(params))
    check_number("lr", lr)
    check_number("momentum", momentum)
    check_number("dampening", dampening, low=None)
    check_number("weight_decay", weight_decay)
    if momentum != 0 and not bufs:
        raise ValueError("momentum_buffers must be given when momentum > 0")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(f"nesterov needs momentum > 0 and dampening == 0, got momentum={momentum}, "
                         f"dampening={dampening}")
    check_group(params, grads, {"momentum_buffers": bufs} if bufs else {}, masks, bounds=_bounds())
    torch.ops.pyunlearn.masked_sgd_step(params, grads, bufs, masks, lr, momentum, dampening, weight_decay,
                                        nesterov, maximize, first_step)


def masked_adamw_step(params: Tensors, grads: Tensors, exp_avgs: Tensors, exp_avg_sqs: Tensors,
                      masks: Masks = None, *, lr: float, step: float, beta1: float = 0.9, beta2: float = 0.999,
                      weight_decay: float = 1e-2, eps: float = 1e-8, amsgrad: bool = False,
                      max_exp_avg_sqs: Tensors = (), maximize: bool = False) -> None:
    """torch.optim.AdamW's step, in place, only where `masks` select. `step` is the step count after this
    update (1 on the first step), used for bias correction."""
    params, grads = as_tensor_list("params", params), as_tensor_list("grads", grads)
    exp_avgs, exp_avg_sqs = as_tensor_list("exp_avgs", exp_avgs), as_tensor_list("exp_avg_sqs", exp_avg_sqs)
    vmax = as_tensor_list("max_exp_avg_sqs", max_exp_avg_sqs)
    masks = as_mask_list(masks, len(params))
    check_number("lr", lr)
    check_number("beta1", beta1, below=1.0)
    check_number("beta2", beta2, below=1.0)
    check_number("weight_decay", weight_decay)
    check_number("eps", eps)
    check_number("step", step, low=1.0)
    if amsgrad and not vmax:
        raise ValueError("max_exp_avg_sqs must be given when amsgrad=True")
    states = {"exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}
    if amsgrad:
        states["max_exp_avg_sqs"] = vmax
    check_group(params, grads, states, masks, bounds=_bounds())
    torch.ops.pyunlearn.masked_adamw_step(params, grads, exp_avgs, exp_avg_sqs, vmax if amsgrad else [], masks,
                                          lr, beta1, beta2, weight_decay, eps, float(step), amsgrad, maximize)


def masked_sophia_step(params: Tensors, grads: Tensors, exp_avgs: Tensors, hessians: Tensors,
                       masks: Masks = None, *, lr: float, beta1: float = 0.965, beta2: float = 0.99,
                       rho: float = 0.04, bs: float = 5120.0, weight_decay: float = 0.1, eps: float = 1e-15,
                       update_hessian: bool = False, maximize: bool = False) -> None:
    """Sophia's clipped, Hessian-preconditioned step, in place, only where `masks` select:
    p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  p -= lr * sign(m) * min(|m| / (rho*bs*max(h, 0) + eps), 1).
    `update_hessian` first folds the squared-gradient estimate h = b2 h + (1-b2) g^2 in (SOUL's usage)."""
    params, grads = as_tensor_list("params", params), as_tensor_list("grads", grads)
    exp_avgs, hessians = as_tensor_list("exp_avgs", exp_avgs), as_tensor_list("hessians", hessians)
    masks = as_mask_list(masks, len(params))
    check_number("lr", lr)
    check_number("beta1", beta1, below=1.0)
    check_number("beta2", beta2, below=1.0)
    check_number("rho", rho)
    check_number("bs", bs, positive=True)
    check_number("weight_decay", weight_decay)
    check_number("eps", eps, positive=True)
    check_group(params, grads, {"exp_avgs": exp_avgs, "hessians": hessians}, masks, bounds=_bounds())
    torch.ops.pyunlearn.masked_sophia_step(params, grads, exp_avgs, hessians, masks, lr, beta1, beta2, rho,
                                           float(bs), weight_decay, eps, update_hessian, maximize)
