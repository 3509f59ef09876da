"""Helpers shared by the Triton kernel families: IEEE-rounded division and square root, the compute dtype, and
the launch-side device handling (CUDA device context; CPU tensors only under the interpreter); for the graph
attention kernels (kernels/gat.py, kernels/gatv2.py) the LeakyReLU, the seeded attention dropout (the hash of
csrc/graph_attention/gat.h) with its launch arguments, the statistics dtype and the [edge, head, channel] tiles."""

from __future__ import annotations

import contextlib
import math
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


# --- graph attention (GAT, GATv2) ---------------------------------------------------------------------------------

@triton.jit
def leaky_relu(pre, slope):
    # torch.nn.functional.leaky_relu: x if x > 0 else x * slope (slope already rounded to the compute dtype).
    return tl.where(pre > 0, pre, pre * slope)


@triton.jit
def dropout_m(seed, eid, k, H, keep_thr, keep_scale, CDT: tl.constexpr):
    """m [BE, BH] = keep / (1 - p) for CSR edges eid [BE] (int64) and heads k [BH]: keep iff the top 24 bits of
    splitmix64(seed, eid * H + k) reach keep_thr. seed is the uint64 seed's bits as int64."""
    z = (eid[:, None] * H + k[None, :] + 1).to(tl.int64).to(tl.uint64, bitcast=True)  # [BE, BH] counter + 1
    z = seed.to(tl.int64).to(tl.uint64, bitcast=True) + z * 0x9E3779B97F4A7C15
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    z = z ^ (z >> 31)
    keep = (z >> 40).to(tl.int64) >= keep_thr  # [BE, BH]
    return tl.where(keep, tl.full([], keep_scale, CDT), tl.zeros([], CDT))


def stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the saved softmax statistics and of the kernels' fp32/fp64 buffers."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dropout_args(dropout: float, seed: int, dtype: torch.dtype) -> tuple[int, int, float]:
    """(seed bits as int64, keep threshold on the top 24 hash bits, 1 / (1 - p) in the compute dtype) for the
    kernels, matching pyunlearn/reference/gat.py: keep iff u >= p with u fp32 and p rounded to fp32, i.e.
    z >> 40 >= ceil(fp32(p) * 2**24) (exact: a power-of-two scaling); the scale is 1 / (1 - p) as torch rounds
    it for a tensor of the statistics dtype."""
    seed = int(seed) & ((1 << 64) - 1)
    seed = seed - (1 << 64) if seed >= 1 << 63 else seed  # same bits, int64 range
    p = float(dropout)
    if p == 0:
        return seed, 0, 1.0
    thr = math.ceil(float(torch.tensor(p, dtype=torch.float32)) * 16777216.0)
    scale = float(torch.ones((), dtype=stat_dtype(dtype)) / (1.0 - p))
    return seed, thr, scale


def gat_tile_config(heads: int, ch: int, tile_values: int = 2048) -> dict:
    """Tile sizes and warps for [BLOCK_E, BLOCK_H, BLOCK_C] tiles: heads and channels padded to powers of two
    (tl.arange needs them), and as many edges per block (1 to 32) as keep a tile near `tile_values` values. The
    v1 GAT kernels hold one such tile: 2048 values is ~16 per thread; 4096-value tiles took H=8, C=64 to 170-250
    registers and spills on sm_90 (ptxas -v)."""
    block_h = max(1, triton.next_power_of_2(heads))
    block_c = max(1, triton.next_power_of_2(ch))
    block_e = max(1, min(32, tile_values // (block_h * block_c)))
    num_warps = 4 if block_h * block_c <= 512 else 8 if block_h * block_c <= 4096 else 16
    return dict(BLOCK_E=block_e, BLOCK_H=block_h, BLOCK_C=block_c, num_warps=num_warps)
