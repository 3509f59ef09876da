"""Seeded zeroth-order directions, generated in-kernel and never stored (docs/zo_ops.md).

z(seed, k, j) is the value of direction k at element j of the flat parameter space: a list of tensors is one
flat vector whose segments follow each other from `offset` (parameter i starts at the sum of the numel of the
earlier ones), element j of a tensor being its row-major flat index. z comes from Philox4x32-10 keyed by the
64-bit seed with counter (j >> 2, k), so any chunk, subset, order or backend regenerates the same values:
"gaussian" (Box-Muller, fp32) or "rademacher" (+-1). One op serves MeZO's perturb / restore / update and the
assembly of g = (1/q) sum_k c_k z_k:

    zo_accumulate_(tensors, coeffs, seed=s, direction0=k0, scale=a)
        t += a * sum_k coeffs[k] * z(s, k0 + k, .)     (fp32 accumulation, fp64 for fp64 tensors)

coeffs is a 1-D tensor on the tensors' device, so a projected gradient computed on the GPU never syncs.
Non-contiguous tensors are handled (stepped in a contiguous copy that is written back: correct, not the fast
path).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pyunlearn.ops._checks import as_tensor_list
from pyunlearn.reference.zo import DISTS

TENSOR_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
COEFF_DTYPES = (torch.float32, torch.float64)
_U64 = 1 << 64
_I63 = 1 << 63

__all__ = ["DISTS", "assemble", "perturb_", "restore_", "zo_accumulate_", "zo_accumulate_rows_", "zo_bits",
           "zo_directions"]


def _int_arg(name: str, value, *, low: int = 0, high: int = _I63) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a Python int, got {type(value).__name__}")
    if not low <= value < high:
        raise ValueError(f"{name} must be in [{low}, 2^{high.bit_length() - 1}), got {value}")
    return value


def _seed_arg(seed) -> int:
    """A seed in [0, 2^64) as the int64 with its bit pattern (the schema's int is int64)."""
    s = _int_arg("seed", seed, high=_U64)
    return s - _U64 if s >= _I63 else s


def _dist_arg(dist) -> str:
    if dist not in DISTS:
        raise ValueError(f"dist must be one of {DISTS}, got {dist!r}")
    return dist


def _scale_arg(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Python float, got {type(value).__name__}")
    return float(value)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_tensors(tensors: list[Tensor]) -> None:
    for i, t in enumerate(tensors):
        if t.dtype not in TENSOR_DTYPES:
            raise TypeError(f"tensors[{i}] must be fp16/bf16/fp32/fp64, got {t.dtype}")
        if t.dtype != tensors[0].dtype:
            raise TypeError(f"tensors[{i}] must have tensors[0]'s dtype {tensors[0].dtype} (one dtype per call), "
                            f"got {t.dtype}")
        if t.device != tensors[0].device:
            raise ValueError(f"tensors[{i}] must be on tensors[0]'s device {tensors[0].device}, got {t.device}")


def _check_coeffs(coeffs, device) -> None:
    if not isinstance(coeffs, Tensor):
        raise TypeError(f"coeffs must be a 1-D Tensor (fp32/fp64), got {type(coeffs).__name__}")
    if coeffs.dim() != 1:
        raise ValueError(f"coeffs must be 1-D (one coefficient per direction), got shape {list(coeffs.shape)}")
    if coeffs.dtype not in COEFF_DTYPES:
        raise TypeError(f"coeffs must be fp32 or fp64, got {coeffs.dtype}")
    if device is not None and coeffs.device != device:
        raise ValueError(f"coeffs must be on the tensors' device {device}, got {coeffs.device}")


def zo_accumulate_(tensors: Tensor | Sequence[Tensor], coeffs: Tensor, *, seed: int, direction0: int = 0,
                   scale: float = 1.0, dist: str = "gaussian", offset: int = 0) -> None:
    """In place: t += scale * sum_{k < len(coeffs)} coeffs[k] * z(seed, direction0 + k, j) for every tensor of
    the list viewed as consecutive segments of one flat vector starting at element `offset`.

    tensors: one dtype (fp16, bf16, fp32 or fp64) and one device; coeffs: 1-D fp32/fp64 on that device;
    seed in [0, 2^64); direction0, offset >= 0. Accumulates in fp32 (fp64 for fp64 tensors)."""
    tensors = as_tensor_list("tensors", tensors)
    _check_tensors(tensors)
    _check_coeffs(coeffs, tensors[0].device if tensors else None)
    s = _seed_arg(seed)
    d0 = _int_arg("direction0", direction0)
    _int_arg("direction0 + len(coeffs)", d0 + coeffs.shape[0])
    off = _int_arg("offset", offset)
    _int_arg("offset + total numel", off + sum(t.numel() for t in tensors))
    torch.ops.pyunlearn.zo_accumulate(tensors, coeffs, s, d0, _scale_arg("scale", scale), _dist_arg(dist), off)


def zo_accumulate_rows_(tensors: Tensor | Sequence[Tensor], alpha: Tensor, *, seed: int, direction0: int = 0,
                        dist: str = "gaussian", offset: int = 0) -> None:
    """K directions at once, in place: every tensors[i] is 2-D [K, n_i] (the same K for all); row k of the list,
    viewed as one flat vector whose tensor i starts at offset + sum_{i' < i} n_i', gets
    t += alpha * z(seed, direction0 + k, j). Bit for bit what K calls
    zo_accumulate_([t[k] for t in tensors], alpha, seed=seed, direction0=direction0 + k, dist=dist, offset=offset)
    compute, in one kernel call (RGE's chunk of directions as rows of per-parameter buffers).

    alpha: a one-element fp32/fp64 tensor on the tensors' device (rounded to fp32 for non-fp64 tensors, as
    zo_accumulate_'s coeffs). Rows whose elements are contiguous (e.g. a contiguous [K, n] or rows of a bigger
    buffer) are the fast path; other layouts are stepped in a contiguous copy that is written back."""
    tensors = as_tensor_list("tensors", tensors)
    _check_tensors(tensors)
    rows = tensors[0].shape[0] if tensors and tensors[0].dim() == 2 else None
    for i, t in enumerate(tensors):
        if t.dim() != 2:
            raise ValueError(f"tensors[{i}] must be 2-D [K, n] (one row per direction), got shape {list(t.shape)}")
        if t.shape[0] != rows:
            raise ValueError(f"tensors[{i}] must have tensors[0]'s number of rows K = {rows}, got {t.shape[0]}")
    if not isinstance(alpha, Tensor):
        raise TypeError(f"alpha must be a one-element Tensor (fp32/fp64), got {type(alpha).__name__}")
    if alpha.numel() != 1:
        raise ValueError(f"alpha must be a one-element tensor, got shape {list(alpha.shape)}")
    if alpha.dtype not in COEFF_DTYPES:
        raise TypeError(f"alpha must be fp32 or fp64, got {alpha.dtype}")
    if tensors and alpha.device != tensors[0].device:
        raise ValueError(f"alpha must be on the tensors' device {tensors[0].device}, got {alpha.device}")
    s = _seed_arg(seed)
    d0 = _int_arg("direction0", direction0)
    _int_arg("direction0 + K", d0 + (rows or 0))
    off = _int_arg("offset", offset)
    _int_arg("offset + total row length", off + sum(t.shape[1] for t in tensors))
    torch.ops.pyunlearn.zo_accumulate_rows(tensors, alpha, s, d0, _dist_arg(dist), off)


def zo_directions(numel: int, *, seed: int, direction: int = 0, offset: int = 0, dist: str = "gaussian",
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """z(seed, direction, offset + i) for i < numel, materialised as a 1-D tensor of `dtype` (the fp32 value
    rounded to fp16/bf16, or widened to fp64)."""
    n = _int_arg("numel", numel)
    if dtype not in TENSOR_DTYPES:
        raise TypeError(f"dtype must be fp16/bf16/fp32/fp64, got {dtype}")
    _int_arg("direction", direction)
    out = torch.zeros(n, dtype=dtype, device=device)
    one = torch.ones(1, dtype=_acc_dtype(dtype), device=out.device)
    zo_accumulate_([out], one, seed=seed, direction0=direction, dist=dist, offset=offset)
    return out


def zo_bits(numel: int, *, seed: int, direction: int = 0, offset: int = 0,
            device: torch.device | str = "cpu") -> Tensor:
    """The raw Philox word of elements offset .. offset+numel-1 of `direction` (int64 holding uint32)."""
    n = _int_arg("numel", numel)
    out = torch.empty(n, dtype=torch.int64, device=device)
    off = _int_arg("offset", offset)
    _int_arg("offset + numel", off + n)
    torch.ops.pyunlearn.zo_philox_bits(out, _seed_arg(seed), _int_arg("direction", direction), off)
    return out


def _alpha_coeffs(alpha, tensors: list[Tensor], negate: bool) -> Tensor:
    if isinstance(alpha, Tensor):
        if alpha.numel() != 1:
            raise ValueError(f"alpha must be a number or a one-element tensor, got shape {list(alpha.shape)}")
        if alpha.dtype not in COEFF_DTYPES:
            raise TypeError(f"alpha (a tensor) must be fp32 or fp64, got {alpha.dtype}")
        c = alpha.reshape(1)
        return -c if negate else c
    a = _scale_arg("alpha", alpha)
    dtype = _acc_dtype(tensors[0].dtype) if tensors else torch.float32
    device = tensors[0].device if tensors else "cpu"
    return torch.tensor([-a if negate else a], dtype=dtype, device=device)


def perturb_(tensors: Tensor | Sequence[Tensor], *, seed: int, direction: int, alpha: float | Tensor,
             dist: str = "gaussian", offset: int = 0) -> None:
    """t += alpha * z(seed, direction, .) in place (MeZO's perturbation). alpha: a float or a one-element
    fp32/fp64 tensor on the tensors' device."""
    tensors = as_tensor_list("tensors", tensors)
    _check_tensors(tensors)
    _int_arg("direction", direction)
    zo_accumulate_(tensors, _alpha_coeffs(alpha, tensors, False), seed=seed, direction0=direction, dist=dist,
                   offset=offset)


def restore_(tensors: Tensor | Sequence[Tensor], *, seed: int, direction: int, alpha: float | Tensor,
             dist: str = "gaussian", offset: int = 0) -> None:
    """t -= alpha * z(seed, direction, .) in place: undoes perturb_ with the same arguments (exactly when
    t + alpha z did not round, e.g. Rademacher with a power-of-two alpha on a grid of alpha; else within one
    rounding of t + alpha z, docs/zo_ops.md)."""
    tensors = as_tensor_list("tensors", tensors)
    _check_tensors(tensors)
    _int_arg("direction", direction)
    zo_accumulate_(tensors, _alpha_coeffs(alpha, tensors, True), seed=seed, direction0=direction, dist=dist,
                   offset=offset)


def assemble(like: Sequence[Tensor | Sequence[int]], coeffs: Tensor, *, seed: int, dist: str = "gaussian",
             scale: float = 1.0, offset: int = 0, direction0: int = 0) -> list[Tensor]:
    """New tensors g_i = scale * sum_k coeffs[k] * z(seed, direction0 + k, .) over the segments of `like`
    (tensors: their shape, dtype and device; or shapes: fp32 on coeffs' device). With scale = 1/q this is
    RGE's gradient (1/q) sum_k c_k z_k from the projected gradients c_k."""
    if isinstance(like, Tensor):
        like = [like]
    _check_coeffs(coeffs, None)
    outs = []
    for i, item in enumerate(like):
        if isinstance(item, Tensor):
            outs.append(torch.zeros(item.shape, dtype=item.dtype, device=item.device))
        elif isinstance(item, (tuple, list, torch.Size)) and all(isinstance(d, int) for d in item):
            outs.append(torch.zeros(tuple(item), dtype=torch.float32, device=coeffs.device))
        else:
            raise TypeError(f"like[{i}] must be a Tensor or a shape (a tuple of ints), got {type(item).__name__}")
    if outs:
        zo_accumulate_(outs, coeffs, seed=seed, direction0=direction0, scale=scale, dist=dist, offset=offset)
    return outs
