"""pyunlearn.nn.GATv2Conv against torch_geometric's GATv2Conv with copied weights: outputs, attention weights,
input and weight gradients, on every backend; a dense masked-attention check; and its errors."""

from __future__ import annotations

import pytest
import torch

import pyunlearn
from pyunlearn.nn import GATv2Conv
from pyunlearn.testing import backends, devices

from _graphs import KINDS, graph

pyg = pytest.importorskip("torch_geometric.nn", reason="torch_geometric is the test peer")
DEVICE = devices()[0]
BACKENDS = backends() + ["reference"]
F64 = dict(rtol=1e-9, atol=1e-10)

CONFIGS = {
    "plain": dict(in_channels=10, out_channels=6, heads=3),
    "mean_heads": dict(in_channels=10, out_channels=5, heads=2, concat=False, negative_slope=0.1),
    "edge_mean": dict(in_channels=10, out_channels=4, heads=2, edge_dim=3, fill_value="mean"),
    "edge_float_res_nobias": dict(in_channels=10, out_channels=4, heads=1, edge_dim=2, fill_value=0.5,
                                  residual=True, bias=False),
    "edge_max_shared": dict(in_channels=10, out_channels=3, heads=2, edge_dim=2, fill_value="max",
                            share_weights=True),
    "no_loops_res_mean": dict(in_channels=10, out_channels=4, heads=2, add_self_loops=False, residual=True,
                              concat=False),
}


def pair(cfg, dtype=torch.float64):
    torch.manual_seed(0)
    theirs = pyg.GATv2Conv(**cfg).to(DEVICE, dtype)
    ours = GATv2Conv(**cfg).to(DEVICE, dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def inputs(kind, cfg, n=12, dtype=torch.float64):
    ei = graph(kind, n).to(DEVICE)
    x = torch.randn(n, cfg["in_channels"], device=DEVICE, dtype=dtype)
    ea = torch.randn(ei.size(1), cfg["edge_dim"], device=DEVICE, dtype=dtype) if cfg.get("edge_dim") else None
    return x, ei, ea


def run(layer, x, ei, ea):
    """out, edge_index, alpha, grad x, grad edge_attr, parameter grads of a weighted sum of the output."""
    x = x.clone().requires_grad_(True) if isinstance(x, torch.Tensor) else [t.clone().requires_grad_(True) for t in x]
    ea = None if ea is None else ea.clone().requires_grad_(True)
    out, (ei_out, alpha) = layer(x if isinstance(x, torch.Tensor) else tuple(x), ei, ea,
                                 return_attention_weights=True)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)).sum().backward()
    grads = {k: p.grad.clone() for k, p in layer.named_parameters() if p.grad is not None}
    gx = x.grad if isinstance(x, torch.Tensor) else torch.cat([t.grad.flatten() for t in x])
    return out.detach(), ei_out, alpha.detach(), gx, None if ea is None else ea.grad, grads


def assert_matches(o, t, tol=F64):
    torch.testing.assert_close(o[0], t[0], **tol)
    assert torch.equal(o[1], t[1]), "attention edge order differs from PyG's"
    torch.testing.assert_close(o[2], t[2].view_as(o[2]), **tol)
    torch.testing.assert_close(o[3], t[3], **tol, msg=lambda m: f"grad x: {m}")
    if t[4] is not None:
        torch.testing.assert_close(o[4], t[4], **tol, msg=lambda m: f"grad edge_attr: {m}")
    assert o[5].keys() == t[5].keys()
    for name, g in t[5].items():
        torch.testing.assert_close(o[5][name], g, **tol, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_matches_pyg(backend, kind, cfg):
    cfg = CONFIGS[cfg]
    ours, theirs = pair(cfg)
    x, ei, ea = inputs(kind, cfg)
    with pyunlearn.use_backend(backend):
        o = run(ours, x, ei, ea)
    assert_matches(o, run(theirs, x, ei, ea))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", [dict(in_channels=(7, 5), out_channels=4, heads=2, add_self_loops=False),
                                 dict(in_channels=(7, 5), out_channels=3, heads=2, residual=True, edge_dim=2),
                                 dict(in_channels=(6, 6), out_channels=3, heads=2, share_weights=True)],
                         ids=["no_loops", "loops_res_edge", "shared"])
def test_bipartite_matches_pyg(backend, cfg):
    ours, theirs = pair(cfg)
    src_in, dst_in = cfg["in_channels"]
    x = (torch.randn(9, src_in, dtype=torch.float64, device=DEVICE),
         torch.randn(6, dst_in, dtype=torch.float64, device=DEVICE))
    ei = torch.stack([torch.randint(0, 9, (30,)), torch.randint(0, 6, (30,))]).to(DEVICE)
    ea = torch.randn(30, 2, dtype=torch.float64, device=DEVICE) if cfg.get("edge_dim") else None
    with pyunlearn.use_backend(backend):
        o = run(ours, x, ei, ea)
    assert_matches(o, run(theirs, x, ei, ea))


def test_state_dict_keys_match_pyg():
    for cfg in [*CONFIGS.values(), dict(in_channels=(7, 5), out_channels=2, bias=False)]:
        ours, theirs = pair(cfg)
        assert sorted(ours.state_dict()) == sorted(theirs.state_dict()), cfg
        for name, t in theirs.state_dict().items():
            assert ours.state_dict()[name].shape == t.shape, name


def test_init_follows_pyg():
    """Fresh layers (no copied weights) use PyG's initialisers: glorot weights and att, lin biases uniform in
    +-1/sqrt(fan_in), zero output bias. Both layers' tensors fill the same bounds."""
    torch.manual_seed(1)
    ours, theirs = GATv2Conv(64, 32, heads=4, edge_dim=16), pyg.GATv2Conv(64, 32, heads=4, edge_dim=16)
    bounds = {"lin_l.weight": (6 / 192) ** 0.5, "lin_r.weight": (6 / 192) ** 0.5, "lin_l.bias": 64 ** -0.5,
              "lin_r.bias": 64 ** -0.5, "lin_edge.weight": (6 / 144) ** 0.5, "att": (6 / 36) ** 0.5, "bias": 0.0}
    assert sorted(bounds) == sorted(theirs.state_dict())
    for layer in (ours, theirs):
        for name, t in layer.state_dict().items():
            top = float(t.abs().max())
            assert (top == 0.0) if bounds[name] == 0 else (0.8 * bounds[name] < top <= bounds[name]), name


def test_fp32_close_to_pyg():
    cfg = dict(in_channels=16, out_channels=8, heads=4, edge_dim=3)
    ours, theirs = pair(cfg, torch.float32)
    x, ei, ea = inputs("powerlaw", cfg, n=40, dtype=torch.float32)
    torch.testing.assert_close(ours(x, ei, ea), theirs(x, ei, ea), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_masked_attention(backend):
    """On a tiny graph the layer equals a dense GATv2 written from the paper: softmax over the adjacency-masked
    [dst, src] logits a . leaky_relu(W_r x_i + W_l x_j), aggregating W_l x_j."""
    torch.manual_seed(0)
    layer = GATv2Conv(5, 3, heads=2, negative_slope=0.15, bias=False).to(DEVICE, torch.float64)
    x = torch.randn(6, 5, dtype=torch.float64, device=DEVICE)
    ei = torch.unique(graph("random", 6), dim=1).to(DEVICE)  # the dense form cannot express duplicate edges
    with pyunlearn.use_backend(backend):
        out = layer(x, ei)
    xl = layer.lin_l(x).view(6, 2, 3)
    xr = layer.lin_r(x).view(6, 2, 3)
    adj = torch.eye(6, dtype=torch.bool, device=DEVICE)  # self-loops added
    adj[ei[1], ei[0]] = True  # [dst, src]
    z = torch.nn.functional.leaky_relu(xr[:, None] + xl[None, :], 0.15)  # [dst, src, H, C]
    scores = (z * layer.att[0]).sum(-1).masked_fill(~adj[..., None], float("-inf"))
    alpha = torch.softmax(scores, dim=1)
    torch.testing.assert_close(out, torch.einsum("ijh,jhc->ihc", alpha, xl).reshape(6, 6))


def test_training_dropout_reproducible_and_off_in_eval():
    cfg = dict(in_channels=10, out_channels=4, heads=2, dropout=0.5)
    ours, theirs = pair(cfg)
    x, ei, _ = inputs("random", cfg)
    torch.manual_seed(3)
    a = ours.train()(x, ei)
    torch.manual_seed(3)
    b = ours(x, ei)
    assert torch.equal(a, b) and not torch.equal(a, ours(x, ei))
    torch.testing.assert_close(ours.eval()(x, ei), theirs.eval()(x, ei), **F64)
    _, (_, alpha) = ours.train()(x, ei, return_attention_weights=True)
    assert (alpha == 0).float().mean() > 0.3  # dropped weights are reported as 0, as PyG does


def test_size_keyword_and_graph_cache():
    layer = GATv2Conv(4, 2).double()
    x, ei = torch.randn(5, 4, dtype=torch.float64), graph("random", 5)
    torch.testing.assert_close(layer(x, ei, size=(5, 5)), layer(x, ei))
    first = layer._graph
    layer(x, ei)
    assert layer._graph is first


@pytest.mark.parametrize("make,call,exc,match", [
    (lambda: GATv2Conv(4, 2, aggr="max"), None, TypeError, r"GATv2Conv got unsupported keyword arguments \['aggr'\]"),
    (lambda: GATv2Conv(4, 2, fill_value="median"), None, ValueError, r"fill_value must be"),
    (lambda: GATv2Conv(-1, 2), None, ValueError, r"in_channels must be positive \(PyG's lazy -1 is not supported\)"),
    (lambda: GATv2Conv((4, 3), 2, share_weights=True), None, ValueError,
     r"share_weights=True applies one lin to sources and destinations: in_channels must agree, got \(4, 3\)"),
    (lambda: GATv2Conv(4, 2), lambda m: m((torch.randn(3, 4), None), torch.tensor([[0, 1], [1, 1]])), ValueError,
     r"x = \(x_src, None\) is not supported"),
    (lambda: GATv2Conv(4, 2), lambda m: m(torch.randn(3, 4), torch.tensor([[0, 1], [1, 1]]), torch.randn(2, 3)),
     ValueError, r"edge_attr was given but the layer has no edge_dim"),
    (lambda: GATv2Conv(4, 2), lambda m: m(torch.randn(3, 4), torch.tensor([[0, 3], [1, 1]])), IndexError,
     r"edge_index\[0\] \(sources\) must lie in \[0, 3\), got values in \[0, 3\]"),
    (lambda: GATv2Conv(4, 2), lambda m: m(torch.randn(3, 4), torch.zeros(3, 2, dtype=torch.long)), ValueError,
     r"edge_index must have shape \[2, E\], got \[3, 2\]"),
    (lambda: GATv2Conv(4, 2), lambda m: m(torch.randn(3, 4), torch.zeros(2, 2, dtype=torch.long).to_sparse()),
     TypeError, r"edge_index must be a dense \[2, E\] index tensor"),
])
def test_bad_input(make, call, exc, match):
    with pytest.raises(exc, match=match):
        m = make()
        if call is not None:
            call(m)
