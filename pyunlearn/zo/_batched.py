"""Batched perturbed forward for RGE/SPSA (issue #4 item 1, second bullet; spec A4, C6).

A chunk of Q seeded directions runs as ONE forward of R copies of the batch: copy 0 clean (its loss is the
chunk's l(theta), computed with the same kernels as the perturbed copies), copies 1..Q at theta + mu z_k
(central differences: Q more at theta - mu z_k). Copy r uses W + a_r Z_r, a_r in {0, +mu, -mu}.

* First parameterised layer (input x shared by every copy): the clean x W^T + b once, plus the perturbation
  a_r (x Z_r^T + z_b,r) for all copies as ONE GEMM x [N, in] @ [in, R*out] (Conv2d: one conv with R*C_out
  output channels). The perturbation is added to the clean output instead of rounding W + mu Z first.
* Later layers (the copies' inputs differ): one batched matmul h_r (W + a_r Z_r)^T + (b + a_r z_b,r) (Conv2d:
  one grouped conv, groups = R, over the copies stacked along channels). Perturbing the weights once per
  chunk costs R*d adds; computing h W^T and a_r h Z_r^T separately would cost twice the matmul FLOPs.
* BatchNorm (train mode): statistics per copy (what R separate forwards compute); eval mode: running stats.
  Per-sample parameter-free layers run with the copies folded into the batch.

Memory: the chunk's directions, (Q+1) x d values (generated from the seed per chunk, never kept), plus R
copies of the activations; default Q = min(q, 32, directions within 256 MiB), so for any q the memory is a
fixed multiple of d plus the activations (O(d) in q), against the q x d of torch.func.vmap over stored
directions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyunlearn.zo._blocks import BATCHNORM, batch_norm_copies, conv_padding, copy_losses, fold, is_per_sample

DIRECTION_BYTES = 256 * 2**20


def default_chunk(q: int, named: list[tuple[str, Tensor]]) -> int:
    """Q = min(q, 32), and fewer when (Q+1) x d direction values would pass DIRECTION_BYTES."""
    row = sum(p.numel() * p.element_size() for _, p in named)
    return max(1, min(q, 32, DIRECTION_BYTES // max(1, row) - 1))


def unsupported(blocks: list[nn.Module], named: list[tuple[str, Tensor]], x: Tensor) -> str | None:
    """None when every block can run batched over directions, else why not (probes the layer input shapes
    with a clean forward of two samples; call it with the buffers kept)."""
    for i, m in enumerate(blocks):
        if isinstance(m, nn.Linear) or is_per_sample(m):
            continue
        if isinstance(m, nn.Conv2d):
            if conv_padding(m) is None:
                return f"block {i} ({m}) needs plain zero padding given as numbers"
            continue
        if isinstance(m, BATCHNORM):
            continue
        return f"block {i} ({type(m).__name__}) is not Linear, Conv2d, BatchNorm1d/2d or a per-sample layer"
    seen: set[int] = set()
    for m in blocks:
        for p in m.parameters():
            if id(p) in seen:
                return "a parameter is shared by two blocks"
            seen.add(id(p))
    if len({(p.dtype, p.device) for _, p in named}) != 1:
        return "the estimated parameters do not share one dtype and device"
    outside = [n for n, p in named if id(p) not in seen]
    if outside:
        return f"parameters {outside[:3]} are not in any block"
    h = x[:2]
    for i, m in enumerate(blocks):
        if isinstance(m, nn.Linear) and h.dim() != 2:
            return f"block {i} (Linear) gets a {h.dim()}-D input; the batched forward takes [N, features]"
        if isinstance(m, nn.Conv2d) and h.dim() != 4:
            return f"block {i} (Conv2d) gets a {h.dim()}-D input; the batched forward takes [N, C, H, W]"
        h = m(h)
    return None


def _first(m: nn.Module, x: Tensor, dw: Tensor | None, db: Tensor | None, r: int) -> Tensor:
    """Layer with shared input x [N, ...]: clean output + per-copy perturbation -> [R, N, ...]."""
    if isinstance(m, nn.Linear):
        out = F.linear(x, m.weight, m.bias).unsqueeze(0)
        if dw is not None:
            d = x @ dw.reshape(-1, dw.shape[-1]).t()  # [N, R*out]: one GEMM for every copy
            out = out + d.view(x.shape[0], r, -1).transpose(0, 1)
        if db is not None:
            out = out + db[:, None, :]
        return out.expand(r, *out.shape[1:]) if out.shape[0] == 1 else out
    if isinstance(m, nn.Conv2d):
        out = m(x).unsqueeze(0)
        if dw is not None:
            g = m.groups  # order the R*C_out filters (group, copy, channel) so that conv groups line up
            wg = dw.view(r, g, -1, *dw.shape[2:]).transpose(0, 1).reshape(-1, *dw.shape[2:])
            d = F.conv2d(x, wg, None, m.stride, m.padding, m.dilation, g)  # [N, g*R*C_out/g, Ho, Wo]
            d = d.view(d.shape[0], g, r, -1, *d.shape[2:]).permute(2, 0, 1, 3, 4, 5)
            out = out + d.reshape(r, d.shape[1], -1, *d.shape[4:])
        if db is not None:
            out = out + db.view(r, 1, -1, 1, 1)
        return out.expand(r, *out.shape[1:]) if out.shape[0] == 1 else out
    raise AssertionError(type(m))


def _later(m: nn.Module, h: Tensor, dw: Tensor | None, db: Tensor | None) -> Tensor:
    """Layer over per-copy inputs h [R, N, ...] with per-copy weights W + a_r Z_r."""
    r = h.shape[0]
    w = m.weight if dw is None else m.weight + dw  # [R, ...] when perturbed
    b = m.bias if db is None or m.bias is None else m.bias + db
    if isinstance(m, nn.Linear):
        out = F.linear(h, w) if w.dim() == 2 else torch.bmm(h, w.transpose(1, 2))
        if b is not None:
            out = out + (b[:, None, :] if b.dim() == 2 else b)
        return out
    if isinstance(m, nn.Conv2d):
        if w.dim() == 4 and (b is None or b.dim() == 1):
            return fold(m, h)
        n, c = h.shape[1], h.shape[2]
        hh = h.transpose(0, 1).reshape(n, r * c, *h.shape[3:])
        w = w.expand(r, *m.weight.shape) if w.dim() == 4 else w
        b = b.expand(r, -1) if b is not None and b.dim() == 1 else b
        out = F.conv2d(hh, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1), m.stride,
                       m.padding, m.dilation, groups=r * m.groups)
        return out.view(n, r, -1, *out.shape[2:]).transpose(0, 1)
    if isinstance(m, BATCHNORM):
        gw = None if m.weight is None else (m.weight + dw if dw is not None else m.weight)
        gb = None if m.bias is None else (m.bias + db if db is not None else m.bias)
        return batch_norm_copies(m, h, weight=gw, bias=gb)
    return fold(m, h)


def _chunk_dirs(named: list[tuple[str, Tensor]], regions: list[Tensor], ks: range, r: int, mu: float, seed: int,
                dist: str) -> dict[int, Tensor]:
    """Every estimated parameter's alpha_r z_r [R, *shape] for the chunk: row 0 zero, rows 1..Q = +mu z_k,
    (central) rows Q+1..2Q = -mu z_k. regions: one buffer [R_max, numel] per parameter, reused by every chunk
    (fresh pages per chunk would cost page faults), each contiguous so the layers use it without a copy. The
    chunk's directions are drawn once, by ONE zo_accumulate_rows_ call over rows 1..Q of all the parameters (row
    k of the list = one flat vector; mu z in fp32, as perturb_ computes it), and serve the forward and the
    assembly."""
    from pyunlearn.ops import zo

    p0 = named[0][1]
    for reg in regions:
        reg[:r].zero_()
    alpha = torch.full((1,), mu, dtype=torch.float64 if p0.dtype == torch.float64 else torch.float32,
                       device=p0.device)
    zo.zo_accumulate_rows_([reg[1:len(ks) + 1] for reg in regions], alpha, seed=seed, direction0=ks.start,
                           dist=dist, offset=0)
    if r > len(ks) + 1:
        for reg in regions:
            torch.neg(reg[1:len(ks) + 1], out=reg[len(ks) + 1:r])
    return {id(p): reg[:r].view(r, *p.shape) for (_, p), reg in zip(named, regions)}


def estimate(blocks: list[nn.Module], named: list[tuple[str, Tensor]], loss_fn: Callable, x: Tensor, y: Tensor,
             *, q: int, mu: float, seed: int, central: bool, dist: str, chunk: int) -> tuple[Tensor, list[Tensor]]:
    """(coeffs [q] float64, g per named parameter): spsa_projections' coefficients of directions 0..q-1, Q = chunk
    per forward, and g = (1/q) sum_k c_k z_k accumulated chunk by chunk from the chunk's directions (one GEMV
    per parameter; z is generated once, not again for the assembly)."""
    rows = 1 + min(q, chunk) * (2 if central else 1)
    regions = [torch.empty(rows, p.numel(), dtype=p.dtype, device=p.device) for _, p in named]
    grads = [torch.zeros(p.numel(), dtype=p.dtype, device=p.device) for _, p in named]
    coeffs = []
    for k0 in range(0, q, chunk):
        ks = range(k0, min(q, k0 + chunk))
        nq = len(ks)
        r = 1 + nq * (2 if central else 1)
        dirs = _chunk_dirs(named, regions, ks, r, mu, seed, dist)
        h, shared = x, True
        for m in blocks:
            params = [getattr(m, "weight", None), getattr(m, "bias", None)] if not is_per_sample(m) else []
            pert = [None if p is None else dirs.get(id(p)) for p in params]
            if shared and (is_per_sample(m) or all(d is None for d in pert)):
                h = m(h)
                continue
            if shared and isinstance(m, (nn.Linear, nn.Conv2d)):
                h, shared = _first(m, h, *pert, r), False
                continue
            if shared:
                h, shared = h.unsqueeze(0).expand(r, *h.shape), False
            h = _later(m, h, *pert) if params else fold(m, h)
        if shared:
            h = h.unsqueeze(0).expand(r, *h.shape)
        losses = copy_losses(loss_fn, h, y)
        if central:
            c = (losses[1:nq + 1] - losses[nq + 1:]) / (2.0 * mu)
        else:
            c = (losses[1:] - losses[0]) / mu
        coeffs.append(c)
        w = (c / (mu * q)).to(grads[0].dtype)
        for g, reg in zip(grads, regions):  # rows 1..Q hold mu z_k
            g.addmv_(reg[1:nq + 1].t(), w)
    return torch.cat(coeffs), [g.view(p.shape) for g, (_, p) in zip(grads, named)]
