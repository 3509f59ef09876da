"""Reference twins of the seeded ZO direction ops (same signatures as torch.ops.pyunlearn.zo_*).

The generator (docs/zo_ops.md; every backend implements exactly this):
- Philox4x32-10 (Salmon et al., SC'11): key = (seed & 0xffffffff, seed >> 32) of the 64-bit seed; counter =
  (g & 0xffffffff, g >> 32, k & 0xffffffff, k >> 32) for direction k and group g = j >> 2 of global element j
  of the flat parameter space. One Philox call gives the 4 words of elements 4g .. 4g+3; element j takes word
  x[j & 3] for its raw bits ("zo_philox_bits").
- "rademacher": z = -1 if bit 31 of x[j & 3] is set, else +1.
- "gaussian": Box-Muller on the word pairs (x0, x1) -> elements 4g, 4g+1 and (x2, x3) -> 4g+2, 4g+3, in fp32:
  u = ((a >> 8) + 1) * 2^-24 in (0, 1], v = (b >> 8) * 2^-24 in [0, 1), r = sqrt(-2 log u), t = 6.2831855f * v;
  z = r cos t (even element), r sin t (odd element). z is an fp32 value whatever the tensor dtype.

Philox is emulated with int64 torch ops: 32x32 -> 64-bit products are split into 16-bit limbs so nothing overflows
int64. The twin is the oracle of the C++/CUDA/Triton kernels and is checked against Random123's known answers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
PHILOX_ROUNDS = 10
TWO_PI_F32 = 6.2831854820251465  # float32(2 pi), exactly representable in fp32
DISTS = ("gaussian", "rademacher")
_CHUNK = 1 << 20  # elements per reference pass (bounds the int64 temporaries)


def philox4x32_scalar(counter: Sequence[int], key: Sequence[int], rounds: int = PHILOX_ROUNDS) -> tuple[int, ...]:
    """Philox4x32 on Python ints (the textbook form): for known-answer tests of the tensor version."""
    c0, c1, c2, c3 = (int(c) & MASK32 for c in counter)
    k0, k1 = (int(k) & MASK32 for k in key)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
        p0, p1 = PHILOX_M0 * c0, PHILOX_M1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0, p1 & MASK32, (p0 >> 32) ^ c3 ^ k1, p0 & MASK32)
    return c0, c1, c2, c3


def _mulhilo(m: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """(hi, lo) 32-bit halves of m * x for a constant m < 2^32 and an int64 tensor x of values in [0, 2^32)."""
    a = m * (x & 0xFFFF)          # < 2^48
    b = m * (x >> 16)             # < 2^48
    s = a + ((b & 0xFFFF) << 16)  # < 2^49
    return ((b >> 16) + (s >> 32)) & MASK32, s & MASK32


def philox4x32(c0: Tensor, c1: Tensor, c2: Tensor, c3: Tensor, k0: int, k1: int,
               rounds: int = PHILOX_ROUNDS) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox4x32 over int64 tensors holding uint32 values (broadcasting); returns the 4 output words."""
    k0, k1 = k0 & MASK32, k1 & MASK32
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _seed_key(seed: int) -> tuple[int, int]:
    s = int(seed) & 0xFFFFFFFFFFFFFFFF  # the schema carries a uint64 seed as its int64 bit pattern
    return s & MASK32, s >> 32


def _group_words(seed: int, direction: int, first: int, count: int, device) -> Tensor:
    """Philox words of the groups first .. first+count-1 of one direction: int64 [count, 4]."""
    k0, k1 = _seed_key(seed)
    g = torch.arange(first, first + count, dtype=torch.int64, device=device)
    k = torch.full_like(g, int(direction))
    words = philox4x32(g & MASK32, g >> 32, k & MASK32, k >> 32, k0, k1)
    return torch.stack(words, dim=1)


def philox_bits(seed: int, direction: int, start: int, n: int, device="cpu") -> Tensor:
    """The raw word of each element start .. start+n-1 (int64 holding uint32)."""
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    g_first, g_last = start >> 2, (start + n - 1) >> 2
    words = _group_words(seed, direction, g_first, g_last - g_first + 1, device).reshape(-1)
    skip = start - 4 * g_first
    return words[skip:skip + n]


def _z_of_words(words: Tensor, dist: str) -> Tensor:
    """fp32 direction values of whole groups from their words [G, 4] -> [G * 4]."""
    if dist == "rademacher":
        return torch.where((words >> 31) != 0, -1.0, 1.0).to(torch.float32).reshape(-1)
    a = words[:, 0::2]  # radius words x0, x2
    b = words[:, 1::2]  # angle words x1, x3
    scale = 2.0 ** -24
    u = ((a >> 8) + 1).to(torch.float32) * scale  # exact in fp32: an integer <= 2^24 times a power of two
    v = (b >> 8).to(torch.float32) * scale
    r = torch.sqrt(torch.log(u) * -2.0)
    t = v * torch.tensor(TWO_PI_F32, dtype=torch.float32, device=words.device)
    z = torch.stack((r * torch.cos(t), r * torch.sin(t)), dim=2)  # [G, 2 pairs, cos/sin]
    return z.reshape(-1)


def directions_f32(seed: int, direction: int, start: int, n: int, dist: str, device="cpu") -> Tensor:
    """z(seed, direction, start + i) for i < n as an fp32 tensor."""
    if dist not in DISTS:
        raise ValueError(f"dist must be one of {DISTS}, got {dist!r}")
    if n == 0:
        return torch.empty(0, dtype=torch.float32, device=device)
    g_first, g_last = start >> 2, (start + n - 1) >> 2
    words = _group_words(seed, direction, g_first, g_last - g_first + 1, device)
    skip = start - 4 * g_first
    return _z_of_words(words, dist)[skip:skip + n]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def zo_philox_bits_ref(out: Tensor, seed: int, direction: int, offset: int) -> None:
    flat = out.reshape(-1)
    flat.copy_(philox_bits(seed, direction, offset, flat.numel(), out.device))
    if flat.numel() and flat.untyped_storage().data_ptr() != out.untyped_storage().data_ptr():
        out.copy_(flat.view(out.shape))


def zo_accumulate_ref(tensors: Sequence[Tensor], coeffs: Tensor, seed: int, direction0: int, scale: float,
                      dist: str, offset: int) -> None:
    """t += scale * sum_k coeffs[k] * z(seed, direction0 + k, j) over the tensors as one flat vector from
    `offset`; accumulated in fp32 (fp64 for fp64 tensors) in the kernels' order: acc = 0; acc += c_k z_k;
    t = t + scale * acc."""
    if dist not in DISTS:
        raise ValueError(f"dist must be one of {DISTS}, got {dist!r}")
    base = int(offset)
    for t in tensors:
        n = t.numel()
        acc_t = _acc_dtype(t.dtype)
        c = coeffs.to(acc_t)
        s = torch.tensor(scale, dtype=acc_t, device=t.device)
        flat = t.reshape(-1)
        for lo in range(0, n, _CHUNK):
            m = min(_CHUNK, n - lo)
            if c.numel() == 0:
                continue
            acc = torch.zeros(m, dtype=acc_t, device=t.device)
            for k in range(c.numel()):
                z = directions_f32(seed, direction0 + k, base + lo, m, dist, t.device).to(acc_t)
                acc = acc + c[k] * z
            piece = flat[lo:lo + m]
            piece.copy_((piece.to(acc_t) + s * acc).to(t.dtype))
        if n and flat.untyped_storage().data_ptr() != t.untyped_storage().data_ptr():
            t.copy_(flat.view(t.shape))  # reshape copied a non-contiguous tensor: write the result back
        base += n


def zo_accumulate_rows_ref(tensors: Sequence[Tensor], alpha: Tensor, seed: int, direction0: int, dist: str,
                           offset: int) -> None:
    """K directions at once: tensors[i] is [K, n_i]; row k of the list (one flat vector from `offset`) gets
    t += alpha * z(seed, direction0 + k, j), exactly as zo_accumulate_ref([row k of each tensor], alpha, seed,
    direction0 + k, 1.0, dist, offset) computes it (acc = 0 + alpha z; t = t + 1 * acc)."""
    if dist not in DISTS:
        raise ValueError(f"dist must be one of {DISTS}, got {dist!r}")
    if not tensors:
        return
    rows = tensors[0].shape[0]
    for i, t in enumerate(tensors):
        if t.dim() != 2 or t.shape[0] != rows:
            raise ValueError(f"tensors[{i}] must be 2-D [K={rows}, n], got shape {list(t.shape)}")
    a = alpha.reshape(1)
    for k in range(rows):
        zo_accumulate_ref([t[k] for t in tensors], a, seed, direction0 + k, 1.0, dist, offset)
