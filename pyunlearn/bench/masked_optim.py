"""Masked AdamW step: pyunlearn's kernels vs the strongest plain-PyTorch peers, one run, same inputs.

Providers
  torch foreach AdamW + exact mask : clone p, m, v; torch.optim.AdamW(foreach) step; torch.where back (3 tensors)
  torch fused AdamW + exact mask   : the same around torch's fused AdamW kernel
  reference (eager)                : pyunlearn.reference.masked_adamw_step_ref
  reference, torch.compile         : the twin compiled by inductor: one fused elementwise pass at the memory floor
                                     on a GPU; it reads every entry, whatever the density (dense mask)
  index gather/scatter (eager)     : index cases only: gather the k entries, step them, scatter back
  pyunlearn cpp / triton           : torch.ops.pyunlearn.masked_adamw_step on the "cpp" / "triton" backend
  torch fused AdamW, no mask       : transformer-list case only: what an unmasked step costs (masking-is-free target)

Bytes per step (the GB/s column), fp32 params and state:
  dense mask : 29 B/param = read p, g, m, v (16) + mask (1) + write p, m, v (12)
  index list : (28 + index bytes) per listed entry = read p, g, m, v + write p, m, v + the index itself
"""

from __future__ import annotations

from typing import Callable

import torch

import pyunlearn
from pyunlearn.bench._common import Report, Row, bench_main, progress, time_ms
from pyunlearn.reference import masked_adamw_step_ref

HP = dict(lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=1e-2, eps=1e-8)
# Every timed step uses the same step count: the work does not depend on it, and a changing Python float would
# make torch.compile recompile the compiled peer at every step.
STEP = 10.0
SIZES = {  # flat params, transformer (width, layers, vocab)
    "tiny": dict(flat=1 << 16, width=64, layers=4, vocab=512),
    "cpu": dict(flat=1 << 24, width=256, layers=16, vocab=8192),
    "gpu": dict(flat=1 << 28, width=1024, layers=12, vocab=32000),
}


def transformer_shapes(width: int, layers: int, vocab: int) -> list[tuple[int, ...]]:
    """Parameter shapes of a GPT-style decoder: hundreds of tensors from a few hundred to millions of entries."""
    shapes: list[tuple[int, ...]] = [(vocab, width)]
    for _ in range(layers):
        shapes += [(width,), (width,), (3 * width, width), (3 * width,), (width, width), (width,),
                   (width,), (width,), (4 * width, width), (4 * width,), (width, 4 * width), (width,)]
    return shapes + [(width,), (width,)]


class Case:
    """One workload: params, grads, fresh state, masks (dense bool, and index lists for index cases)."""

    def __init__(self, name: str, shapes, density: float, index: bool, device: str, seed: int = 0):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.name, self.index, self.device = name, index, device
        self.p = [torch.randn(s, generator=gen).to(device) for s in shapes]
        self.g = [torch.randn(s, generator=gen).to(device) for s in shapes]
        self.m = [torch.randn(s, generator=gen).mul_(1e-2).to(device) for s in shapes]
        self.v = [torch.rand(s, generator=gen).mul_(1e-3).to(device) for s in shapes]
        self.dense = [(torch.rand(s, generator=gen) < density).to(device) for s in shapes]
        self.idx = [d.flatten().nonzero().squeeze(1) for d in self.dense] if index else None
        self.numel = sum(t.numel() for t in self.p)
        self.selected = sum(int(d.sum()) for d in self.dense)

    def masks(self):
        return self.idx if self.index else self.dense

    def state(self):
        """Independent copies of (p, g, m, v) so providers never share what they mutate."""
        return tuple([t.clone() for t in ts] for ts in (self.p, self.g, self.m, self.v))

    def bytes_per_step(self) -> int:
        if self.index:
            return self.selected * (28 + self.idx[0].element_size())
        return 29 * self.numel


def _exact_mask_torch(case: Case, fused: bool, masked: bool = True) -> Callable[[], None]:
    p, g, m, v = case.state()
    params = [torch.nn.Parameter(t) for t in p]
    for t, gr in zip(params, g):
        t.grad = gr
    opt = torch.optim.AdamW(params, lr=HP["lr"], betas=(HP["beta1"], HP["beta2"]), eps=HP["eps"],
                            weight_decay=HP["weight_decay"], foreach=not fused, fused=fused)
    for t, mm, vv in zip(params, m, v):
        opt.state[t].update(step=torch.tensor(STEP - 1), exp_avg=mm, exp_avg_sq=vv)

    def step():
        for t in params:  # hold the step count (see STEP)
            opt.state[t]["step"].fill_(STEP - 1)
        if not masked:
            opt.step()
            return
        keep = [(t.detach().clone(), opt.state[t]["exp_avg"].clone(), opt.state[t]["exp_avg_sq"].clone())
                for t in params]
        opt.step()
        for t, d, (kp, km, kv) in zip(params, case.dense, keep):
            st = opt.state[t]
            torch.where(d, t.detach(), kp, out=t.data)
            torch.where(d, st["exp_avg"], km, out=st["exp_avg"])
            torch.where(d, st["exp_avg_sq"], kv, out=st["exp_avg_sq"])
    return step, params


def provider_ref(case: Case, compiled: bool):
    p, g, m, v = case.state()
    fn = torch.compile(masked_adamw_step_ref, dynamic=False) if compiled else masked_adamw_step_ref
    masks = case.dense  # the compiled peer is the dense exact-mask step: it reads every entry
    def step():
        fn(p, g, m, v, [], masks, HP["lr"], HP["beta1"], HP["beta2"], HP["weight_decay"], HP["eps"], STEP, False,
           False)
    return step, p


def provider_gather(case: Case):
    p, g, m, v = case.state()
    flat = [[t.view(-1) for t in ts] for ts in (p, g, m, v)]
    idx = case.idx
    bc1, bc2 = 1 - HP["beta1"] ** STEP, (1 - HP["beta2"] ** STEP) ** 0.5

    def step():
        for pp, gg, mm, vv, ix in zip(*flat, idx):
            ps, gs, ms, vs = pp[ix], gg[ix], mm[ix], vv[ix]
            ms = HP["beta1"] * ms + (1 - HP["beta1"]) * gs
            vs = HP["beta2"] * vs + (1 - HP["beta2"]) * gs * gs
            ps = ps * (1 - HP["lr"] * HP["weight_decay"]) - (HP["lr"] / bc1) * ms / (vs.sqrt() / bc2 + HP["eps"])
            pp[ix], mm[ix], vv[ix] = ps, ms, vs
    return step, p


def provider_ours(case: Case, backend: str):
    p, g, m, v = case.state()
    masks = case.masks()
    op = torch.ops.pyunlearn.masked_adamw_step

    def step():
        with pyunlearn.use_backend(backend):
            op(p, g, m, v, [], masks, HP["lr"], HP["beta1"], HP["beta2"], HP["weight_decay"], HP["eps"], STEP,
               False, False)
    return step, p


def providers(case: Case, device: str, backends: list[str], compile_peer: bool):
    out: dict[str, Callable] = {}
    if not case.index:
        out["torch foreach AdamW + exact mask"] = lambda: _exact_mask_torch(case, fused=False)
        out["torch fused AdamW + exact mask"] = lambda: _exact_mask_torch(case, fused=True)
    else:
        out["index gather/scatter (eager)"] = lambda: provider_gather(case)
    if case.numel <= (1 << 26) or device != "cpu":
        out["reference (eager)"] = lambda: provider_ref(case, compiled=False)
    if compile_peer:
        out["reference, torch.compile (dense)"] = lambda: provider_ref(case, compiled=True)
    for b in backends:
        out[f"pyunlearn {b}"] = (lambda b=b: provider_ours(case, b))
    if case.name.startswith("transformer"):
        out["torch fused AdamW, no mask"] = lambda: _exact_mask_torch(case, fused=True, masked=False)
    return out


def check_correct(case: Case, make: Callable, name: str) -> None:
    """One step of the provider from the case's initial state must equal the reference twin's step."""
    expected = case.state()
    masked_adamw_step_ref(*expected, [], case.dense, HP["lr"], HP["beta1"], HP["beta2"], HP["weight_decay"],
                          HP["eps"], STEP, False, False)
    step, params = make()
    step()
    if "no mask" in name:
        return
    for a, b in zip(params, expected[0]):
        torch.testing.assert_close(a.detach(), b, rtol=2e-5, atol=2e-6, msg=lambda s: f"{name} is wrong: {s}")


def run(size: str = "cpu", device: str | None = None, compile_peer: bool = True, verbose: bool = True,
        reps: int = 20) -> Report:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dims = SIZES[size]
    backends = ["cpp"] + (["triton"] if device.startswith("cuda") and "triton" in pyunlearn.available_backends()
                          else [])
    shapes = transformer_shapes(dims["width"], dims["layers"], dims["vocab"])
    cases = [
        lambda: Case(f"flat {dims['flat'] / 2**20:g}M, dense 50%", [(dims["flat"],)], 0.5, False, device),
        lambda: Case(f"flat {dims['flat'] / 2**20:g}M, index 5%", [(dims["flat"],)], 0.05, True, device),
        lambda: Case(f"flat {dims['flat'] / 2**20:g}M, index 1%", [(dims["flat"],)], 0.01, True, device),
        lambda: Case(f"transformer {len(shapes)} tensors, dense 50%", shapes, 0.5, False, device),
    ]
    report = Report("masked_optim", device if not device.startswith("cuda") else torch.cuda.get_device_name(),
                    meta=dict(size=size, torch=torch.__version__, threads=torch.get_num_threads(),
                              pyunlearn=pyunlearn.__version__))
    for make_case in cases:
        case = make_case()
        progress(f"[bench] {case.name}: {case.numel / 1e6:.1f}M params, {case.selected / 1e6:.2f}M selected",
                 verbose)
        case_rows = []
        for name, make in providers(case, device, backends, compile_peer).items():
            progress(f"[bench]   {name}", verbose)
            check_correct(case, make, name)
            step, _ = make()
            ms, q20, q80 = time_ms(step, device, reps=reps)
            case_rows.append(Row(case.name, name, ms, q20, q80, gbps=case.bytes_per_step() / (ms * 1e-3) / 1e9))
        peers = [r for r in case_rows if not r.provider.startswith("pyunlearn") and "no mask" not in r.provider]
        best = min(peers, key=lambda r: r.ms)
        for r in case_rows:
            r.speedup = best.ms / r.ms
            if r is best:
                r.note = "best peer"
        report.rows += case_rows
        del case
    return report


def main(argv: list[str] | None = None) -> Report:
    return bench_main("masked_optim", __doc__, SIZES, run, argv, reps=20)


if __name__ == "__main__":
    main()
