"""Every op schema and fake of pyunlearn, one block per op (torch.library).

Kernels only attach: C++ CPU/CUDA via TORCH_LIBRARY_IMPL in csrc/, Triton and the reference twins through
pyunlearn._backends. Grep an op name here to land on its contract.
"""

from __future__ import annotations

import torch

LIB = torch.library.Library("pyunlearn", "DEF")

# ---------------------------------------------------------------------------------------------------------------
# Masked / sparse optimizer steps. Lists are parameter groups (multi-tensor); masks[i] is None (update all), a
# bool/uint8 dense mask of params[i]'s shape, or a 1-D int32/int64 list of flat indices. Where the mask is off,
# the parameter and all of its state stay bit-identical. State is fp32 for fp16/bf16 params, else param dtype.
# ---------------------------------------------------------------------------------------------------------------

# torch.optim.SGD semantics; first_step: buffers are set to the (decayed) gradient instead of updated.
LIB.define(
    "masked_sgd_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, Tensor?[] masks, "
    "float lr, float momentum, float dampening, float weight_decay, bool nesterov, bool maximize, "
    "bool first_step) -> ()"
)


@torch.library.register_fake("pyunlearn::masked_sgd_step")
def _masked_sgd_step_fake(params, grads, momentum_buffers, masks, lr, momentum, dampening, weight_decay,
                          nesterov, maximize, first_step) -> None:
    return None


# torch.optim.AdamW semantics (decoupled decay); step = the step count after this update (>= 1).
LIB.define(
    "masked_adamw_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
    "Tensor(d!)[] max_exp_avg_sqs, Tensor?[] masks, float lr, float beta1, float beta2, float weight_decay, "
    "float eps, float step, bool amsgrad, bool maximize) -> ()"
)


@torch.library.register_fake("pyunlearn::masked_adamw_step")
def _masked_adamw_step_fake(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks, lr, beta1, beta2,
                            weight_decay, eps, step, amsgrad, maximize) -> None:
    return None


# Sophia (SophiaG clipping, SOUL usage): update_hessian folds h = b2 h + (1-b2) g^2 into the step.
LIB.define(
    "masked_sophia_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] hessians, "
    "Tensor?[] masks, float lr, float beta1, float beta2, float rho, float bs, float weight_decay, float eps, "
    "bool update_hessian, bool maximize) -> ()"
)


@torch.library.register_fake("pyunlearn::masked_sophia_step")
def _masked_sophia_step_fake(params, grads, exp_avgs, hessians, masks, lr, beta1, beta2, rho, bs, weight_decay,
                             eps, update_hessian, maximize) -> None:
    return None
