"""Helpers shared by the Triton kernel families: IEEE-rounded division and square root, the compute dtype, and
the launch-side device handling (CUDA device context; CPU tensors only under the interpreter)."""

from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def div_rn(a, b, CDT: tl.constexpr):
    # fp32 `/` lowers to an approximate instruction on NVIDIA GPUs; div_rn rounds like the CPU kernels.
    if CDT == tl.float64:
        return a / b
    else:
        return tl.div_rn(a, b)


@triton.jit
def sqrt_rn(x, CDT: tl.constexpr):
    # as div_rn: the IEEE-rounded square root in fp32
    if CDT == tl.float64:
        return tl.sqrt(x)
    else:
        return tl.sqrt_rn(x)


def compute_dtype(dtype: torch.dtype):
    """The kernels' arithmetic type: fp64 for fp64 tensors, else fp32 (also for fp16/bf16 storage)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_device(t: Optional[Tensor]) -> None:
    if t is not None and t.device.type == "cpu" and not interpreted():
        raise RuntimeError("the triton backend needs a CUDA tensor, or TRITON_INTERPRET=1 set before "
                           "importing triton to run its kernels on CPU tensors in the Triton interpreter")


def on_device(t: Tensor):
    """Triton launches on the current CUDA device: make it the tensor's."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
