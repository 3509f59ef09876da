"""ZO estimators (spec A0, A1.2, A1.5, A5.2): CGE (feature-reuse, generic-block and plain-loop paths) against the
naive per-coordinate loop in float64; RGE against its formula with materialised directions, batched against
sequential, unbiasedness on a quadratic; perturb/restore bounds; fp32 agreement with autograd; bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from pyunlearn.ops.zo import zo_directions
from pyunlearn.zo.estimators import cge, param_offsets, rge, spsa_projections

F64 = torch.float64
CE = nn.CrossEntropyLoss()


class Residual(nn.Module):
    """A block CGE cannot treat locally: its parameters take the generic path."""

    def __init__(self, n: int):
        super().__init__()
        self.lin, self.norm = nn.Linear(n, n), nn.LayerNorm(n)

    def forward(self, x):
        return x + torch.tanh(self.norm(self.lin(x)))


class NotSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x))) + 0.1 * self.a(x)[:, :3]


class Declared(nn.Module):
    """Declares its blocks: feature reuse applies although it is not an nn.Sequential."""

    def __init__(self, wrong: bool = False):
        super().__init__()
        self.c1, self.c2, self.wrong = nn.Linear(6, 5), nn.Linear(5, 3), wrong

    def zo_blocks(self):
        return [self.c1, nn.SiLU(), self.c2]

    def forward(self, x):
        h = self.c1(x)
        return self.c2(torch.relu(h) if self.wrong else nn.functional.silu(h))


def _model(kind: str, dtype=F64) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    if kind == "mlp":
        m = nn.Sequential(nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
        x = torch.randn(9, 7, generator=g)
    elif kind == "relu_mlp":  # no BatchNorm after layer 1: only the rows a ReLU lets change are evaluated
        m = nn.Sequential(nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
        x = torch.randn(9, 7, generator=g)
        x[:3, 2] = 0.0  # zero inputs: perturbing a weight on them changes nothing in those rows
    elif kind == "cnn":  # BN train mode, pooling, strided conv, Flatten into Linear
        m = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(3, 4, 3, padding=1, stride=2), nn.GELU(), nn.Flatten(), nn.Linear(16, 3))
        x = torch.randn(5, 2, 8, 8, generator=g)
    elif kind == "cnn_eval_bn":  # BN eval mode (running stats), grouped + dilated conv, adaptive pooling
        m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=2, dilation=2, groups=2), nn.BatchNorm2d(4), nn.SiLU(),
                          nn.Conv2d(4, 3, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
        m[1].eval()
        x = torch.randn(4, 2, 6, 6, generator=g)
    elif kind == "generic":  # a block with its own structure, LayerNorm, and a Linear on a 3-D input
        m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), Residual(6), nn.LayerNorm(6), nn.Linear(6, 3))
        x = torch.randn(6, 4, generator=g)
    elif kind == "not_sequential":
        m, x = NotSequential(), torch.randn(6, 6, generator=g)
    elif kind == "declared":
        m, x = Declared(), torch.randn(6, 6, generator=g)
    else:
        raise ValueError(kind)
    m = m.to(dtype)
    for p in m.parameters():  # non-trivial affine parameters
        if p.dim() == 1:
            with torch.no_grad():
                p.uniform_(0.5, 1.5)
    y = torch.randint(0, 3, (x.shape[0],), generator=g)
    return m, x.to(dtype), y


def _naive_cge(model, loss_fn, x, y, mu, coords=None) -> dict[str, torch.Tensor]:
    """DeepZero's estimator as written: one full forward per coordinate."""
    out = {}
    with torch.no_grad():
        l0 = loss_fn(model(x), y).double()
        for n, p in model.named_parameters():
            g = torch.zeros(p.numel(), dtype=F64)
            idx = range(p.numel()) if coords is None else coords.get(n, torch.zeros(0, dtype=torch.long)).tolist()
            for j in idx:
                old = p.view(-1)[j].clone()
                p.view(-1)[j] += mu
                g[j] = (loss_fn(model(x), y).double() - l0) / mu
                p.view(-1)[j] = old
            out[n] = g.view(p.shape)
    return out


@pytest.mark.parametrize("kind", ["mlp", "relu_mlp", "cnn", "cnn_eval_bn", "generic", "not_sequential",
                                  "declared"])
def test_cge_equals_per_coordinate_loop_fp64(kind):
    model, x, y = _model(kind)
    ref = _naive_cge(model, CE, x, y, 1e-4)  # (moves BatchNorm running statistics: snapshot after it)
    state = copy.deepcopy(model.state_dict())
    got = cge(model, CE, (x, y), mu=1e-4, chunk=4)  # several chunks per parameter
    assert set(got) == {n for n, _ in model.named_parameters()}
    for n, r in ref.items():
        assert got[n].shape == r.shape and got[n].dtype == F64
        torch.testing.assert_close(got[n], r, rtol=0, atol=1e-9, msg=lambda m, n=n: f"{kind} {n}: {m}")
    for k, v in model.state_dict().items():  # parameters restored exactly, running stats untouched
        assert torch.equal(v, state[k]), k


def test_cge_conv_window_gather_path_matches_loop(monkeypatch):
    """Large inputs gather the shifted windows from the padded input instead of unfolding all patches."""
    from pyunlearn.zo import _reuse

    monkeypatch.setattr(_reuse, "CHUNK_BYTES", 64)
    model, x, y = _model("cnn_eval_bn")
    ref = _naive_cge(model, CE, x, y, 1e-4, {"0.weight": torch.arange(36)})
    got = cge(model, CE, (x, y), coords={"0.weight": torch.arange(36)}, mu=1e-4, chunk=5)
    torch.testing.assert_close(got["0.weight"], ref["0.weight"], rtol=0, atol=1e-9)


def test_cge_default_chunk_and_mse_loss_match_loop():
    model, x, _ = _model("cnn")
    t = torch.randn(x.shape[0], 3, dtype=F64)
    ref = _naive_cge(model, nn.MSELoss(), x, t, 1e-4)
    got = cge(model, nn.MSELoss(), (x, t), mu=1e-4)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=0, atol=1e-9)


@pytest.mark.parametrize("loss", ["ce_ignore", "mse", "custom"])
def test_cge_row_sparse_losses_match_loop(loss, monkeypatch):
    """Cross-entropy with ignored targets, MSE (reduced per changed row) and a loss we cannot split by rows."""
    from pyunlearn.zo import _reuse

    calls = []
    rows_forward = _reuse._rows_forward
    monkeypatch.setattr(_reuse, "_rows_forward", lambda mods, h: calls.append(h.shape[0]) or rows_forward(mods, h))
    model, x, y = _model("relu_mlp")
    if loss == "ce_ignore":
        fn, y = nn.CrossEntropyLoss(ignore_index=1), y.clone()
        y[:2] = 1
    elif loss == "mse":
        fn, y = nn.MSELoss(), torch.randn(x.shape[0], 3, dtype=F64)
    else:
        def fn(out, t):
            return torch.logsumexp(out, 1).square().mean() + 0.1 * out[:, 0].max()
    ref = _naive_cge(model, fn, x, y, 1e-4)
    got = cge(model, fn, (x, y), mu=1e-4, chunk=7)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=0, atol=1e-9, msg=lambda m, n=n: f"{n}: {m}")
    if loss == "custom":
        assert not calls
    else:  # the row path ran, and skipped rows (zero inputs / inactive ReLUs): fewer than 8 copies x 9 rows
        assert calls and min(calls[1:]) < 7 * 9


def test_declared_blocks_that_do_not_reproduce_forward_raise():
    model, x, y = _model("declared")
    wrong = Declared(wrong=True).to(F64)
    wrong.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="zo_blocks"):
        cge(wrong, CE, (x, y), mu=1e-4)


def test_sparse_coords_zero_elsewhere():
    model, x, y = _model("cnn")
    coords = {"0.weight": torch.tensor([0, 7, 7, 53]), "4.bias": torch.tensor([2]), "7.weight": torch.tensor([])
              .long()}
    ref = _naive_cge(model, CE, x, y, 1e-4, coords)
    got = cge(model, CE, (x, y), coords=coords, mu=1e-4)
    for n, p in model.named_parameters():
        mask = torch.zeros(p.numel(), dtype=torch.bool)
        if n in coords:
            mask[coords[n]] = True
        assert torch.equal(got[n].view(-1)[~mask], torch.zeros(int((~mask).sum()), dtype=F64)), n
        torch.testing.assert_close(got[n], ref[n], rtol=0, atol=1e-9)
    assert got["0.weight"].view(-1)[53] != 0


@pytest.mark.parametrize("kind", ["mlp", "relu_mlp", "cnn"])
def test_cge_fp32_agrees_with_autograd(kind):
    """Spec A5.2's acceptance test: forward differences at mu = 5e-3 in fp32 (clean loss in the same batch,
    losses reduced in fp64) point where the true gradient points."""
    model, x, y = _model(kind, torch.float32)
    if kind == "cnn":
        x, y = torch.randn(32, 2, 8, 8), torch.randint(0, 3, (32,))
    model.zero_grad()
    CE(model(x), y).backward()
    est = cge(model, CE, (x, y), mu=5e-3)
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
    e = torch.cat([est[n].reshape(-1) for n, _ in model.named_parameters()]).double()
    assert torch.nn.functional.cosine_similarity(g, e, dim=0) > 0.99


def _explicit_rge(model, x, y, q, mu, seed, central, dist):
    """(1/q) sum_k c_k z_k with the directions materialised by zo_directions."""
    ps = [p for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in ps])
    d = flat.numel()

    def f(v):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(v, ps)
            return CE(model(x), y).double()

    g, l0 = torch.zeros(d, dtype=F64), f(flat)
    for k in range(q):
        z = zo_directions(d, seed=seed, direction=k, dist=dist, dtype=F64)
        c = (f(flat + mu * z) - f(flat - mu * z)) / (2 * mu) if central else (f(flat + mu * z) - l0) / mu
        g += c * z / q
    f(flat)
    return g


@pytest.mark.parametrize("kind", ["mlp", "cnn", "cnn_eval_bn"])
@pytest.mark.parametrize("central,dist", [(False, "gaussian"), (True, "gaussian"), (False, "rademacher")])
def test_rge_equals_formula_batched_and_sequential(kind, central, dist):
    model, x, y = _model(kind)
    ref = _explicit_rge(model, x, y, 5, 1e-3, 7, central, dist)
    state = copy.deepcopy(model.state_dict())
    for batched in (False, 2, None):
        got = rge(model, CE, (x, y), q=5, mu=1e-3, seed=7, central=central, dist=dist, batched=batched)
        flat = torch.cat([got[n].reshape(-1) for n, _ in model.named_parameters()])
        torch.testing.assert_close(flat, ref, rtol=0, atol=1e-10, msg=lambda m, b=batched: f"batched={b}: {m}")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=1e-15)


def test_rge_batched_equals_sequential_fp32_cnn():
    model, x, y = _model("cnn", torch.float32)
    a = rge(model, CE, (x, y), q=6, mu=1e-2, seed=3, batched=False)
    b = rge(model, CE, (x, y), q=6, mu=1e-2, seed=3, batched=4)
    for n in a:
        # the coefficients differ by fp32 rounding of the losses (~1e-7 / mu): compare against the estimate's size
        torch.testing.assert_close(b[n], a[n], rtol=0, atol=1e-3 * max(1.0, a[n].abs().max().item()))


def test_rge_params_subset_offsets():
    model, x, y = _model("mlp")
    sub = {"2.weight": model[2].weight, "5.bias": model[5].bias}
    assert param_offsets(sub) == {"2.weight": 0, "5.bias": 30}
    got = rge(model, CE, (x, y), q=3, mu=1e-3, seed=1, params=sub, batched=False)
    got_b = rge(model, CE, (x, y), q=3, mu=1e-3, seed=1, params=sub, batched=True)
    assert set(got) == set(sub)
    for n in got:
        torch.testing.assert_close(got_b[n], got[n], rtol=0, atol=1e-10)


class Quadratic(nn.Module):
    def __init__(self, a, b, theta):
        super().__init__()
        self.a, self.b, self.theta = a, b, nn.Parameter(theta.clone())

    def forward(self, x):
        return 0.5 * self.theta @ self.a @ self.theta + self.b @ self.theta


@pytest.mark.parametrize("central", [False, True])
def test_rge_unbiased_on_quadratic(central):
    """For f = 1/2 th'A th + b'th and Gaussian z, E[g] = A th + b exactly (forward differences too: the mu term
    z'Az z has zero mean). Per coordinate Var[c z_i] = |g|^2 + g_i^2 + O(mu^2), so the q-sample mean lies within
    4.5 standard errors of g_i (fixed seed: deterministic)."""
    g = torch.Generator().manual_seed(0)
    d, q, mu = 6, 4000, 1e-3
    m = torch.randn(d, d, generator=g, dtype=F64)
    a = m @ m.t() / d + torch.eye(d, dtype=F64)
    b, theta = torch.randn(d, generator=g, dtype=F64), torch.randn(d, generator=g, dtype=F64)
    model = Quadratic(a, b, theta)
    est = rge(model, lambda out, y: out, (torch.zeros(1), torch.zeros(1)), q=q, mu=mu, seed=11,
              central=central)["theta"]
    true = a @ theta + b
    se = torch.sqrt((true.square().sum() + true.square()) / q)
    assert ((est - true).abs() < 4.5 * se).all(), ((est - true) / se)
    assert ((est - true).abs() / se).mean() < 1.5  # and not trivially far inside: typical errors ~0.8 se


@pytest.mark.parametrize("central", [False, True])
def test_spsa_projections_restore_bound_and_subset(central):
    torch.manual_seed(0)
    ps = [torch.randn(50, 3), torch.randn(7)]
    orig = [p.clone() for p in ps]
    calls = []

    def closure():
        calls.append(1)
        return sum((p.double() ** 2).sum() for p in ps)

    mu = 1e-2
    loss0, coeffs = spsa_projections(closure, ps, q=4, mu=mu, seed=5, central=central)
    assert len(calls) == (9 if central else 5) and coeffs.shape == (4,) and coeffs.dtype == F64
    assert loss0 == sum((p.double() ** 2).sum() for p in orig)
    eps = torch.finfo(torch.float32).eps
    # each query is undone within the docstring's bound; over 4 queries the errors add up at most 4 times
    z = torch.stack([zo_directions(157, seed=5, direction=k) for k in range(4)]).abs().max(0).values
    zs = [z[:150].view(50, 3), z[150:]]
    for p, o, zz in zip(ps, orig, zs):
        bound = (3 * eps * (o.abs() + 2 * mu * zz) if central else 2 * eps * (o.abs() + mu * zz)) * 4
        assert ((p - o).abs() <= bound).all()
    # the projected gradient of sum p^2 along z is 2 p.z (+ mu |z|^2 for forward differences)
    flat = torch.cat([o.reshape(-1) for o in orig]).double()
    for k in range(4):
        zk = zo_directions(157, seed=5, direction=k, dtype=F64)
        expect = 2 * flat @ zk + (0.0 if central else mu * zk @ zk)
        assert abs(coeffs[k].item() - expect.item()) < 1e-3 * abs(expect.item()) + 1e-3
    for p, o in zip(ps, orig):  # a subset of directions regenerates the same z: same coefficients (up to the
        p.copy_(o)               # restore drift of the earlier queries of the full run, ~eps |theta| / mu)
    _, sub = spsa_projections(closure, ps, q=4, mu=mu, seed=5, central=central, directions=range(2, 4))
    torch.testing.assert_close(sub, coeffs[2:], rtol=1e-3, atol=0)


def test_spsa_restores_when_closure_raises():
    p = torch.randn(10)
    orig = p.clone()
    n = {"calls": 0}

    def closure():
        n["calls"] += 1
        if n["calls"] == 2:
            raise RuntimeError("boom")
        return p.sum()

    with pytest.raises(RuntimeError, match="boom"):
        spsa_projections(closure, [p], q=3, mu=0.1, seed=0)
    assert (p - orig).abs().max() < 1e-6


def test_bad_input():
    model, x, y = _model("mlp")
    with pytest.raises(ValueError, match="mu"):
        cge(model, CE, (x, y), mu=0.0)
    with pytest.raises(ValueError, match="mu"):
        rge(model, CE, (x, y), q=2, mu=-1.0, seed=0)
    with pytest.raises(ValueError, match="q must be >= 1"):
        rge(model, CE, (x, y), q=0, mu=1e-3, seed=0)
    with pytest.raises(ValueError, match="q must be >= 1"):
        spsa_projections(lambda: x.sum(), [x], q=0, mu=1e-3, seed=0)
    with pytest.raises(ValueError, match="unknown parameter 'nope'"):
        cge(model, CE, (x, y), coords={"nope": torch.tensor([0])}, mu=1e-3)
    with pytest.raises(IndexError, match=r"coords\['0.bias'\].*\[0, 6\)"):
        cge(model, CE, (x, y), coords={"0.bias": torch.tensor([6])}, mu=1e-3)
    with pytest.raises(IndexError, match=r"coords\['0.bias'\]"):
        cge(model, CE, (x, y), coords={"0.bias": torch.tensor([-1])}, mu=1e-3)
    with pytest.raises(ValueError, match="must be 1-D"):
        cge(model, CE, (x, y), coords={"0.bias": torch.tensor([[0]])}, mu=1e-3)
    with pytest.raises(TypeError, match="int64/int32"):
        cge(model, CE, (x, y), coords={"0.bias": torch.tensor([0.0])}, mu=1e-3)
    with pytest.raises(ValueError, match="not a parameter of the model"):
        rge(model, CE, (x, y), q=1, mu=1e-3, seed=0, params={"w": torch.zeros(3, dtype=F64)})
    with pytest.raises(ValueError, match="dist"):
        rge(model, CE, (x, y), q=1, mu=1e-3, seed=0, dist="uniform")
    with pytest.raises(ValueError, match="cannot run the batched forward"):
        gm, gx, gy = _model("generic")
        rge(gm, CE, (gx, gy), q=1, mu=1e-3, seed=0, batched=True)
    with pytest.raises(ValueError, match="chunk"):
        cge(model, CE, (x, y), mu=1e-3, chunk=0)


def test_default_rge_chunk_bounds_direction_memory(monkeypatch):
    from pyunlearn.zo import _batched

    named = [("w", torch.zeros(1000))]  # 4000 bytes per direction
    assert _batched.default_chunk(100, named) == 32 and _batched.default_chunk(5, named) == 5
    monkeypatch.setattr(_batched, "DIRECTION_BYTES", 4000 * 9)
    assert _batched.default_chunk(100, named) == 8  # (Q+1) rows of directions fit the budget
    monkeypatch.setattr(_batched, "DIRECTION_BYTES", 100)
    assert _batched.default_chunk(100, named) == 1


def test_bench_quick():
    from pyunlearn.bench.zo import main

    report = main(["--quick", "--quiet"])
    assert report.rows and all(math.isfinite(r.ms) for r in report.rows)
