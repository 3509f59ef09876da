"""Fused GAT ops: every backend against the reference twin (forward and backward), gradcheck, opcheck,
torch.compile, dense masked attention on a tiny graph, and bad input."""

from __future__ import annotations

import pytest
import torch

import pyunlearn
from pyunlearn.ops import gat_attention, gat_graph
from pyunlearn.reference import gat_bwd_ref, gat_fwd_ref
from pyunlearn.testing import backends, devices

from _graphs import KINDS, graph

DEVICE = devices()[0]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6),
       torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def make(kind, dtype, heads=3, ch=5, n=12, index_dtype=torch.int64, edge=True, loops=True, seed=0):
    torch.manual_seed(seed)
    g = gat_graph(graph(kind, n, seed).to(DEVICE), n, add_self_loops=loops, index_dtype=index_dtype)
    h = torch.randn(n, heads, ch, device=DEVICE, dtype=dtype)
    s_src = torch.randn(n, heads, device=DEVICE, dtype=dtype)
    s_dst = torch.randn(n, heads, device=DEVICE, dtype=dtype)
    e = torch.randn(g.col.numel(), heads, device=DEVICE, dtype=dtype) if edge else None
    return g, h, s_src, s_dst, e


def fwd_args(g, h, s_src, s_dst, e, slope=0.2, dropout=0.0, seed=0):
    return (h, s_src, s_dst, e, g.rowptr, g.col, g.colptr, g.row_csc, g.csc_to_csr, slope, dropout, seed, True)


def compare(backend, g, h, s_src, s_dst, e, dtype, dropout=0.0, seed=0):
    # low precision: the reference runs in fp32 on the same (rounded) inputs
    up = (lambda t: None if t is None else t.float()) if dtype in (torch.float16, torch.bfloat16) else (lambda t: t)
    with pyunlearn.use_backend(backend):
        out, mx, den = torch.ops.pyunlearn.gat_fwd(*fwd_args(g, h, s_src, s_dst, e, 0.2, dropout, seed))
    r_out, r_mx, r_den = gat_fwd_ref(*fwd_args(g, up(h), up(s_src), up(s_dst), up(e), 0.2, dropout, seed))
    torch.testing.assert_close(out.float() if out.dtype != r_out.dtype else out, r_out, **TOL[dtype])
    torch.testing.assert_close(mx, r_mx, **TOL[dtype])
    torch.testing.assert_close(den, r_den, **TOL[dtype])
    go = torch.randn_like(out)
    args = (g.rowptr, g.col, g.colptr, g.row_csc, g.csc_to_csr)
    with pyunlearn.use_backend(backend):
        got = torch.ops.pyunlearn.gat_bwd(go, h, s_src, s_dst, e, *args, out, mx, den, 0.2, dropout, seed, True)
    want = gat_bwd_ref(up(go), up(h), up(s_src), up(s_dst), up(e), *args, up(out), mx, den, 0.2, dropout, seed,
                       True)
    for name, a, b in zip(("grad_h", "grad_s_src", "grad_s_dst", "grad_e_score"), got, want):
        # grad_s_* and grad_e are sums alpha * (d_alpha - D) that cancel towards 0: judge their error against
        # the tensor's scale (the reference's own rounding is of that size), not element by element.
        tol = dict(TOL[dtype])
        if b.numel():
            tol["atol"] = max(tol["atol"], tol["rtol"] * float(b.abs().max()))
        torch.testing.assert_close(a.to(b.dtype), b, **tol, msg=lambda m: f"{backend} {name}: {m}")


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference(backend, kind, dtype):
    compare(backend, *make(kind, dtype), dtype)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("case", ["int32", "no_edge_term", "no_loops", "one_head_one_channel", "n1", "wide"])
def test_matches_reference_variants(backend, case):
    kw = dict(int32=dict(index_dtype=torch.int32), no_edge_term=dict(edge=False), no_loops=dict(loops=False),
              one_head_one_channel=dict(heads=1, ch=1), n1=dict(n=4, kind="empty"), wide=dict(heads=2, ch=33))[case]
    kind = kw.pop("kind", "powerlaw")
    compare(backend, *make(kind, torch.float32, **kw), torch.float32)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("dropout,seed", [(0.3, 0), (0.3, 7), (0.9, 2**40 + 3)])
def test_dropout_matches_reference(backend, dtype, dropout, seed):
    """Seeded attention dropout: every backend draws the same keep pattern (a counter-based hash of the CSR
    edge and head) in the forward and again in the backward."""
    compare(backend, *make("powerlaw", dtype), dtype, dropout=dropout, seed=seed)


def test_dropout_is_unbiased_and_seeded():
    g, h, s_src, s_dst, e = make("random", torch.float64, n=10)
    full = gat_attention(h, s_src, s_dst, g, e)
    same = [gat_attention(h, s_src, s_dst, g, e, dropout=0.4, seed=3) for _ in range(2)]
    assert torch.equal(same[0], same[1]) and not torch.equal(same[0], full)
    mean = torch.stack([gat_attention(h, s_src, s_dst, g, e, dropout=0.4, seed=s) for s in range(2000)]).mean(0)
    # E[m] = 1, so the seed-average approaches the undropped output (2000 draws: a few percent of its scale)
    assert (mean - full).abs().max() < 0.1 * full.abs().max()


def test_dropout_gradcheck_float64():
    g, h, s_src, s_dst, e = make("selfloops_dups", torch.float64, n=7, heads=2, ch=3)
    ts = [t.requires_grad_(True) for t in (h, s_src, s_dst, e)]
    assert torch.autograd.gradcheck(lambda a, b, c, d: gat_attention(a, b, c, g, d, dropout=0.5, seed=11), ts)


@pytest.mark.parametrize("backend", backends())
def test_bipartite(backend):
    torch.manual_seed(0)
    ei = torch.stack([torch.randint(0, 9, (30,)), torch.randint(0, 5, (30,))]).to(DEVICE)
    g = gat_graph(ei, 9, 5)
    h = torch.randn(9, 2, 4, device=DEVICE)
    compare(backend, g, h, torch.randn(9, 2, device=DEVICE), torch.randn(5, 2, device=DEVICE), None,
            torch.float32)


def test_single_node_graph():
    g = gat_graph(torch.empty(2, 0, dtype=torch.long, device=DEVICE), 1, add_self_loops=True)
    h = torch.randn(1, 2, 3, device=DEVICE)
    out = gat_attention(h, torch.randn(1, 2, device=DEVICE), torch.randn(1, 2, device=DEVICE), g)
    torch.testing.assert_close(out, h)  # one self-loop: alpha = 1


@pytest.mark.parametrize("backend", backends())
def test_dense_masked_attention(backend):
    """On a tiny graph the op equals softmax over a dense [N, N] score matrix masked by the adjacency."""
    _, h, s_src, s_dst, _ = make("random", torch.float64, n=6, edge=False)
    # the dense form cannot express duplicate edges: dedupe first (isolated node 5 keeps only its self-loop)
    ei = torch.unique(graph("random", 6), dim=1)
    g = gat_graph(ei[:, ei[1] != 5].to(DEVICE), 6, add_self_loops=True)
    with pyunlearn.use_backend(backend):
        out = gat_attention(h, s_src, s_dst, g, negative_slope=0.1)
    adj = torch.zeros(6, 6, dtype=torch.bool, device=DEVICE)
    adj[g.edge_index[1], g.edge_index[0]] = True  # [dst, src]
    scores = torch.nn.functional.leaky_relu(s_dst[:, None, :] + s_src[None, :, :], 0.1)  # [dst, src, H]
    scores = scores.masked_fill(~adj[..., None], float("-inf"))
    alpha = torch.softmax(scores, dim=1).nan_to_num(0.0)
    torch.testing.assert_close(out, torch.einsum("ijh,jhc->ihc", alpha, h))


@pytest.mark.parametrize("backend", backends())
def test_gradcheck_float64(backend):
    g, h, s_src, s_dst, e = make("selfloops_dups", torch.float64, n=7, heads=2, ch=3)
    ts = [t.requires_grad_(True) for t in (h, s_src, s_dst, e)]
    with pyunlearn.use_backend(backend):
        assert torch.autograd.gradcheck(lambda a, b, c, d: gat_attention(a, b, c, g, d), ts)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("op", ["gat_fwd", "gat_bwd"])
def test_opcheck(backend, op):
    g, h, s_src, s_dst, e = make("random", torch.float32, n=8)
    args = fwd_args(g, h, s_src, s_dst, e)
    if op == "gat_bwd":
        out, mx, den = torch.ops.pyunlearn.gat_fwd(*args)
        args = (torch.randn_like(out), h, s_src, s_dst, e, g.rowptr, g.col, g.colptr, g.row_csc, g.csc_to_csr,
                out, mx, den, 0.2, 0.25, 5, True)
    with pyunlearn.use_backend(backend):
        torch.library.opcheck(getattr(torch.ops.pyunlearn, op), args)


def test_torch_compile_fullgraph_with_backward():
    g, h, s_src, s_dst, e = make("powerlaw", torch.float32)
    h.requires_grad_(True)

    @torch.compile(fullgraph=True)
    def f(h, s_src, s_dst, e):
        return gat_attention(h, s_src, s_dst, g, e).square().sum()

    f(h, s_src, s_dst, e).backward()
    grad = h.grad.clone()
    h.grad = None
    gat_attention(h, s_src, s_dst, g, e).square().sum().backward()
    torch.testing.assert_close(grad, h.grad)


BAD = [
    ("heads mismatch", lambda g, h, s, d: gat_attention(h, s[:, :2], d, g), ValueError,
     r"s_src must have shape \[12, 3\] \(nodes, heads\), got \[12, 2\]"),
    ("rows mismatch", lambda g, h, s, d: gat_attention(h[:5], s, d, g), ValueError,
     r"h must have graph.num_src = 12 rows, got 5"),
    ("dtype mismatch", lambda g, h, s, d: gat_attention(h, s.double(), d, g), ValueError,
     r"s_src must match h's dtype torch.float32"),
    ("int h", lambda g, h, s, d: gat_attention(h.long(), s, d, g), ValueError,
     r"h must be a floating-point \[N_src, H, C\] tensor"),
    ("dropout 1", lambda g, h, s, d: gat_attention(h, s, d, g, dropout=1.0), ValueError,
     r"dropout must be in \[0, 1\), got 1.0"),
    ("device", lambda g, h, s, d: gat_attention(h, s.to("meta"), d, g), ValueError,
     r"s_src must match h's dtype torch.float32 and device \S+, got torch.float32 on meta"),
]


@pytest.mark.parametrize("name,call,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, call, exc, match):
    g, h, s_src, s_dst, _ = make("random", torch.float32)
    with pytest.raises(exc, match=match):
        call(g, h, s_src, s_dst)


def test_bad_graph_input():
    with pytest.raises(IndexError, match=r"edge_index\[1\] \(destinations\) must lie in \[0, 4\), got values in"):
        gat_graph(torch.tensor([[0, 1], [2, 4]]), 4)
    with pytest.raises(TypeError, match=r"edge_index must be int32 or int64, got torch.float32"):
        gat_graph(torch.zeros(2, 3), 4)


def test_cpp_op_checks_csr():
    """The C++ kernels check sizes too, for callers that go straight to torch.ops."""
    g, h, s_src, s_dst, e = make("random", torch.float32)
    with pytest.raises(ValueError, match=r"rowptr must have N_dst \+ 1 = 13 entries, got 12"):
        torch.ops.pyunlearn.gat_fwd(h, s_src, s_dst, e, g.rowptr[:-1], g.col, g.colptr, g.row_csc, g.csc_to_csr,
                                    0.2, 0.0, 0, True)
