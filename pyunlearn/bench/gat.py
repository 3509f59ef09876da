"""GAT layer: pyunlearn.nn.GATConv (fused op) vs torch_geometric's GATConv, eager and compiled, same weights
(`pyunlearn bench gatv2`: the same for GATv2Conv; its bytes add the xr row read per destination).

Providers (each a full layer: projection, attention logits, attention, bias):
  PyG GATConv (eager) / (torch.compile)   the peer; compiled PyG is the one to beat
  pyunlearn reference                      our layer on the plain-PyTorch twin (materialises [E, H, C])
  reference math (torch.compile)           the same layer written directly over the twin's math, compiled
  pyunlearn cpp / triton                   our layer on the fused kernels (triton: CUDA only)
Graph preparation (CSR/CSC) is built once per edge_index and cached by our layer, as a training loop would.

Bytes of the forward (GB/s column; the anchors' formula): read x [N, F] and write h [N, H*C] for the
projection, read h once more and write out [N, H*C], and per edge one int32 index and one H*C row of h:
  N*F*4 + N*H*C*4*2 + E*4 + E*H*C*4.  Forward+backward counts three times that.
"""

from __future__ import annotations

import copy
import functools

import torch

import pyunlearn
from pyunlearn.bench._common import Report, Row, bench_main, progress, sync, time_ms
from pyunlearn.nn import GATConv, GATv2Conv
from pyunlearn.reference import gat_fwd_ref, gatv2_fwd_ref

SIZES = {  # nodes, degree, in features, heads, channels
    "tiny": dict(n=500, deg=8, fin=32, heads=2, ch=16),
    "cpu": dict(n=20_000, deg=16, fin=64, heads=4, ch=32),
    "gpu": dict(n=200_000, deg=16, fin=64, heads=4, ch=32),
}


def make_graph(n: int, deg: int, kind: str, device: str, seed: int = 0) -> torch.Tensor:
    """edge_index [2, n*deg]: every node receives `deg` edges (uniform) or a Zipf-like skew of destinations
    (power-law: a few hubs receive most edges)."""
    g = torch.Generator().manual_seed(seed)
    e = n * deg
    src = torch.randint(0, n, (e,), generator=g)
    if kind == "uniform":
        dst = torch.arange(n).repeat_interleave(deg)
    else:
        ranks = torch.arange(1, n + 1, dtype=torch.float64)
        dst = torch.multinomial(ranks ** -1.1, e, replacement=True, generator=g)
    return torch.stack([src, dst]).to(device)


def fwd_bytes(n, e, fin, hc) -> int:
    return n * fin * 4 + n * hc * 4 * 2 + e * 4 + e * hc * 4


def reference_layer(layer, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Our GATConv's / GATv2Conv's forward written over the reference twin's plain-torch math (no custom op), so
    that torch.compile can fuse it: the strongest plain-PyTorch form of the same layer."""
    heads, ch = layer.heads, layer.out_channels
    g = layer._graph_for(edge_index, x.size(0), x.size(0))
    graph = (g.rowptr, g.col, g.colptr, g.row_csc, g.csc_to_csr, layer.negative_slope, 0.0, 0, True)
    if isinstance(layer, GATv2Conv):
        xl = layer.lin_l(x).view(-1, heads, ch)
        out, _, _ = gatv2_fwd_ref(xl, layer.lin_r(x).view(-1, heads, ch), layer.att[0], None, *graph)
    else:
        h = layer.lin(x).view(-1, heads, ch)
        out, _, _ = gat_fwd_ref(h, (h * layer.att_src).sum(-1), (h * layer.att_dst).sum(-1), None, *graph)
    return out.reshape(-1, heads * ch) + layer.bias


def _peak(device: str, fn) -> float | None:
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def run(size: str = "cpu", device: str | None = None, compile_peer: bool = True, verbose: bool = True,
        reps: int = 10, variant: str = "gat") -> Report:
    """variant: "gat" (GATConv) or "gatv2" (GATv2Conv)."""
    try:
        from torch_geometric.nn import GATConv as PygGATConv
        from torch_geometric.nn import GATv2Conv as PygGATv2Conv
    except ImportError as e:
        raise RuntimeError(f"pyunlearn bench {variant} needs torch_geometric (the peer): pip install torch_geometric"
                           ) from e
    if variant not in ("gat", "gatv2"):
        raise ValueError(f"variant must be 'gat' or 'gatv2', got {variant!r}")
    peer_cls, our_cls = (PygGATConv, GATConv) if variant == "gat" else (PygGATv2Conv, GATv2Conv)
    pname = peer_cls.__name__
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    d = SIZES[size]
    n, fin, heads, ch = d["n"], d["fin"], d["heads"], d["ch"]
    backends = ["cpp"] + (["triton"] if device.startswith("cuda") and "triton" in pyunlearn.available_backends()
                          else [])
    report = Report(variant, device if not device.startswith("cuda") else torch.cuda.get_device_name(),
                    meta=dict(size=size, N=n, degree=d["deg"], F=fin, H=heads, C=ch, torch=torch.__version__,
                              threads=torch.get_num_threads()))
    torch.manual_seed(0)
    peer = peer_cls(fin, ch, heads=heads, add_self_loops=False).to(device)
    ours = our_cls(fin, ch, heads=heads, add_self_loops=False).to(device)
    ours.load_state_dict(peer.state_dict())
    x = torch.randn(n, fin, device=device)
    for kind in ("uniform", "power-law"):
        ei = make_graph(n, d["deg"], kind, device)
        e = ei.size(1)
        nbytes = fwd_bytes(n, e, fin, heads * ch) + (n * heads * ch * 4 * 2 if variant == "gatv2" else 0)
        expected = peer(x, ei).detach()
        layers = {f"PyG {pname} (eager)": (peer, None)}
        if compile_peer:
            layers[f"PyG {pname} (torch.compile)"] = (torch.compile(copy.deepcopy(peer)), None)
        layers["pyunlearn reference"] = (ours, "reference")
        if compile_peer:
            ours._graph_for(ei, n, n)  # build the CSR outside the compiled region
            compiled_ref = torch.compile(lambda xx, ee: reference_layer(ours, xx, ee))
            layers["reference math (torch.compile)"] = (compiled_ref, "cpp")
        for b in backends:
            layers[f"pyunlearn {b}"] = (ours, b)
        rows = []
        for mode in ("forward", "forward+backward"):
            for name, (layer, backend) in layers.items():
                progress(f"[bench] {kind} {mode}: {name}", verbose)
                xr = x.clone().requires_grad_(mode != "forward")

                def step():
                    with pyunlearn.use_backend(backend or pyunlearn.get_backend()):
                        if mode == "forward":
                            with torch.no_grad():
                                layer(xr, ei)
                        else:
                            ours.zero_grad(set_to_none=True)
                            peer.zero_grad(set_to_none=True)
                            layer(xr, ei).sum().backward()

                with pyunlearn.use_backend(backend or pyunlearn.get_backend()), torch.no_grad():
                    got = layer(x, ei)
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4,
                                           msg=lambda m: f"{name} disagrees with PyG before timing: {m}")
                ms, q20, q80 = time_ms(step, device, reps=reps)
                sync(device)
                peak = _peak(device, step)
                mult = 1 if mode == "forward" else 3
                rows.append(Row(f"{kind} E={e:,} {mode}", name, ms, q20, q80,
                                gbps=mult * nbytes / (ms * 1e-3) / 1e9,
                                note=(f"{e / (ms * 1e-3) / 1e6:.0f} Medges/s"
                                      + (f", peak {peak:.0f} MiB" if peak is not None else ""))))
            case_rows = [r for r in rows if r.case.endswith(mode)]
            best = min((r for r in case_rows if r.provider.startswith("PyG")), key=lambda r: r.ms)
            for r in case_rows:
                r.speedup = best.ms / r.ms
            best.note += " (best peer)"
        report.rows += rows
    return report


def main(argv: list[str] | None = None, variant: str = "gat") -> Report:
    return bench_main(variant, __doc__, SIZES, functools.partial(run, variant=variant), argv, reps=10)


if __name__ == "__main__":
    main()
