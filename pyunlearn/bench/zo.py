"""ZO estimators: seeded batched RGE and CGE with feature reuse vs the plain-PyTorch ways of computing them
(`pyunlearn bench zo`; spec A5, C6; anchors in ../shared/bench/anchors_h200.md).

RGE case (q directions, forward differences, MLP, cross-entropy, one batch):
  python loop (stored z)            per direction: p += mu z_k, forward, p -= mu z_k (z drawn once per call
                                    with torch.randn into a stored [q, d] tensor)
  torch.func.vmap (eager / compile) functional_call over the q stacked perturbed parameter sets (stores q x d,
                                    drawn once per call with torch.randn)
  pyunlearn rge sequential           seeded in-place perturb/forward/restore (MeZO memory, O(d))
  pyunlearn rge batched (Q)          Q directions per forward, z regenerated per chunk ((Q+1) x d)
  Every provider returns g = (1/q) sum_k c_k z_k; before timing, the peers run on our seeded directions and
  all results are compared.
CGE case (coordinates of the first layer's weight):
  naive loop (DeepZero)             one full forward per coordinate (in-place +mu, restore)
  pyunlearn cge (feature reuse)     cached first-layer input, rank-1 change carried to layer 2, batched tail

Work (GFLOP/s in the note): RGE = q forwards, 2 B sum(in*out) FLOPs each; CGE floor = the layers after the
perturbed one, per coordinate (the anchors' formula). Memory: "extra" is the
formula for what the estimator holds beyond the model and one forward's activations; "meas" is the peak of
torch.cuda.max_memory_allocated on a GPU, or of sampled process RSS on the CPU (needs psutil; approximate and
often 0: the allocator reuses pages freed by the previous call, so trust the formula there).
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time

import torch
from torch import nn

from pyunlearn.bench._common import Report, Row, format_table, progress, save_json, sync, time_ms

SIZES = {  # mlp widths, batch, q, RGE chunk Q, CGE coordinates of layer 1
    "tiny": dict(widths=(64, 32, 32, 10), batch=32, q=8, chunk=8, ncoord=64),
    "cpu": dict(widths=(784, 256, 256, 10), batch=256, q=64, chunk=16, ncoord=512),
    "gpu": dict(widths=(3072, 512, 512, 10), batch=256, q=128, chunk=64, ncoord=1024),
}


def make_mlp(widths, device, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers += [nn.Linear(widths[i], widths[i + 1]), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).to(device)


def mlp_flops(widths, batch) -> int:
    return 2 * batch * sum(a * b for a, b in itertools.pairwise(widths))


class PeakMemory:
    """Peak extra memory of a call: torch.cuda.max_memory_allocated on a GPU; on the CPU the max of the process
    RSS sampled every ~0.5 ms minus the RSS before (approximate: the allocator may keep freed pages)."""

    def __init__(self, device: str):
        self.device = device

    def __call__(self, fn) -> float | None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - base) / 2**20
        try:
            import psutil
        except ImportError:  # optional: no measured column without it
            fn()
            return None
        proc, peak, stop = psutil.Process(), [0], threading.Event()
        base = proc.memory_info().rss

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(5e-4)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        fn()
        stop.set()
        th.join()
        return max(0, max(peak[0], proc.memory_info().rss) - base) / 2**20


def _rge_peers(model, x, y, q, mu, z_all, loss_fn, compile_peer):
    """The plain-PyTorch ways to compute (1/q) sum_k c_k z_k with stored directions z_all [q, d]."""
    from torch.func import functional_call, vmap

    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def split(flat_rows):  # [q, d] -> {name: [q, *shape]}
        return {n: t.view(-1, *s) for n, t, s in zip(names, flat_rows.split(sizes, dim=-1), shapes)}

    def loop():
        with torch.no_grad():
            l0 = loss_fn(model(x), y)
            c = torch.empty(q, device=x.device)
            for k in range(q):
                zs = split(z_all[k:k + 1])
                for n, p in zip(names, params):
                    p.add_(zs[n][0], alpha=mu)
                c[k] = (loss_fn(model(x), y) - l0) / mu
                for n, p in zip(names, params):
                    p.sub_(zs[n][0], alpha=mu)
            return (c @ z_all) / q

    base = {n: p.detach() for n, p in zip(names, params)}

    def one(zd):
        return loss_fn(functional_call(model, {n: base[n] + mu * zd[n] for n in names}, (x,)), y)

    batched_loss = vmap(one)

    def vmapped(fn=batched_loss):
        with torch.no_grad():
            l0 = loss_fn(model(x), y)
            c = (fn(split(z_all)) - l0) / mu
            return (c @ z_all) / q

    def fresh(fn):  # a training step needs new directions: the peers draw them too (in place, torch.randn)
        def step():
            z_all.normal_()
            return fn()
        return step

    peers = {"python loop (stored z)": (loop, fresh(loop)), "torch.func.vmap (eager)": (vmapped, fresh(vmapped))}
    if compile_peer:
        compiled = torch.compile(batched_loss)
        peers["torch.func.vmap (torch.compile)"] = (lambda: vmapped(compiled), fresh(lambda: vmapped(compiled)))
    return peers


def _naive_cge(model, x, y, p, idx, mu, loss_fn):
    with torch.no_grad():
        l0 = loss_fn(model(x), y).double()
        flat, out = p.view(-1), torch.empty(idx.numel(), dtype=torch.float64, device=x.device)
        for k, j in enumerate(idx.tolist()):
            old = flat[j].clone()
            flat[j] += mu
            out[k] = (loss_fn(model(x), y).double() - l0) / mu
            flat[j] = old
    return out


def run(size: str = "cpu", device: str | None = None, compile_peer: bool = True, verbose: bool = True,
        reps: int = 5) -> Report:
    from pyunlearn.ops.zo import zo_directions
    from pyunlearn.zo.estimators import cge, rge

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):  # IEEE fp32: TF32 would swamp differences of ~1e-5 of the loss (spec A5.2)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    cfg = SIZES[size]
    widths, batch, q, chunk, ncoord = cfg["widths"], cfg["batch"], cfg["q"], cfg["chunk"], cfg["ncoord"]
    report = Report("zo", device if not device.startswith("cuda") else torch.cuda.get_device_name(),
                    meta=dict(size=size, mlp="-".join(map(str, widths)), batch=batch, q=q, chunk=chunk,
                              cge_coords=ncoord, torch=torch.__version__, threads=torch.get_num_threads()))
    model = make_mlp(widths, device)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, widths[0], generator=g).to(device)
    y = torch.randint(0, widths[-1], (batch,), generator=g).to(device)
    params = [p for p in model.parameters()]
    d = sum(p.numel() for p in params)
    mu, seed = 1e-3, 1234
    meas = PeakMemory(device)
    act = batch * max(widths) * 4  # one layer's activations

    # ---- RGE ------------------------------------------------------------------------------------------------
    z_seeded = torch.stack([zo_directions(d, seed=seed, direction=k, device=device) for k in range(q)])
    z_all = z_seeded.clone()
    def seq():
        return rge(model, loss_fn, (x, y), q=q, mu=mu, seed=seed, batched=False)

    def bat():
        return rge(model, loss_fn, (x, y), q=q, mu=mu, seed=seed, batched=chunk)

    providers = {name: (check, timed, q * d * 4 + (q * act if "vmap" in name else 0))
                 for name, (check, timed) in _rge_peers(model, x, y, q, mu, z_all, loss_fn, compile_peer).items()}
    providers["pyunlearn rge sequential (in place)"] = (seq, seq, 0)
    providers[f"pyunlearn rge batched (Q={chunk})"] = (bat, bat, (chunk + 1) * (d * 4 + act))
    expected = None
    rows = []
    for name, (check, fn, extra) in providers.items():
        progress(f"[bench] rge: {name}", verbose)
        z_all.copy_(z_seeded)
        got = check()
        got = torch.cat([t.reshape(-1) for t in got.values()]) if isinstance(got, dict) else got
        if expected is None:
            expected = got.detach().clone()
        torch.testing.assert_close(got.float(), expected.float(), rtol=0, atol=2e-2 * expected.abs().max().item(),
                                   msg=lambda m, name=name: f"{name} disagrees with the python loop before timing: {m}")
        ms, q20, q80 = time_ms(fn, device, warmup=1, reps=reps, budget_s=3.0)
        sync(device)
        peak = meas(fn)
        flops = q * mlp_flops(widths, batch)
        rows.append(Row(f"RGE q={q} d={d:,}", name, ms, q20, q80, gbps=None,
                        note=f"{flops / (ms * 1e-3) / 1e9:.1f} GFLOP/s, extra {extra / 2**20:.1f} MiB (formula), "
                             + (f"meas {peak:.1f} MiB" if peak is not None else "meas n/a")))
    best = min((r for r in rows if not r.provider.startswith("pyunlearn")), key=lambda r: r.ms)
    for r in rows:
        r.speedup = best.ms / r.ms
    best.note += " (best peer)"
    # What drawing the q x d direction values costs alone (every provider draws them once per call; the
    # sequential path three times: perturb, restore, assemble).
    buf = torch.empty(d, device=device)
    one = torch.ones(1, device=device)
    from pyunlearn.ops.zo import zo_accumulate_

    def seeded():
        for k in range(q):
            buf.zero_()
            zo_accumulate_([buf], one, seed=seed, direction0=k)

    for name, fn in (("z only: seeded zo_accumulate_ (q x d)", seeded), ("z only: torch.randn (q x d)",
                                                                         lambda: z_all.normal_())):
        ms, q20, q80 = time_ms(fn, device, warmup=1, reps=reps, budget_s=2.0)
        rows.append(Row(f"RGE q={q} d={d:,}", name, ms, q20, q80, gbps=q * d * 4 / (ms * 1e-3) / 1e9,
                        note=f"{ms * 1e6 / (q * d):.1f} ns/value"))
    report.rows += rows

    # ---- CGE ------------------------------------------------------------------------------------------------
    w1 = model[0].weight
    idx = torch.randperm(w1.numel(), generator=g)[:ncoord].to(device)
    rows = []
    # Checked against autograd, not against the naive loop: in fp32 at mu = 1e-3 the loop's loss differences
    # (~1e-7 of the loss) are mostly rounding noise; ours reduces the losses in fp64 next to a clean copy.
    model.zero_grad()
    loss_fn(model(x), y).backward()
    grad = w1.grad.view(-1)[idx].double()
    model.zero_grad(set_to_none=True)

    def cos(a):
        return (a @ grad / (a.norm() * grad.norm() + 1e-300)).item()

    cos_naive = cos(_naive_cge(model, x, y, w1, idx, mu, loss_fn))
    cos_ours = cos(cge(model, loss_fn, (x, y), coords={"0.weight": idx}, mu=mu)["0.weight"].view(-1)[idx].double())
    if not cos_ours > 0.99:
        raise AssertionError(f"cge vs autograd before timing: cosine similarity {cos_ours:.4f} <= 0.99")
    tail = mlp_flops(widths[1:], batch) * ncoord
    for name, fn in (("naive loop (DeepZero, full forward each)", lambda: _naive_cge(model, x, y, w1, idx, mu,
                                                                                       loss_fn)),
                     ("pyunlearn cge (feature reuse)", lambda: cge(model, loss_fn, (x, y), coords={"0.weight": idx},
                                                                    mu=mu))):
        progress(f"[bench] cge: {name}", verbose)
        ms, q20, q80 = time_ms(fn, device, warmup=1, reps=reps, budget_s=3.0)
        peak = meas(fn)
        rows.append(Row(f"CGE {ncoord} coords of layer 1", name, ms, q20, q80,
                        note=f"{ms / ncoord * 1e3:.1f} us/coord, floor {tail / 1e9:.2f} GFLOP, "
                             + (f"meas {peak:.0f} MiB, " if peak is not None else "")
                             + f"cos vs autograd {cos_ours if name.startswith('pyunlearn') else cos_naive:.4f}"))
    for r in rows:
        r.speedup = rows[0].ms / r.ms
    rows[0].note += " (peer)"
    report.rows += rows
    return report


def main(argv: list[str] | None = None) -> Report:
    """`pyunlearn bench zo`; --quick runs the tiny size without the compiled peer (a few seconds)."""
    ap = argparse.ArgumentParser(prog="pyunlearn bench zo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=list(SIZES), default=None,
                    help="problem size (default: gpu on a CUDA device, else cpu)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer (it compiles ~1 min)")
    ap.add_argument("--quick", action="store_true", help="tiny size, no compiled peer, 3 reps (for tests)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    size = "tiny" if args.quick else args.size or ("gpu" if device.startswith("cuda") else "cpu")
    report = run(size, device, compile_peer=not (args.no_compile or args.quick), verbose=not args.quiet,
                 reps=3 if args.quick else args.reps)
    print(format_table(report))
    if args.json:
        save_json(report, args.json)
    return report


if __name__ == "__main__":
    main()
