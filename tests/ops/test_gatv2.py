"""Fused GATv2 ops: every backend against the reference twin (forward and backward), gradcheck, opcheck,
torch.compile, dense masked attention on a tiny graph, determinism, attention weights and bad input."""

from __future__ import annotations

import pytest
import torch

import pyunlearn
from pyunlearn._backends import triton_interpreted
from pyunlearn.ops import gat_graph, gatv2_attention, gatv2_attention_weights
from pyunlearn.reference import gatv2_bwd_ref, gatv2_fwd_ref
from pyunlearn.testing import backends, devices

from _graphs import KINDS, graph

DEVICE = devices()[0]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6),
       torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}
LOW = (torch.float16, torch.bfloat16)


def make(kind, dtype, heads=3, ch=5, n=12, index_dtype=torch.int64, edge=True, loops=True, seed=0):
    torch.manual_seed(seed)
    g = gat_graph(graph(kind, n, seed).to(DEVICE), n, add_self_loops=loops, index_dtype=index_dtype)
    xl = torch.randn(n, heads, ch, device=DEVICE, dtype=dtype)
    xr = torch.randn(n, heads, ch, device=DEVICE, dtype=dtype)
    att = torch.randn(heads, ch, device=DEVICE, dtype=dtype)
    e = torch.randn(g.col.numel(), heads, ch, device=DEVICE, dtype=dtype) if edge else None
    return g, xl, xr, att, e


def graph_args(g):
    return (g.rowptr, g.col, g.colptr, g.row_csc, g.csc_to_csr)


def fwd_args(g, xl, xr, att, e, slope=0.2, dropout=0.0, seed=0):
    return (xl, xr, att, e, *graph_args(g), slope, dropout, seed, True)


def compare(backend, g, xl, xr, att, e, dtype, dropout=0.0, seed=0, deterministic=True):
    # low precision: the reference runs in fp32 on the same (rounded) inputs
    up = (lambda t: None if t is None else t.float()) if dtype in LOW else (lambda t: t)
    with pyunlearn.use_backend(backend):
        out, mx, den = torch.ops.pyunlearn.gatv2_fwd(*fwd_args(g, xl, xr, att, e, 0.2, dropout, seed))
    r_out, r_mx, r_den = gatv2_fwd_ref(*fwd_args(g, up(xl), up(xr), up(att), up(e), 0.2, dropout, seed))
    assert out.dtype == xl.dtype and mx.dtype == r_mx.dtype and den.dtype == r_den.dtype
    torch.testing.assert_close(out.to(r_out.dtype), r_out, **TOL[dtype])
    torch.testing.assert_close(mx, r_mx, **TOL[dtype])
    torch.testing.assert_close(den, r_den, **TOL[dtype])
    go = torch.randn_like(out)
    with pyunlearn.use_backend(backend):
        got = torch.ops.pyunlearn.gatv2_bwd(go, xl, xr, att, e, *graph_args(g), out, mx, den, 0.2, dropout, seed,
                                            deterministic)
    want = gatv2_bwd_ref(up(go), up(xl), up(xr), up(att), up(e), *graph_args(g), up(out), mx, den, 0.2, dropout,
                         seed, True)
    for name, a, b, ref in zip(("grad_xl", "grad_xr", "grad_att", "grad_e_feat"), got, want, (xl, xr, att, e)):
        assert a.dtype == (ref.dtype if ref is not None else xl.dtype), f"{backend} {name} dtype {a.dtype}"
        # the gradients are sums alpha * (d_alpha - D) that cancel towards 0: judge their error against the
        # tensor's scale (the reference's own rounding is of that size), not element by element
        tol = dict(TOL[dtype])
        if b.numel():
            tol["atol"] = max(tol["atol"], tol["rtol"] * float(b.abs().max()))
        torch.testing.assert_close(a.to(b.dtype), b, **tol, msg=lambda m: f"{backend} {name}: {m}")


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference(backend, kind, dtype):
    compare(backend, *make(kind, dtype), dtype)


VARIANTS = dict(int32=dict(index_dtype=torch.int32), no_edge_feat=dict(edge=False), no_loops=dict(loops=False),
                one_head_one_channel=dict(heads=1, ch=1), n1=dict(n=4, kind="empty"), wide=dict(heads=2, ch=37),
                # a hub with ~400 in-edges: many online-softmax blocks of the CPU forward, rescaled as the max grows
                big_hub=dict(n=100, heads=2, ch=4), isolated_no_edge_feat=dict(kind="isolated", edge=False))


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("case", list(VARIANTS))
def test_matches_reference_variants(backend, case):
    kw = dict(VARIANTS[case])
    kind = kw.pop("kind", "powerlaw")
    compare(backend, *make(kind, torch.float32, **kw), torch.float32)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fast_mode_matches_reference(backend, dtype, dropout):
    """deterministic=False: grad_xl (and on the GPU grad_att) may be accumulated with atomics."""
    compare(backend, *make("powerlaw", dtype), dtype, dropout=dropout, seed=3, deterministic=False)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("dropout,seed", [(0.3, 0), (0.3, 7), (0.9, 2**40 + 3)])
def test_dropout_matches_reference(backend, dtype, dropout, seed):
    """Seeded attention dropout: every backend draws v1's keep pattern (a counter-based hash of the CSR edge and
    head) in the forward and again in the backward."""
    compare(backend, *make("powerlaw", dtype), dtype, dropout=dropout, seed=seed)


@pytest.mark.parametrize("backend", backends())
def test_bipartite(backend):
    torch.manual_seed(0)
    ei = torch.stack([torch.randint(0, 9, (30,)), torch.randint(0, 5, (30,))]).to(DEVICE)
    g = gat_graph(ei, 9, 5)
    xl, xr = torch.randn(9, 2, 4, device=DEVICE), torch.randn(5, 2, 4, device=DEVICE)
    e = torch.randn(30, 2, 4, device=DEVICE)
    compare(backend, g, xl, xr, torch.randn(2, 4, device=DEVICE), e, torch.float32)


def test_dropout_is_unbiased_and_seeded():
    g, xl, xr, att, e = make("random", torch.float64, n=10)
    full = gatv2_attention(xl, xr, att, g, e)
    same = [gatv2_attention(xl, xr, att, g, e, dropout=0.4, seed=3) for _ in range(2)]
    assert torch.equal(same[0], same[1]) and not torch.equal(same[0], full)
    mean = torch.stack([gatv2_attention(xl, xr, att, g, e, dropout=0.4, seed=s) for s in range(1000)]).mean(0)
    # E[m] = 1, so the seed-average approaches the undropped output (1000 draws: a few percent of its scale)
    assert (mean - full).abs().max() < 0.1 * full.abs().max()


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_gradcheck_float64(backend, dropout):
    g, xl, xr, att, e = make("selfloops_dups", torch.float64, n=7, heads=2, ch=3)
    ts = [t.requires_grad_(True) for t in (xl, xr, att, e)]
    # the Triton interpreter runs ~0.1 s per call: there, gradcheck's fast mode (a few random projections, not
    # ~300 perturbed forwards); the full Jacobians everywhere else
    fast = backend == "triton" and triton_interpreted()
    with pyunlearn.use_backend(backend):
        assert torch.autograd.gradcheck(lambda a, b, c, d: gatv2_attention(a, b, c, g, d, dropout=dropout, seed=11),
                                        ts, fast_mode=fast)


def test_gradcheck_shared_xl_xr():
    """share_weights passes one tensor as xl and xr: autograd sums both gradients."""
    g, xl, _, att, _ = make("random", torch.float64, n=6, heads=2, ch=3)
    ts = [t.requires_grad_(True) for t in (xl, att)]
    assert torch.autograd.gradcheck(lambda x, a: gatv2_attention(x, x, a, g), ts)


def test_single_node_graph():
    g = gat_graph(torch.empty(2, 0, dtype=torch.long, device=DEVICE), 1, add_self_loops=True)
    xl = torch.randn(1, 2, 3, device=DEVICE)
    out = gatv2_attention(xl, torch.randn(1, 2, 3, device=DEVICE), torch.randn(2, 3, device=DEVICE), g)
    torch.testing.assert_close(out, xl)  # one self-loop: alpha = 1


def test_non_contiguous_inputs():
    g, xl, xr, att, e = make("random", torch.float32)
    views = [t.transpose(0, 1).contiguous().transpose(0, 1) for t in (xl, xr, e)]
    assert not any(v.is_contiguous() for v in views)
    torch.testing.assert_close(gatv2_attention(views[0], views[1], att.t().contiguous().t(), g, views[2]),
                               gatv2_attention(xl, xr, att, g, e))


def dense_gatv2(xl, xr, att, adj, slope):
    """softmax over a dense [dst, src] logit matrix masked by the adjacency; out = alpha @ xl per head."""
    z = torch.nn.functional.leaky_relu(xr[:, None] + xl[None, :], slope)  # [dst, src, H, C]
    scores = (z * att).sum(-1).masked_fill(~adj[..., None], float("-inf"))  # [dst, src, H]
    alpha = torch.softmax(scores, dim=1).nan_to_num(0.0)
    return torch.einsum("ijh,jhc->ihc", alpha, xl), alpha


@pytest.mark.parametrize("backend", backends())
def test_dense_masked_attention(backend):
    """On a tiny graph the op equals softmax over a dense [N, N] score matrix masked by the adjacency, and the
    attention weights are that matrix's entries."""
    _, xl, xr, att, _ = make("random", torch.float64, n=6, edge=False)
    ei = torch.unique(graph("random", 6), dim=1)  # the dense form cannot express duplicate edges
    g = gat_graph(ei[:, ei[1] != 5].to(DEVICE), 6, add_self_loops=True)  # node 5: only its self-loop
    with pyunlearn.use_backend(backend):
        out, mx, den = gatv2_attention(xl, xr, att, g, negative_slope=0.1, return_stats=True)
    adj = torch.zeros(6, 6, dtype=torch.bool, device=DEVICE)
    adj[g.edge_index[1], g.edge_index[0]] = True  # [dst, src]
    want, alpha = dense_gatv2(xl, xr, att, adj, 0.1)
    torch.testing.assert_close(out, want)
    weights = gatv2_attention_weights(xl, xr, att, g, mx, den, negative_slope=0.1)
    torch.testing.assert_close(weights, alpha[g.edge_index[1], g.edge_index[0]])


def test_attention_weights_follow_dropout_and_edge_order():
    g, xl, xr, att, e = make("selfloops_dups", torch.float64)
    out, mx, den = gatv2_attention(xl, xr, att, g, e, dropout=0.5, seed=4, return_stats=True)
    alpha = gatv2_attention_weights(xl, xr, att, g, mx, den, e, dropout=0.5, seed=4)
    assert alpha.shape == (g.edge_index.size(1), 3) and (alpha == 0).any()
    # out[i] = sum over edge_index's edges into i of alpha * xl[src]
    rebuilt = torch.zeros_like(out).index_add_(0, g.edge_index[1], alpha[..., None] * xl[g.edge_index[0]])
    torch.testing.assert_close(rebuilt, out)


def test_deterministic_across_thread_counts():
    """The CPU backward gathers and reduces grad_att in a fixed chunk order: the same bits with 1 or 2 threads,
    run after run (a graph big enough for several parallel chunks)."""
    g, xl, xr, att, e = make("powerlaw", torch.float32, n=1500, heads=2, ch=8)
    out, mx, den = torch.ops.pyunlearn.gatv2_fwd(*fwd_args(g, xl, xr, att, e))
    go = torch.randn_like(out)
    args = (go, xl, xr, att, e, *graph_args(g), out, mx, den, 0.2, 0.0, 0, True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.pyunlearn.gatv2_bwd(*args)
        torch.set_num_threads(max(2, threads))
        many = [torch.ops.pyunlearn.gatv2_bwd(*args) for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    for run in many:
        assert all(torch.equal(a, b) for a, b in zip(one, run))


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("op", ["gatv2_fwd", "gatv2_bwd"])
def test_opcheck(backend, op):
    g, xl, xr, att, e = make("random", torch.float32, n=8)
    args = fwd_args(g, xl, xr, att, e)
    if op == "gatv2_bwd":
        out, mx, den = torch.ops.pyunlearn.gatv2_fwd(*args)
        args = (torch.randn_like(out), xl, xr, att, e, *graph_args(g), out, mx, den, 0.2, 0.25, 5, True)
    with pyunlearn.use_backend(backend):
        torch.library.opcheck(getattr(torch.ops.pyunlearn, op), args)


def test_opcheck_without_edge_features():
    g, xl, xr, att, _ = make("random", torch.float32, n=8)
    for t in (xl, xr, att):
        t.requires_grad_(True)
    torch.library.opcheck(torch.ops.pyunlearn.gatv2_fwd, fwd_args(g, xl, xr, att, None))


def test_torch_compile_fullgraph_with_backward():
    g, xl, xr, att, e = make("powerlaw", torch.float32)
    for t in (xl, att):
        t.requires_grad_(True)

    @torch.compile(fullgraph=True)
    def f(xl, xr, att, e):
        return gatv2_attention(xl, xr, att, g, e).square().sum()

    f(xl, xr, att, e).backward()
    grads = xl.grad.clone(), att.grad.clone()
    xl.grad = att.grad = None
    gatv2_attention(xl, xr, att, g, e).square().sum().backward()
    torch.testing.assert_close(grads[0], xl.grad)
    torch.testing.assert_close(grads[1], att.grad)


BAD = [
    ("heads mismatch", lambda g, xl, xr, a: gatv2_attention(xl, xr[:, :2], a, g), ValueError,
     r"xr must have shape \[12, 3, 5\] \[N_dst, H, C\], got \[12, 2, 5\]"),
    ("att shape", lambda g, xl, xr, a: gatv2_attention(xl, xr, a[None], g), ValueError,
     r"att must have shape \[3, 5\] \[H, C\], got \[1, 3, 5\]"),
    ("rows mismatch", lambda g, xl, xr, a: gatv2_attention(xl[:5], xr, a, g), ValueError,
     r"xl must have graph.num_src = 12 rows, got 5"),
    ("dtype mismatch", lambda g, xl, xr, a: gatv2_attention(xl, xr.double(), a, g), ValueError,
     r"xr must match xl's dtype torch.float32 and device cpu, got torch.float64 on cpu"),
    ("int xl", lambda g, xl, xr, a: gatv2_attention(xl.long(), xr, a, g), ValueError,
     r"xl must be a floating-point \[N_src, H, C\] tensor, got torch.int64"),
    ("e_feat shape", lambda g, xl, xr, a: gatv2_attention(xl, xr, a, g, xl), ValueError,
     r"e_feat must have shape \[\d+, 3, 5\] \[E, H, C\] \(CSR edge order\), got \[12, 3, 5\]"),
    ("att not a tensor", lambda g, xl, xr, a: gatv2_attention(xl, xr, 1.0, g), TypeError,
     r"att must be a Tensor \[H, C\], got float"),
    ("graph", lambda g, xl, xr, a: gatv2_attention(xl, xr, a, g.rowptr), TypeError,
     r"graph must be a GatGraph \(pyunlearn.ops.gat_graph\), got Tensor"),
    ("dropout 1", lambda g, xl, xr, a: gatv2_attention(xl, xr, a, g, dropout=1.0), ValueError,
     r"dropout must be in \[0, 1\), got 1.0"),
    ("seed", lambda g, xl, xr, a: gatv2_attention(xl, xr, a, g, seed=-1), ValueError,
     r"seed must be an int in \[0, 2\*\*63\), got -1"),
    ("device", lambda g, xl, xr, a: gatv2_attention(xl, xr, a.to("meta"), g), ValueError,
     r"att must match xl's dtype torch.float32 and device \S+, got torch.float32 on meta"),
]


@pytest.mark.parametrize("name,call,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, call, exc, match):
    if DEVICE != "cpu" and "device cpu" in match:
        match = match.replace("device cpu", r"device \S+").replace("on cpu", r"on \S+")
    g, xl, xr, att, _ = make("random", torch.float32)
    with pytest.raises(exc, match=match):
        call(g, xl, xr, att)


def test_cpp_op_checks_sizes():
    """The C++ kernels check sizes too, for callers that go straight to torch.ops."""
    g, xl, xr, att, e = make("random", torch.float32)
    rp, col, cp, rc, c2r = graph_args(g)
    op = torch.ops.pyunlearn.gatv2_fwd
    with pytest.raises(ValueError, match=r"rowptr must have N_dst \+ 1 = 13 entries, got 12"):
        op(xl, xr, att, e, rp[:-1], col, cp, rc, c2r, 0.2, 0.0, 0, True)
    with pytest.raises(ValueError, match=r"att must have shape \[3, 5\], got \[1, 3, 5\]"):
        op(xl, xr, att[None], e, rp, col, cp, rc, c2r, 0.2, 0.0, 0, True)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1"):
        op(xl, xr, att, e, rp, col, cp, rc, c2r, 0.2, 1.0, 0, True)


@pytest.mark.skipif(DEVICE != "cpu", reason="content checks of the CPU kernels (they read the index arrays)")
def test_cpp_op_checks_content():
    """The CPU kernels check the pointer arrays' content and every gathered index."""
    g, xl, xr, att, e = make("random", torch.float32)
    rp, col, cp, rc, c2r = graph_args(g)
    op = torch.ops.pyunlearn.gatv2_fwd
    bad_rp = rp.clone()
    bad_rp[3], bad_rp[4] = rp[4] + 1, rp[4]
    with pytest.raises(ValueError, match=r"rowptr must be non-decreasing"):
        op(xl, xr, att, e, bad_rp, col, cp, rc, c2r, 0.2, 0.0, 0, True)
    bad_col = col.clone()
    bad_col[0] = 12
    with pytest.raises(IndexError, match=r"col must lie in \[0, N_src = 12\), got 12"):
        op(xl, xr, att, e, rp, bad_col, cp, rc, c2r, 0.2, 0.0, 0, True)
    out, mx, den = op(xl, xr, att, e, rp, col, cp, rc, c2r, 0.2, 0.0, 0, True)
    bad_cp = cp.clone()
    bad_cp[-1] += 1
    with pytest.raises(ValueError, match=r"colptr must start at 0 and end at E"):
        torch.ops.pyunlearn.gatv2_bwd(out, xl, xr, att, e, rp, col, bad_cp, rc, c2r, out, mx, den, 0.2, 0.0, 0, True)
