"""pyunlearn.nn.GATConv against torch_geometric's GATConv with copied weights: outputs, attention weights, input
and weight gradients, on every backend; plus its errors."""

from __future__ import annotations

import pytest
import torch

import pyunlearn
from pyunlearn.nn import GATConv
from pyunlearn.testing import backends, devices

from _graphs import KINDS, graph

pyg = pytest.importorskip("torch_geometric.nn", reason="torch_geometric is the test peer")
DEVICE = devices()[0]
BACKENDS = backends() + ["reference"]

CONFIGS = [
    dict(in_channels=10, out_channels=6, heads=3),
    dict(in_channels=10, out_channels=5, heads=2, concat=False, negative_slope=0.1),
    dict(in_channels=10, out_channels=4, heads=2, edge_dim=3, fill_value="mean"),
    dict(in_channels=10, out_channels=4, heads=1, edge_dim=2, fill_value=0.5, residual=True, bias=False),
    dict(in_channels=10, out_channels=4, heads=2, add_self_loops=False),
]


def pair(cfg, dtype=torch.float64):
    torch.manual_seed(0)
    theirs = pyg.GATConv(**cfg).to(DEVICE, dtype)
    ours = GATConv(**cfg).to(DEVICE, dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def inputs(kind, cfg, n=12, dtype=torch.float64):
    ei = graph(kind, n).to(DEVICE)
    x = torch.randn(n, cfg["in_channels"], device=DEVICE, dtype=dtype)
    ea = torch.randn(ei.size(1), cfg["edge_dim"], device=DEVICE, dtype=dtype) if cfg.get("edge_dim") else None
    return x, ei, ea


def run(layer, x, ei, ea):
    x = x.clone().requires_grad_(True)
    out, (ei_out, alpha) = layer(x, ei, ea, return_attention_weights=True)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)).sum().backward()
    grads = {k: p.grad.clone() for k, p in layer.named_parameters()}
    return out.detach(), ei_out, alpha.detach(), x.grad, grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ci", range(len(CONFIGS)))
def test_matches_pyg(backend, kind, ci):
    cfg = CONFIGS[ci]
    ours, theirs = pair(cfg)
    x, ei, ea = inputs(kind, cfg)
    with pyunlearn.use_backend(backend):
        o = run(ours, x, ei, ea)
    t = run(theirs, x, ei, ea)
    torch.testing.assert_close(o[0], t[0], rtol=1e-9, atol=1e-10)
    assert torch.equal(o[1], t[1]), "attention edge order differs from PyG's"
    torch.testing.assert_close(o[2], t[2].view_as(o[2]), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(o[3], t[3], rtol=1e-9, atol=1e-10)
    for name, g in t[4].items():
        torch.testing.assert_close(o[4][name], g, rtol=1e-9, atol=1e-10, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bipartite_matches_pyg(backend):
    cfg = dict(in_channels=(7, 5), out_channels=4, heads=2, add_self_loops=False)
    torch.manual_seed(0)
    theirs = pyg.GATConv(**cfg).to(DEVICE, torch.float64)
    ours = GATConv(**cfg).to(DEVICE, torch.float64)
    ours.load_state_dict(theirs.state_dict())
    xs = torch.randn(9, 7, dtype=torch.float64, device=DEVICE)
    xd = torch.randn(6, 5, dtype=torch.float64, device=DEVICE)
    ei = torch.stack([torch.randint(0, 9, (30,)), torch.randint(0, 6, (30,))]).to(DEVICE)
    with pyunlearn.use_backend(backend):
        ours_out = ours((xs, xd), ei)
    torch.testing.assert_close(ours_out, theirs((xs, xd), ei), rtol=1e-9, atol=1e-10)


def test_fp32_close_to_pyg():
    cfg = dict(in_channels=16, out_channels=8, heads=4)
    ours, theirs = pair(cfg, torch.float32)
    x, ei, _ = inputs("powerlaw", cfg, n=40, dtype=torch.float32)
    torch.testing.assert_close(ours(x, ei), theirs(x, ei), rtol=1e-4, atol=1e-5)


def test_training_dropout_reproducible_and_off_in_eval():
    cfg = dict(in_channels=10, out_channels=4, heads=2, dropout=0.5)
    ours, theirs = pair(cfg)
    x, ei, _ = inputs("random", cfg)
    torch.manual_seed(3)
    a = ours.train()(x, ei)
    torch.manual_seed(3)
    b = ours(x, ei)
    assert torch.equal(a, b) and not torch.equal(a, ours(x, ei))
    torch.testing.assert_close(ours.eval()(x, ei), theirs.eval()(x, ei), rtol=1e-9, atol=1e-10)
    out, (_, alpha) = ours.train()(x, ei, return_attention_weights=True)
    assert (alpha == 0).float().mean() > 0.3  # dropped weights are reported as 0, as PyG does


def test_graph_is_cached_per_edge_index():
    layer = GATConv(4, 2)
    x, ei = torch.randn(5, 4), graph("random", 5)
    layer(x, ei)
    first = layer._graph
    layer(x, ei)
    assert layer._graph is first
    ei.add_(0)  # in-place change bumps the version: rebuilt
    layer(x, ei)
    assert layer._graph is not first
    second = layer._graph
    layer(x, ei.clone())  # equal content, another tensor (it could sit at a freed tensor's address): rebuilt
    assert layer._graph is not second


@pytest.mark.parametrize("make,call,exc,match", [
    (lambda: GATConv(4, 2, aggr="max"), None, TypeError, r"unsupported keyword arguments \['aggr'\]"),
    (lambda: GATConv(4, 2, fill_value="median"), None, ValueError, r"fill_value must be"),
    (lambda: GATConv(4, 2), lambda m: m(torch.randn(3, 4), torch.tensor([[0, 3], [1, 1]])), IndexError,
     r"edge_index\[0\] \(sources\) must lie in \[0, 3\), got values in \[0, 3\]"),
    (lambda: GATConv(4, 2), lambda m: m(torch.randn(3, 4), torch.tensor([[0, -1], [1, 1]])), IndexError,
     r"must lie in \[0, 3\)"),
    (lambda: GATConv(4, 2), lambda m: m(torch.randn(3, 4), torch.tensor([[0.0, 1.0], [1.0, 1.0]])), TypeError,
     r"edge_index must be int32 or int64, got torch.float32"),
    (lambda: GATConv(4, 2), lambda m: m(torch.randn(3, 4), torch.zeros(3, 2, dtype=torch.long)), ValueError,
     r"edge_index must have shape \[2, E\], got \[3, 2\]"),
    (lambda: GATConv(4, 2), lambda m: m(torch.randn(3, 4), torch.zeros(2, 2, dtype=torch.long, device="meta")),
     ValueError, r"edge_index must be on x's device cpu, got meta"),
])
def test_bad_input(make, call, exc, match):
    with pytest.raises(exc, match=match):
        m = make()
        if call is not None:
            call(m)
