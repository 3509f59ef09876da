"""Triton kernels of the masked optimizer steps: the "triton" backend of torch.ops.pyunlearn.masked_*_step.

Each op steps a list of tensors with one launch per tensor. A launch is one pass over memory: it reads the
parameter, its gradient, its optimizer state and its mask once and writes the parameter and the state once.
The per-element math is that of csrc/masked_optim/masked_optim_math.h, in the order of the reference twins
(pyunlearn/reference/masked_optim.py):

- arithmetic runs in the state dtype (fp64 for fp64 parameters, else fp32): parameters are converted right
  after the load and back only at the store (bf16 arithmetic is also wrong under the Triton interpreter);
- hyperparameters travel as fp64 and round once to the compute dtype in the kernel; the scalars derived from
  them (1 - beta, bias corrections, 1 - lr*wd) are computed on the host in double, as the reference does;
- division and square root round to nearest (IEEE) and FMA contraction is off, so every operation rounds as
  the C++ kernels' scalar code does.

masks[i]: None updates every element; a bool/uint8 tensor of the parameter's shape updates the elements where
it is nonzero; a 1-D int32/int64 tensor of K flat row-major indices updates exactly those elements, with a
grid over the K indices, never the whole parameter. Elements the mask leaves off are never stored (nor, for
index lists, visited), so they and their state stay bit-identical.

On CPU tensors the kernels need the Triton interpreter (TRITON_INTERPRET=1 set before triton is imported).
Arguments are checked by the Python layer; this module only launches.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from pyunlearn.kernels._common import check_device, compute_dtype, div_rn, interpreted, on_device, sqrt_rn

# MASK_KIND values of the kernels.
_ALL, _DENSE, _INDEX = 0, 1, 2


@triton.jit
def _select(mask_ptr, n, MASK_KIND: tl.constexpr, BLOCK: tl.constexpr):
    """This program's flat element offsets [BLOCK] (int64), which of them exist [BLOCK] (loads) and where the
    step applies [BLOCK] (stores). n is the parameter's numel (MASK_KIND 0, 1) or the index count K (2)."""
    # Loads cover every live element, dense masks included, so they stay vectorised; only the stores honour
    # the mask. int64 positions: parameters may hold more than 2**31 elements.
    k = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = k < n
    if MASK_KIND == 2:
        offs = tl.load(mask_ptr + k, mask=live, other=0).to(tl.int64)
        on = live
    elif MASK_KIND == 1:
        offs = k
        on = live & (tl.load(mask_ptr + k, mask=live, other=0) != 0)
    else:
        offs = k
        on = live
    return offs, live, on


@triton.jit
def _masked_sgd_step_kernel(
    p_ptr, g_ptr, buf_ptr, mask_ptr, n,
    lr: tl.float64, momentum: tl.float64, one_m_dampening: tl.float64, weight_decay: tl.float64,
    CDT: tl.constexpr, MASK_KIND: tl.constexpr, HAS_WD: tl.constexpr, HAS_BUF: tl.constexpr,
    NESTEROV: tl.constexpr, MAXIMIZE: tl.constexpr, FIRST_STEP: tl.constexpr, BLOCK: tl.constexpr,
):
    # One pass: read p, g, buf (not on the first step), mask; write p, buf. Off elements are never stored.
    offs, live, on = _select(mask_ptr, n, MASK_KIND, BLOCK)
    # Hyperparameters arrive as fp64 and round once to the compute dtype (the C++ kernels' S(x)).
    lr = tl.full([], lr, CDT)
    momentum = tl.full([], momentum, CDT)
    one_m_dampening = tl.full([], one_m_dampening, CDT)
    weight_decay = tl.full([], weight_decay, CDT)
    p = tl.load(p_ptr + offs, mask=live, other=0).to(CDT)  # [BLOCK]
    g = tl.load(g_ptr + offs, mask=live, other=0).to(CDT)  # [BLOCK]
    if MAXIMIZE:
        g = -g
    if HAS_WD:
        g = g + weight_decay * p
    if HAS_BUF:
        if FIRST_STEP:
            b = g
        else:
            buf = tl.load(buf_ptr + offs, mask=live, other=0)  # [BLOCK] state dtype == CDT
            b = momentum * buf + one_m_dampening * g
        tl.store(buf_ptr + offs, b, mask=on)
        if NESTEROV:
            g = g + momentum * b
        else:
            g = b
    p = p - lr * g
    tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=on)


@triton.jit
def _masked_adamw_step_kernel(
    p_ptr, g_ptr, m_ptr, v_ptr, vmax_ptr, mask_ptr, n,
    decay: tl.float64, beta1: tl.float64, one_m_beta1: tl.float64, beta2: tl.float64, one_m_beta2: tl.float64,
    step_size: tl.float64, bc2_sqrt: tl.float64, eps: tl.float64,
    CDT: tl.constexpr, MASK_KIND: tl.constexpr, AMSGRAD: tl.constexpr, MAXIMIZE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One pass: read p, g, m, v, vmax (amsgrad), mask; write p, m, v, vmax. Off elements are never stored.
    offs, live, on = _select(mask_ptr, n, MASK_KIND, BLOCK)
    decay = tl.full([], decay, CDT)
    beta1 = tl.full([], beta1, CDT)
    one_m_beta1 = tl.full([], one_m_beta1, CDT)
    beta2 = tl.full([], beta2, CDT)
    one_m_beta2 = tl.full([], one_m_beta2, CDT)
    step_size = tl.full([], step_size, CDT)
    bc2_sqrt = tl.full([], bc2_sqrt, CDT)
    eps = tl.full([], eps, CDT)
    p = tl.load(p_ptr + offs, mask=live, other=0).to(CDT)  # [BLOCK]
    g = tl.load(g_ptr + offs, mask=live, other=0).to(CDT)  # [BLOCK]
    m = tl.load(m_ptr + offs, mask=live, other=0)  # [BLOCK] state dtype == CDT
    v = tl.load(v_ptr + offs, mask=live, other=0)  # [BLOCK]
    if MAXIMIZE:
        g = -g
    p = p * decay
    m = beta1 * m + one_m_beta1 * g
    v = beta2 * v + one_m_beta2 * g * g
    vv = v
    if AMSGRAD:
        vmax = tl.load(vmax_ptr + offs, mask=live, other=0)  # [BLOCK]
        vv = tl.maximum(vmax, v)
        tl.store(vmax_ptr + offs, vv, mask=on)
    denom = div_rn(sqrt_rn(vv, CDT), bc2_sqrt, CDT) + eps
    p = p - div_rn(step_size * m, denom, CDT)
    tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=on)
    tl.store(m_ptr + offs, m, mask=on)
    tl.store(v_ptr + offs, v, mask=on)


@triton.jit
def _masked_sophia_step_kernel(
    p_ptr, g_ptr, m_ptr, h_ptr, mask_ptr, n,
    lr: tl.float64, beta1: tl.float64, one_m_beta1: tl.float64, beta2: tl.float64, one_m_beta2: tl.float64,
    rho_bs: tl.float64, decay: tl.float64, eps: tl.float64,
    CDT: tl.constexpr, MASK_KIND: tl.constexpr, UPDATE_HESSIAN: tl.constexpr, MAXIMIZE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One pass: read p, g, m, h, mask; write p, m, and h only on hessian-update steps.
    offs, live, on = _select(mask_ptr, n, MASK_KIND, BLOCK)
    lr = tl.full([], lr, CDT)
    beta1 = tl.full([], beta1, CDT)
    one_m_beta1 = tl.full([], one_m_beta1, CDT)
    beta2 = tl.full([], beta2, CDT)
    one_m_beta2 = tl.full([], one_m_beta2, CDT)
    rho_bs = tl.full([], rho_bs, CDT)
    decay = tl.full([], decay, CDT)
    eps = tl.full([], eps, CDT)
    p = tl.load(p_ptr + offs, mask=live, other=0).to(CDT)  # [BLOCK]
    g = tl.load(g_ptr + offs, mask=live, other=0).to(CDT)  # [BLOCK]
    m = tl.load(m_ptr + offs, mask=live, other=0)  # [BLOCK] state dtype == CDT
    h = tl.load(h_ptr + offs, mask=live, other=0)  # [BLOCK]
    if MAXIMIZE:
        g = -g
    if UPDATE_HESSIAN:
        h = beta2 * h + one_m_beta2 * g * g
        tl.store(h_ptr + offs, h, mask=on)
    m = beta1 * m + one_m_beta1 * g
    p = p * decay
    ratio = div_rn(tl.abs(m), rho_bs * tl.maximum(h, 0.0) + eps, CDT)
    ratio = tl.minimum(ratio, 1.0)
    sign = tl.where(m > 0, 1.0, tl.where(m < 0, -1.0, 0.0)).to(CDT)
    p = p - lr * sign * ratio
    tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=on)
    tl.store(m_ptr + offs, m, mask=on)


def _launch(kernel, p: Tensor, g: Tensor, states: Sequence[Optional[Tensor]], mask: Optional[Tensor],
            scalars: Sequence[float], **flags) -> None:
    """Steps one parameter: one launch of `kernel` over its contiguous working copies, then writes back.

    p: [*] param, g: [*] its grad, states: [*] each (None where the op has no such state this step),
    mask: None | [*] bool/uint8 | [K] int32/int64 flat indices.
    """
    if p.numel() == 0:
        return
    for t in (p, g, mask, *states):
        check_device(t)
    if mask is None:
        kind, count = _ALL, p.numel()
    elif mask.dtype in (torch.bool, torch.uint8):
        kind, count = _DENSE, p.numel()
        mask = mask.contiguous().view(torch.uint8)  # [*] 0/1 bytes, read as uint8 on every backend
    else:
        kind, count = _INDEX, mask.numel()
        mask = mask.contiguous()  # [K]
    if count == 0:
        return
    # Kernels address flat row-major memory; a strided argument is stepped in a contiguous copy.
    p_w, g_w = p.contiguous(), g.contiguous()
    states_w = [None if s is None else s.contiguous() for s in states]
    # Pointers the kernel never reads (absent state, no mask) are bound to p: a constexpr flag guards them.
    args = [p_w, g_w, *(p_w if s is None else s for s in states_w), p_w if mask is None else mask, count]
    cdt = compute_dtype(p.dtype)
    # The interpreter pays ~1.7 ms per program instance, so it gets a few large blocks.
    block = 4096 if interpreted() else 1024
    grid = (triton.cdiv(count, block),)
    with on_device(p):
        kernel[grid](*args, *scalars, CDT=cdt, MASK_KIND=kind, BLOCK=block, num_warps=4,
                     enable_fp_fusion=False, **flags)
    for orig, work in zip((p, *states), (p_w, *states_w)):
        if orig is not None and work is not orig:
            orig.copy_(work)


def masked_sgd_step(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor],
                    masks: list[Optional[Tensor]], lr: float, momentum: float, dampening: float,
                    weight_decay: float, nesterov: bool, maximize: bool, first_step: bool) -> None:
    """torch.optim.SGD step on the masked elements of every params[i] (momentum_buffers is [] when momentum
    is 0)."""
    has_buf = momentum != 0
    scalars = (float(lr), float(momentum), 1.0 - float(dampening), float(weight_decay))
    for i, (p, g) in enumerate(zip(params, grads)):
        buf = momentum_buffers[i] if has_buf else None
        _launch(_masked_sgd_step_kernel, p, g, (buf,), masks[i], scalars,
                HAS_WD=weight_decay != 0, HAS_BUF=has_buf, NESTEROV=has_buf and bool(nesterov),
                MAXIMIZE=bool(maximize), FIRST_STEP=has_buf and bool(first_step))


def masked_adamw_step(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                      exp_avg_sqs: list[Tensor], max_exp_avg_sqs: list[Tensor], masks: list[Optional[Tensor]],
                      lr: float, beta1: float, beta2: float, weight_decay: float, eps: float, step: float,
                      amsgrad: bool, maximize: bool) -> None:
    """torch.optim.AdamW step (step t, 1-based) on the masked elements of every params[i]
    (max_exp_avg_sqs is [] unless amsgrad)."""
    lr, beta1, beta2, step = float(lr), float(beta1), float(beta2), float(step)
    step_size = lr / (1 - beta1 ** step)
    bc2_sqrt = math.sqrt(1 - beta2 ** step)
    scalars = (1 - lr * float(weight_decay), beta1, 1 - beta1, beta2, 1 - beta2, step_size, bc2_sqrt,
               float(eps))
    for i, (p, g) in enumerate(zip(params, grads)):
        vmax = max_exp_avg_sqs[i] if amsgrad else None
        _launch(_masked_adamw_step_kernel, p, g, (exp_avgs[i], exp_avg_sqs[i], vmax), masks[i], scalars,
                AMSGRAD=bool(amsgrad), MAXIMIZE=bool(maximize))


def masked_sophia_step(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                       hessians: list[Tensor], masks: list[Optional[Tensor]], lr: float, beta1: float,
                       beta2: float, rho: float, bs: float, weight_decay: float, eps: float,
                       update_hessian: bool, maximize: bool) -> None:
    """Sophia step (SOUL's variant) on the masked elements of every params[i]; hessians[i] is only written
    when update_hessian."""
    lr, beta1, beta2 = float(lr), float(beta1), float(beta2)
    scalars = (lr, beta1, 1 - beta1, beta2, 1 - beta2, float(rho) * float(bs), 1 - lr * float(weight_decay),
               float(eps))
    for i, (p, g) in enumerate(zip(params, grads)):
        _launch(_masked_sophia_step_kernel, p, g, (exp_avgs[i], hessians[i]), masks[i], scalars,
                UPDATE_HESSIAN=bool(update_hessian), MAXIMIZE=bool(maximize))
