"""Triton kernels of the seeded ZO direction ops: the "triton" backend of torch.ops.pyunlearn.zo_*.

The generator is the one of pyunlearn/reference/zo.py and csrc/zo/zo_math.h (docs/zo_ops.md): Philox4x32-10 with
key (seed lo, seed hi) and counter (g lo, g hi, k lo, k hi) for group g = j >> 2 of element j and direction k.
A program handles BG whole groups: one Philox call per group gives the 4 words of its 4 consecutive elements,
which are turned into 4 values (two Box-Muller pairs, or 4 signs) and interleaved back into element order with
tl.join + reshape. Philox is written here on uint32 with tl.umulhi (not triton.language.random, whose counter
layout is its own).

zo_accumulate: one launch per tensor (tensors of one call are consecutive segments of the flat space; a running
offset is passed); zo_accumulate_rows: one launch per tensor over a 2-D grid (element blocks x rows, row k is
direction direction0 + k); the K coefficients are read in the kernel, so a device-side projected gradient never syncs.
Arithmetic in fp32 (fp64 for fp64 tensors), FMA contraction off, in the order acc = 0; acc += c_k z_k;
t = t + scale * acc. A non-contiguous tensor is stepped in a contiguous copy that is written back.
On CPU tensors the kernels need the Triton interpreter (TRITON_INTERPRET=1 set before triton is imported).
"""

from __future__ import annotations

from collections.abc import Sequence

import triton
import triton.language as tl
from pyunlearn.kernels._common import check_device, compute_dtype, interpreted, on_device
from torch import Tensor

_M0: tl.constexpr = tl.constexpr(0xD2511F53)
_M1: tl.constexpr = tl.constexpr(0xCD9E8D57)
_W0: tl.constexpr = tl.constexpr(0x9E3779B9)
_W1: tl.constexpr = tl.constexpr(0xBB67AE85)
_DIST = {"gaussian": 0, "rademacher": 1}


@triton.jit
def _philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint32 blocks (key bumped after each round; the last bump is unused)."""
    for _ in tl.static_range(10):
        a0, a2 = c0, c2
        c0 = tl.umulhi(a2, _M1) ^ c1 ^ k0
        c2 = tl.umulhi(a0, _M0) ^ c3 ^ k1
        c1 = a2 * _M1
        c3 = a0 * _M0
        k0 = k0 + _W0
        k1 = k1 + _W1
    return c0, c1, c2, c3


@triton.jit
def _words(seed, direction, g):
    """The 4 Philox words [BG] (uint32) of groups g [BG] (int64 >= 0) of `direction` (int64 scalar)."""
    s = seed.to(tl.int64).to(tl.uint64, bitcast=True)
    k0 = (s & 0xFFFFFFFF).to(tl.uint32)
    k1 = (s >> 32).to(tl.uint32)
    gu = g.to(tl.uint64, bitcast=True)
    d = direction.to(tl.int64).to(tl.uint64, bitcast=True)
    zero = tl.zeros_like(g).to(tl.uint32)
    c0 = (gu & 0xFFFFFFFF).to(tl.uint32)
    c1 = (gu >> 32).to(tl.uint32)
    c2 = zero + (d & 0xFFFFFFFF).to(tl.uint32)
    c3 = zero + (d >> 32).to(tl.uint32)
    return _philox4x32_10(c0, c1, c2, c3, k0, k1)


@triton.jit
def _interleave(a, b, c, d):
    """[BG] x4 -> [4 BG] with element 4i + q taken from the q-th argument."""
    return tl.reshape(tl.join(tl.join(a, c), tl.join(b, d)), [4 * a.shape[0]])


@triton.jit
def _box_muller(a, b):
    """(r cos t, r sin t) in fp32 from a radius word a and an angle word b (uint32 [BG])."""
    u = ((a >> 8) + 1).to(tl.float32) * 5.9604644775390625e-08  # (0, 1], exact
    v = (b >> 8).to(tl.float32) * 5.9604644775390625e-08        # [0, 1), exact
    r = tl.sqrt_rn(tl.log(u) * -2.0)
    t = v * 6.2831854820251465
    return r * tl.cos(t), r * tl.sin(t)


@triton.jit
def _sign(x):
    return tl.where((x >> 31) != 0, -1.0, 1.0).to(tl.float32)


@triton.jit(do_not_specialize=["K", "n", "offset", "seed", "direction0"])
def _zo_accumulate_kernel(t_ptr, c_ptr, K, n, offset, seed, direction0, scale: tl.float64,
                          CDT: tl.constexpr, DIST: tl.constexpr, BG: tl.constexpr):
    # t [n] holds elements offset .. offset+n-1; this program covers groups g_first + pid*BG + [0, BG).
    g_first = offset.to(tl.int64) // 4
    g = g_first + tl.program_id(0).to(tl.int64) * BG + tl.arange(0, BG)  # [BG]
    i = (g_first * 4 - offset) + tl.program_id(0).to(tl.int64) * (4 * BG) + tl.arange(0, 4 * BG)  # [4 BG]
    live = (i >= 0) & (i < n)
    acc = tl.zeros([4 * BG], CDT)
    for k in range(K):
        x0, x1, x2, x3 = _words(seed, direction0 + k, g)
        if DIST == 0:
            z0, z1 = _box_muller(x0, x1)
            z2, z3 = _box_muller(x2, x3)
        else:
            z0, z1, z2, z3 = _sign(x0), _sign(x1), _sign(x2), _sign(x3)
        z = _interleave(z0, z1, z2, z3).to(CDT)  # [4 BG] element order
        c = tl.load(c_ptr + k).to(CDT)
        acc = acc + c * z
    t = tl.load(t_ptr + i, mask=live, other=0).to(CDT)
    t = t + tl.full([], scale, CDT) * acc
    tl.store(t_ptr + i, t.to(t_ptr.dtype.element_ty), mask=live)


@triton.jit(do_not_specialize=["n", "row_stride", "offset", "seed", "direction0"])
def _zo_accumulate_rows_kernel(t_ptr, a_ptr, n, row_stride, offset, seed, direction0, CDT: tl.constexpr,
                               DIST: tl.constexpr, BG: tl.constexpr):
    # Program (p, k): row k (t_ptr + k * row_stride, elements offset .. offset+n-1 of direction direction0 + k),
    # groups g_first + p*BG + [0, BG). Same values and roundings as _zo_accumulate_kernel with K = 1, scale = 1.
    k = tl.program_id(1).to(tl.int64)
    g_first = offset.to(tl.int64) // 4
    g = g_first + tl.program_id(0).to(tl.int64) * BG + tl.arange(0, BG)  # [BG]
    i = (g_first * 4 - offset) + tl.program_id(0).to(tl.int64) * (4 * BG) + tl.arange(0, 4 * BG)  # [4 BG]
    live = (i >= 0) & (i < n)
    x0, x1, x2, x3 = _words(seed, direction0 + k, g)
    if DIST == 0:
        z0, z1 = _box_muller(x0, x1)
        z2, z3 = _box_muller(x2, x3)
    else:
        z0, z1, z2, z3 = _sign(x0), _sign(x1), _sign(x2), _sign(x3)
    z = _interleave(z0, z1, z2, z3).to(CDT)
    acc = tl.zeros([4 * BG], CDT) + tl.load(a_ptr).to(CDT) * z
    row = t_ptr + k * row_stride
    t = tl.load(row + i, mask=live, other=0).to(CDT)
    t = t + acc
    tl.store(row + i, t.to(t_ptr.dtype.element_ty), mask=live)


@triton.jit(do_not_specialize=["n", "offset", "seed", "direction"])
def _zo_philox_bits_kernel(out_ptr, n, offset, seed, direction, BG: tl.constexpr):
    g_first = offset.to(tl.int64) // 4
    g = g_first + tl.program_id(0).to(tl.int64) * BG + tl.arange(0, BG)
    i = (g_first * 4 - offset) + tl.program_id(0).to(tl.int64) * (4 * BG) + tl.arange(0, 4 * BG)
    live = (i >= 0) & (i < n)
    x0, x1, x2, x3 = _words(seed, direction, g)
    w = _interleave(x0, x1, x2, x3).to(tl.int64)  # zero-extends the uint32 words
    tl.store(out_ptr + i, w, mask=live)


def _groups(offset: int, n: int) -> int:
    return (offset + n - 1) // 4 - offset // 4 + 1


def _block_groups() -> int:
    # The interpreter pays per program instance: few large blocks there; 256 groups (1024 elements) on a GPU.
    return 1024 if interpreted() else 256


def zo_accumulate(tensors: Sequence[Tensor], coeffs: Tensor, seed: int, direction0: int, scale: float,
                  dist: str, offset: int) -> None:
    """t += scale * sum_k coeffs[k] z(seed, direction0 + k, .) over the tensors as one flat vector."""
    if dist not in _DIST:
        raise ValueError(f"dist must be one of {tuple(_DIST)}, got {dist!r}")
    base = int(offset)
    coeffs_w = coeffs.contiguous()
    bg = _block_groups()
    for t in tensors:
        n = t.numel()
        if n == 0 or coeffs.numel() == 0:
            base += n
            continue
        check_device(t)
        work = t.contiguous()
        grid = (triton.cdiv(_groups(base, n), bg),)
        with on_device(t):
            _zo_accumulate_kernel[grid](work, coeffs_w, coeffs.numel(), n, base, int(seed), int(direction0),
                                        float(scale), CDT=compute_dtype(t.dtype), DIST=_DIST[dist], BG=bg,
                                        num_warps=4, enable_fp_fusion=False)
        if work is not t:
            t.copy_(work)
        base += n


_MAX_GRID_Y = 65535  # CUDA's limit on the second grid dimension: more rows go in several launches


def zo_accumulate_rows(tensors: Sequence[Tensor], alpha: Tensor, seed: int, direction0: int, dist: str,
                       offset: int) -> None:
    """Row k of the [K, n_i] tensors (one flat vector per row from `offset`) += alpha z(seed, direction0 + k, .):
    one launch per tensor over a 2-D grid (element blocks, rows)."""
    if dist not in _DIST:
        raise ValueError(f"dist must be one of {tuple(_DIST)}, got {dist!r}")
    if not tensors:
        return
    rows = tensors[0].shape[0]
    for i, t in enumerate(tensors):
        if t.dim() != 2 or t.shape[0] != rows:
            raise ValueError(f"tensors[{i}] must be 2-D [K={rows}, n], got shape {list(t.shape)}")
    base = int(offset)
    alpha_w = alpha.reshape(1).contiguous()
    bg = _block_groups()
    for t in tensors:
        n = t.shape[1]
        if n == 0 or rows == 0:
            base += n
            continue
        check_device(t)
        direct = (n <= 1 or t.stride(1) == 1) and (rows <= 1 or t.stride(0) >= n)
        work = t if direct else t.contiguous()
        for k0 in range(0, rows, _MAX_GRID_Y):
            part = work[k0:k0 + _MAX_GRID_Y]
            grid = (triton.cdiv(_groups(base, n), bg), part.shape[0])
            with on_device(t):
                _zo_accumulate_rows_kernel[grid](part, alpha_w, n, part.stride(0), base, int(seed),
                                                 int(direction0) + k0, CDT=compute_dtype(t.dtype),
                                                 DIST=_DIST[dist], BG=bg, num_warps=4, enable_fp_fusion=False)
        if work is not t:
            t.copy_(work)
        base += n


def zo_philox_bits(out: Tensor, seed: int, direction: int, offset: int) -> None:
    """out[i] = the raw Philox word of element offset + i of `direction` (int64 holding uint32)."""
    n = out.numel()
    if n == 0:
        return
    check_device(out)
    work = out.contiguous()
    bg = _block_groups()
    with on_device(out):
        _zo_philox_bits_kernel[(triton.cdiv(_groups(offset, n), bg),)](work, n, int(offset), int(seed),
                                                                       int(direction), BG=bg, num_warps=4)
    if work is not out:
        out.copy_(work)
