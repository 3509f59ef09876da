"""CGE with feature reuse (spec A1.5, A5.2; issue #4 item 1).

One clean forward caches every block's input. A chunk of P coordinates of block l is evaluated as one batched
forward of R = P + 1 copies from the cached input of block l (copy 0 is the clean one, computed with the same
kernels and batch layout as the perturbed copies, so rounding does not bias the differences):

* Linear weight W[o, i] + mu changes output column o only, by mu * x[:, i] (bias b[o]: by mu); Conv2d weight
  W[o, c, kh, kw] changes output channel o only, by mu * (x[:, c] shifted by (kh, kw) under the conv's
  stride/padding/dilation); BatchNorm gamma[c] / beta[c] change channel c only. The copies start as
  one-channel values V [R, N, 1, *spatial] next to the cached clean tensor ("local" state).
* Local state passes through elementwise activations (on V only), BatchNorm (statistics of the changed
  channel, per copy: the other channels' statistics do not move), channel-wise pooling and Flatten (channel o
  becomes a block of columns).
* Entering a Linear, a change of a few columns is clean_out + dV @ W2[:, cols]^T (an outer product for one
  unit); entering a Conv2d, one changed channel is clean_out + conv(dV, W2[:, o:o+1]) (a grouped conv, one
  group per copy). From there on the copies are dense [R, N, ...] and the remaining blocks run with the copies
  folded into the batch (_blocks.dense_forward; BatchNorm per copy).

Parameters of any other block (residual blocks, LayerNorm, ...) take the generic path: cached prefix, the
block evaluated once per coordinate (in-place +mu, saved value written back), batched suffix. Models that are
not a Sequential and declare no zo_blocks, and parameters outside the blocks, take the plain loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyunlearn.zo._blocks import (
    BATCHNORM,
    CHANNEL_LOCAL,
    batch_norm_copies,
    blocks_of,
    conv_padding,
    copy_losses,
    dense_forward,
    is_elementwise,
    is_per_sample,
    loss_denominator,
    model_loss,
    sample_terms,
)

# Default chunk: as many copies as fit this many bytes of dense activations (each copy holds N x widest layer;
# ~3 live temporaries). Small enough to stay in cache: on 2 CPU cores 32 copies of 256 x 256 beat 256 copies 4x.
CHUNK_BYTES = 24 * 2**20
MAX_CHUNK = 1024


def _flat(p: Tensor) -> Tensor:
    if not p.is_contiguous():
        raise ValueError("cge needs contiguous parameters (a flat index must address one entry in place)")
    return p.view(-1)


def _local_kind(block: nn.Module, p: Tensor, a: Tensor) -> str | None:
    """Which local start applies to parameter p of block with input a, or None (generic path)."""
    role = "weight" if p is getattr(block, "weight", None) else "bias" if p is getattr(block, "bias", None) \
        else None
    if role is None:
        return None
    if isinstance(block, nn.Linear) and a.dim() == 2:
        return "linear_" + role
    if isinstance(block, nn.Conv2d) and a.dim() == 4 and conv_padding(block) is not None:
        return "conv_" + role
    if isinstance(block, BATCHNORM) and a.dim() >= 2:
        return "bn_" + role
    return None


def _start(kind: str, block: nn.Module, a: Tensor, c: Tensor, j: Tensor, mus: Tensor,
           a_pad: Tensor | None) -> tuple[Tensor, Tensor]:
    """(chan [R], V [R, N, 1, *spatial]) for the copies' perturbed output channel; a, c: block input/output."""
    r = j.numel()
    if kind == "linear_weight":
        n_in = block.weight.shape[1]
        o, i = j // n_in, j % n_in
        v = c.index_select(1, o).t() + mus[:, None] * a.index_select(1, i).t()  # [R, N]
        return o, v.unsqueeze(-1)
    if kind in ("linear_bias", "conv_bias"):
        v = c.index_select(1, j).transpose(0, 1) + mus.view(r, *([1] * (c.dim() - 1)))
        return j, v.unsqueeze(2)
    if kind == "conv_weight":
        c_out, cg, kh, kw = block.weight.shape
        o, rem = j // (cg * kh * kw), j % (cg * kh * kw)
        ch = (o // (c_out // block.groups)) * cg + rem // (kh * kw)
        ki, kj = (rem % (kh * kw)) // kw, rem % kw
        ho, wo = c.shape[2], c.shape[3]
        if a_pad.dim() == 3:  # unfolded patches [N, Cin*kh*kw, Ho*Wo]: one index_select
            shifted = a_pad.index_select(1, ch * (kh * kw) + ki * kw + kj).view(a.shape[0], r, ho, wo)
        else:  # padded input [N, Cin, H + 2ph, W + 2pw]: gather the shifted windows
            (sh, sw), (dh, dw) = block.stride, block.dilation
            rows = ki[:, None] * dh + sh * torch.arange(ho, device=a.device)  # [R, Ho]
            cols = kj[:, None] * dw + sw * torch.arange(wo, device=a.device)  # [R, Wo]
            shifted = a_pad[:, ch[:, None, None], rows[:, :, None], cols[:, None, :]]  # [N, R, Ho, Wo]
        v = c.index_select(1, o).transpose(0, 1) + mus.view(r, 1, 1, 1) * shifted.transpose(0, 1)
        return o, v.unsqueeze(2)
    # BatchNorm gamma/beta of channel j: recompute that channel per copy with the perturbed affine parameter.
    vin = a.index_select(1, j).transpose(0, 1).unsqueeze(2)  # [R, N, 1, *spatial]
    w = block.weight[j, None] + (mus[:, None] if kind == "bn_weight" else 0.0) if block.weight is not None else None
    b = block.bias[j, None] + (mus[:, None] if kind == "bn_bias" else 0.0) if block.bias is not None else None
    return j, batch_norm_copies(block, vin, weight=w, bias=b, channels=j[:, None])


def _densify(clean: Tensor, chan: Tensor, v: Tensor) -> Tensor:
    r, w = v.shape[0], v.shape[2]
    out = clean.unsqueeze(0).repeat(r, *([1] * clean.dim()))
    idx = (chan[:, None] + torch.arange(w, device=chan.device)).view(r, 1, w, *([1] * (v.dim() - 3)))
    return out.scatter_(2, idx.expand_as(v), v)


def _row_local(m: nn.Module) -> bool:
    """Each output row depends on the same input row only (no BatchNorm statistics, no unknown module)."""
    return isinstance(m, (nn.Linear, nn.Conv2d)) or is_per_sample(m)


def _propagate(blocks: list[nn.Module], acts: list[Tensor], t: int, chan: Tensor, v: Tensor,
               rows_from: int | None = None) -> tuple[int, Tensor | tuple[Tensor, Tensor, Tensor]]:
    """Carry the local change (channels chan..chan+w of the input of block t, values v [R, N, w, ...]) as far
    as it stays local; returns (t, dense copies [R, N, ...] of the input of block t), or, entering a Linear at
    or after block rows_from (all later blocks row-local, loss decomposable over rows), (t, (copy, row, h)):
    only the rows whose input changed, h [M, ...] — the other rows keep their clean loss terms exactly."""
    while t < len(blocks):
        m, cin = blocks[t], acts[t]
        r, w = v.shape[0], v.shape[2]
        if is_elementwise(m):
            v = m(v)
        elif isinstance(m, CHANNEL_LOCAL) and cin.dim() >= 3:
            out = m(v.reshape(r * v.shape[1], w, *v.shape[3:]))
            v = out.view(r, v.shape[1], w, *out.shape[2:])
        elif isinstance(m, BATCHNORM):
            v = batch_norm_copies(m, v, channels=chan[:, None] + torch.arange(w, device=v.device))
        elif isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1 and cin.dim() >= 3:
            s = math.prod(v.shape[3:])
            v, chan = v.reshape(r, v.shape[1], w * s), chan * s
        elif isinstance(m, nn.Linear) and cin.dim() == 2:
            if w == 1:  # one unit: an outer product, written straight into the new dense copies
                dv = v - cin.index_select(1, chan).t().unsqueeze(-1)  # [R, N, 1]
                if rows_from is not None and t >= rows_from:
                    dvf = dv.reshape(-1)
                    k = (dvf != 0).nonzero()[:, 0]  # e.g. a ReLU that stays at 0: the row does not change
                    ri, ni = k // dv.shape[1], k % dv.shape[1]
                    wr = m.weight.t().index_select(0, chan.index_select(0, ri))  # [M, out]
                    h = torch.addcmul(acts[t + 1].index_select(0, ni), dvf.index_select(0, k)[:, None], wr)
                    return t + 1, (ri, ni, h)
                wc = m.weight.index_select(1, chan).t().unsqueeze(1)  # [R, 1, out]
                return t + 1, torch.addcmul(acts[t + 1], dv, wc)
            cols = chan[:, None] + torch.arange(w, device=v.device)  # [R, w]
            dv = v - cin.index_select(1, cols.view(-1)).view(-1, r, w).transpose(0, 1)  # [R, N, w]
            wc = m.weight.index_select(1, cols.view(-1)).view(-1, r, w).permute(1, 2, 0)  # [R, w, out]
            return t + 1, torch.baddbmm(acts[t + 1].expand(r, -1, -1), dv, wc)
        elif isinstance(m, nn.Conv2d) and m.groups == 1 and w == 1 and conv_padding(m) is not None:
            # conv of one channel per copy with that copy's filters W2[:, o]: the patches of dv (a conv with the
            # kh*kw unit filters) times [C_out, kh*kw] as one batched matmul (a grouped conv with one input channel
            # per group, or F.unfold, which loops over the batch, are far slower on CPU)
            n, (hh, ww), cout = v.shape[1], v.shape[3:], m.weight.shape[0]
            kk = m.weight[0, 0].numel()
            dv = v[:, :, 0] - cin.index_select(1, chan).transpose(0, 1)  # [R, N, H, W]
            ho, wo = acts[t + 1].shape[2:]
            unit = torch.eye(kk, dtype=dv.dtype, device=dv.device).view(kk, 1, *m.weight.shape[2:])
            cols = F.conv2d(dv.reshape(r * n, 1, hh, ww), unit, None, m.stride, conv_padding(m), m.dilation)
            cols = cols.view(r, n, kk, ho * wo).transpose(1, 2).reshape(r, kk, n * ho * wo)
            wt = m.weight.index_select(1, chan).transpose(0, 1).reshape(r, cout, kk)  # [R, C_out, kh*kw]
            d = torch.bmm(wt, cols).view(r, cout, n, ho, wo).transpose(1, 2)
            return t + 1, acts[t + 1] + d
        else:
            break
        t += 1
    return t, _densify(acts[t], chan, v)


def _default_chunk(acts: list[Tensor], l: int) -> int:
    per_copy = max(a[0].numel() for a in acts[l + 1:]) * acts[l].shape[0] * acts[l].element_size()
    return max(1, min(MAX_CHUNK, CHUNK_BYTES // max(1, 3 * per_copy)))


def _plain_loop(model: nn.Module, p: Tensor, idx: Tensor, loss_fn: Callable, x: Tensor, y: Tensor, mu: float,
                loss0: Tensor, desc: str) -> Tensor:
    from tqdm.auto import tqdm

    flat, vals = _flat(p), torch.empty(idx.numel(), dtype=torch.float64, device=loss0.device)
    for k, j in enumerate(tqdm(idx.tolist(), desc=desc, disable=None, leave=False)):
        old = flat[j].clone()
        flat[j] += mu
        try:
            vals[k] = (model_loss(loss_fn, model(x), y) - loss0) / mu
        finally:
            flat[j] = old
    return vals


def cge_values(model: nn.Module, named: list[tuple[str, Tensor]], coords: dict[str, Tensor], loss_fn: Callable,
               x: Tensor, y: Tensor, *, mu: float, chunk: int | None) -> dict[str, Tensor]:
    """{name: float64 estimates at coords[name]} (runs under no_grad with the buffers kept by the caller)."""
    todo = [(n, p) for n, p in named if n in coords and coords[n].numel()]
    if not todo:
        return {}
    blocks = blocks_of(model)
    owner: dict[int, int] = {}
    if blocks is not None:
        count: dict[int, int] = {}
        for l, b in enumerate(blocks):
            for p in b.parameters():
                count[id(p)] = count.get(id(p), 0) + 1
                owner[id(p)] = l
        owner = {k: v for k, v in owner.items() if count[k] == 1}  # shared (tied) weights: plain loop
        acts = [x]
        for b in blocks:
            acts.append(b(acts[-1]))
        if getattr(model, "zo_blocks", None) is not None:
            ref = model(x)
            if ref.shape != acts[-1].shape or not torch.allclose(ref, acts[-1]):
                raise ValueError(f"{type(model).__name__}.zo_blocks composed do not reproduce model(x)")
    out: dict[str, Tensor] = {}
    clean_terms: dict[int, Tensor] = {}
    loss0_plain = None
    for name, p in todo:
        idx = coords[name]
        l = owner.get(id(p))
        if l is None:
            if loss0_plain is None:
                loss0_plain = model_loss(loss_fn, model(x), y)
            out[name] = _plain_loop(model, p, idx, loss_fn, x, y, mu, loss0_plain, f"cge {name}")
            continue
        block, a = blocks[l], acts[l]
        kind = _local_kind(block, p, a)
        a_pad = None
        if kind == "conv_weight":
            ph, pw = conv_padding(block)
            c = acts[l + 1]
            if a.shape[0] * a.shape[1] * block.weight[0, 0].numel() * c.shape[2] * c.shape[3] * a.element_size() \
                    <= CHUNK_BYTES:
                a_pad = F.unfold(a, block.kernel_size, block.dilation, (ph, pw), block.stride)
            else:  # the patches would be large: gather windows of the padded input per chunk instead
                a_pad = F.pad(a, (pw, pw, ph, ph))
        size = chunk or _default_chunk(acts, l)
        rows_from = None
        if sample_terms(loss_fn, acts[-1][:1], y[:1]) is not None:
            rows_from = len(blocks)
            while rows_from > 0 and _row_local(blocks[rows_from - 1]):
                rows_from -= 1
        vals = []
        for s in range(0, idx.numel(), size):
            j = idx[s:s + size]
            if kind is not None:
                jj = torch.cat([j[:1], j])  # copy 0: the clean one (mu = 0 at the first coordinate)
                mus = torch.full((jj.numel(),), mu, dtype=a.dtype, device=a.device)
                mus[0] = 0.0
                chan, v = _start(kind, block, a, acts[l + 1], jj, mus, a_pad)
                t, h = _propagate(blocks, acts, l + 1, chan, v, rows_from)
            else:
                h, t = _generic_block(block, p, a, j, mu), l + 1
            if isinstance(h, tuple):  # changed rows only: sum of (perturbed - clean) terms per copy
                ri, ni, hr = h
                if t not in clean_terms:  # the clean rows through the same modules and loss kernels
                    clean_terms[t] = sample_terms(loss_fn, _rows_forward(blocks[t:], acts[t]), y)
                terms = sample_terms(loss_fn, _rows_forward(blocks[t:], hr), y.index_select(0, ni))
                diff = torch.zeros(jj.numel(), dtype=torch.float64, device=a.device)
                diff.index_add_(0, ri, terms - clean_terms[t].index_select(0, ni))
                vals.append(diff[1:] / loss_denominator(loss_fn, y) / mu)
                continue
            losses = copy_losses(loss_fn, dense_forward(blocks[t:], h), y)
            vals.append((losses[1:] - losses[0]) / mu)
        out[name] = torch.cat(vals)
    return out


def _rows_forward(modules: list[nn.Module], h: Tensor) -> Tensor:
    for m in modules:
        h = m(h)
    return h


def _generic_block(block: nn.Module, p: Tensor, a: Tensor, j: Tensor, mu: float) -> Tensor:
    """block(a) clean, then once per coordinate of p in j with that coordinate + mu: [R, N, ...]."""
    flat, outs = _flat(p), [block(a)]
    for jj in j.tolist():
        old = flat[jj].clone()
        flat[jj] += mu
        try:
            outs.append(block(a))
        finally:
            flat[jj] = old
    return torch.stack(outs)
