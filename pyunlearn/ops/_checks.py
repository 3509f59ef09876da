"""Argument checks of the public functional API, shared by every backend.

They mirror csrc/common/checks.h (same words), so an error reads the same whichever backend runs the op; the
C++ kernels check again for callers that go straight to torch.ops.pyunlearn.*.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

DENSE_MASK_DTYPES = (torch.bool, torch.uint8)
INDEX_DTYPES = (torch.int32, torch.int64)


def as_tensor_list(name: str, x: Tensor | Sequence[Tensor]) -> list[Tensor]:
    if isinstance(x, Tensor):
        return [x]
    if not isinstance(x, (list, tuple)) or not all(isinstance(t, Tensor) for t in x):
        raise TypeError(f"{name} must be a Tensor or a list of Tensors, got {type(x).__name__}")
    return list(x)


def as_mask_list(masks, n: int) -> list[Optional[Tensor]]:
    if masks is None:
        return [None] * n
    if isinstance(masks, Tensor):
        masks = [masks]
    if not isinstance(masks, (list, tuple)) or not all(m is None or isinstance(m, Tensor) for m in masks):
        raise TypeError(f"masks must be None, a Tensor or a list of Tensor/None, got {type(masks).__name__}")
    if len(masks) != n:
        raise ValueError(f"masks must have one entry per tensor of params (expected {n}), got {len(masks)}")
    return list(masks)


def check_number(name: str, value, *, low: float | None = 0.0, below: float | None = None,
                 positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Python float, got {type(value).__name__}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if low is not None and not value >= low:
        raise ValueError(f"{name} must be >= {low:g}, got {value}")
    if below is not None and not value < below:
        raise ValueError(f"{name} must be in [0, {below:g}), got {value}")


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_param(name: str, p: Tensor) -> None:
    if not p.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {p.dtype}")


def check_like(name: str, t: Tensor, ref_name: str, ref: Tensor, dtype: torch.dtype) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} must be on {ref_name}'s device {ref.device}, got {t.device}")
    if t.shape != ref.shape:
        raise ValueError(f"{name} must have {ref_name}'s shape {list(ref.shape)}, got {list(t.shape)}")
    if t.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {t.dtype}")


def check_mask(name: str, mask: Optional[Tensor], param: Tensor, pname: str, *, bounds: bool = True,
               unique: bool = False) -> None:
    """A mask is None, a bool/uint8 tensor of param's shape, or a 1-D int32/int64 list of flat indices."""
    if mask is None:
        return
    if mask.device != param.device:
        raise ValueError(f"{name} must be on {pname}'s device {param.device}, got {mask.device}")
    if mask.dtype in DENSE_MASK_DTYPES:
        if mask.shape != param.shape:
            raise ValueError(f"{name} (a dense mask) must have {pname}'s shape {list(param.shape)}, "
                             f"got {list(mask.shape)}")
        return
    if mask.dtype not in INDEX_DTYPES:
        raise TypeError(f"{name} must be a bool/uint8 dense mask or an int32/int64 index list, got dtype "
                        f"{mask.dtype}")
    if mask.dim() != 1:
        raise ValueError(f"{name} (an index list) must be 1-D, got shape {list(mask.shape)}")
    if mask.numel() == 0:
        return
    if bounds:  # a host sync on GPU: the optimizers check once when masks are set, not every step
        lo, hi = (int(v) for v in torch.aminmax(mask))
        if lo < 0 or hi >= param.numel():
            raise IndexError(f"{name} must hold flat indices in [0, {param.numel()}), got values in [{lo}, {hi}]")
    if unique and torch.unique(mask).numel() != mask.numel():
        raise ValueError(f"{name} must not repeat an index (each listed entry is stepped once)")


def check_group(params: list[Tensor], grads: list[Tensor], states: dict[str, list[Tensor]],
                masks: list[Optional[Tensor]], *, bounds: bool = True) -> None:
    n = len(params)
    for name, lst in [("grads", grads), *states.items()]:
        if len(lst) != n:
            raise ValueError(f"{name} must have one entry per tensor of params (expected {n}), got {len(lst)}")
    for i, p in enumerate(params):
        pname = f"params[{i}]"
        check_param(pname, p)
        check_like(f"grads[{i}]", grads[i], pname, p, p.dtype)
        for name, lst in states.items():
            check_like(f"{name}[{i}]", lst[i], pname, p, state_dtype(p.dtype))
        check_mask(f"masks[{i}]", masks[i], p, pname, bounds=bounds)
