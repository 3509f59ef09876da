"""IU (influence unlearning), FF (Fisher forgetting) and pruning (OMP / IMP / SynFlow) on tiny models.

Oracles are written out here independently of the implementation: a dense inverse Fisher for IU "woodfisher",
the spec §3.5 recursion line by line for IU "repo", the repo's class-by-class backward loop for the FF Fisher.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset, TensorDataset

from pyunlearn.unlearn import _common, fisher, influence, prune

K = 3


class TinyCNN(nn.Module):
    def __init__(self, k: int = K, c1: int = 4, c2: int = 6):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.fc = nn.Linear(c2, k)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


class TinyMLP(nn.Module):
    def __init__(self, d: int = 8, h: int = 6, k: int = K):
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.bn = nn.BatchNorm1d(h)
        self.fc2 = nn.Linear(h, k)

    def forward(self, x):
        return self.fc2(torch.tanh(self.bn(self.fc1(x.flatten(1)))))


def _data(n: int, shape=(1, 6, 6), k: int = K, seed: int = 0, dtype=torch.float32) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    centers = torch.randn(k, *shape, generator=g)
    x = centers[y] + 0.8 * torch.randn(n, *shape, generator=g)
    return TensorDataset(x.to(dtype), y)


def _warm_bn(model: nn.Module, ds: TensorDataset) -> nn.Module:
    """Non-trivial BN running statistics (one train-mode forward), then eval mode."""
    model.train()
    with torch.no_grad():
        model(ds.tensors[0])
    return model.eval()


def _train(model: nn.Module, ds: TensorDataset, steps: int = 150, lr: float = 0.1) -> nn.Module:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    x, y = ds.tensors
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _run(model, forget, retain, method, seed=0, **cfg):
    return _common.unlearn(model, forget, retain, method, num_classes=K, seed=seed, progress=False, **cfg)


def _sample_grad(model, x, y) -> torch.Tensor:
    """One sample's CE gradient by plain autograd (batch of 1, eval mode), flattened in parameter order."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x.unsqueeze(0)), y.view(1))
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def _v(model, forget, retain) -> torch.Tensor:
    gf = sum(_sample_grad(model, x, y) for x, y in forget)
    gr = sum(_sample_grad(model, x, y) for x, y in retain)
    nf, nr = len(forget), len(retain)
    return (nf / (nf + nr)) * (gf / nf - gr / nr)


def _delta(before: dict, model) -> torch.Tensor:
    return torch.cat([(p.detach() - before[n]).reshape(-1) for n, p in model.named_parameters()])


# -- IU --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damping", [1.0, 0.05])
def test_iu_woodfisher_equals_dense_inverse_fisher(damping):
    ds = _data(30, dtype=torch.float64)
    model = _warm_bn(TinyCNN().double(), ds)
    forget, retain = Subset(ds, range(6)), Subset(ds, range(6, 30))
    v = _v(model, forget, retain)
    G = torch.stack([_sample_grad(model, x, y) for x, y in retain])  # all 24 retain samples: N >= n_r
    fisher_dense = damping * torch.eye(G.shape[1], dtype=torch.float64) + G.T @ G / G.shape[0]
    expected = 3.0 * torch.linalg.solve(fisher_dense, v)
    out, rec = _run(model, forget, retain, "iu", alpha=3.0, damping=damping, num_samples=100, chunk_size=7)
    torch.testing.assert_close(_delta(_params(model), out), expected, rtol=1e-9, atol=1e-12)
    assert rec.extra["fisher_samples"] == 24 and rec.config["mode"] == "woodfisher"


def test_iu_woodfisher_subset_is_a_seeded_random_draw():
    ds = _data(40, dtype=torch.float64)
    model = _warm_bn(TinyCNN().double(), ds)
    forget, retain = Subset(ds, range(5)), Subset(ds, range(5, 40))
    idx = torch.randperm(35, generator=torch.Generator().manual_seed(7))[:10].sort().values
    G = torch.stack([_sample_grad(model, *retain[int(i)]) for i in idx])
    fisher_dense = torch.eye(G.shape[1], dtype=torch.float64) + G.T @ G / 10
    expected = 10.0 * torch.linalg.solve(fisher_dense, _v(model, forget, retain))
    out, _ = _run(model, forget, retain, "iu", seed=7, num_samples=10, alpha=10.0)
    torch.testing.assert_close(_delta(_params(model), out), expected, rtol=1e-9, atol=1e-12)
    again, _ = _run(model, forget, retain, "iu", seed=7, num_samples=10, alpha=10.0)
    assert all(torch.equal(a, b) for a, b in zip(out.parameters(), again.parameters()))


@pytest.mark.parametrize("N", [5, 40])
def test_iu_repo_mode_matches_the_spec_recursion(N):
    ds = _data(30, dtype=torch.float64)
    model = _warm_bn(TinyCNN().double(), ds)
    forget, retain = Subset(ds, range(4)), Subset(ds, range(4, 30))
    # spec §3.5, literally: k <- v; o <- g(r_1); for t in 2..N+2: tau = o.g; k -= (k.g)/(N+tau) o; o *= N/(N+tau)
    k = _v(model, forget, retain)
    o = _sample_grad(model, *retain[0])
    for t in range(2, N + 3):
        if t > len(retain):
            break
        g = _sample_grad(model, *retain[t - 1])
        tau = o @ g
        k = k - (k @ g) / (N + tau) * o
        o = o * N / (N + tau)
    out, rec = _run(model, forget, retain, "iu", mode="repo", num_samples=N, alpha=2.0)
    torch.testing.assert_close(_delta(_params(model), out), 2.0 * k, rtol=1e-9, atol=1e-12)
    assert rec.extra["fisher_samples"] == min(N + 2, 26)


def test_iu_forget_like_retain_barely_moves_classwise_moves_more():
    torch.manual_seed(0)
    ds = _data(240, shape=(8,))
    model = _train(_warm_bn(TinyMLP(), ds), ds)
    before = _params(model)
    x = ds.tensors[0]
    pred = model(x).argmax(1)
    # forget = a copy of retain samples: v = 0 exactly (up to rounding), the model does not move
    retain = Subset(ds, range(0, 240, 2))
    twin, _ = _run(model, Subset(ds, range(0, 240, 2)), retain, "iu")
    assert _delta(before, twin).abs().max() < 1e-5
    # a random 10 % (same distribution as retain) vs one whole class
    perm = torch.randperm(240, generator=torch.Generator().manual_seed(1))
    rnd, _ = _run(model, Subset(ds, perm[:24].tolist()), Subset(ds, perm[24:].tolist()), "iu")
    y = ds.tensors[1]
    cls, _ = _run(model, Subset(ds, (y == 0).nonzero().flatten().tolist()),
                  Subset(ds, (y != 0).nonzero().flatten().tolist()), "iu")
    with torch.no_grad():
        agree = (rnd(x).argmax(1) == pred).float().mean().item()
    assert agree >= 0.95
    assert _delta(before, rnd).norm() < 0.5 * _delta(before, cls).norm()


def test_iu_moves_only_trainable_parameters_and_restores_mode():
    ds = _data(20)
    model = _warm_bn(TinyCNN(), ds).train()
    model.conv1.weight.requires_grad_(False)
    before = _params(model)
    out, _ = _run(model, Subset(ds, range(3)), Subset(ds, range(3, 20)), "iu")
    assert torch.equal(out.conv1.weight, before["conv1.weight"])
    assert not torch.equal(out.fc.weight, before["fc.weight"])
    assert out.training


@pytest.mark.parametrize("cfg, err", [({"mode": "exact"}, ValueError), ({"damping": 0.0}, ValueError),
                                      ({"num_samples": 0}, ValueError), ({"alpha": float("nan")}, ValueError),
                                      ({"lr": 0.1}, TypeError)])
def test_iu_bad_config(cfg, err):
    ds = _data(10)
    with pytest.raises(err):
        _run(_warm_bn(TinyCNN(), ds), Subset(ds, range(2)), Subset(ds, range(2, 10)), "iu", **cfg)


# -- FF --------------------------------------------------------------------------------------------------------------
def test_ff_fisher_matches_the_repo_loop():
    ds = _data(40, dtype=torch.float64)
    model = _warm_bn(TinyCNN().double(), ds)
    params = list(model.parameters())
    # the repo's `hessian`: batches of 32 (dataset order), every class as the label of the whole batch
    acc = [torch.zeros_like(p) for p in params]
    batches = [ds.tensors[0][i:i + 32] for i in range(0, 40, 32)]
    for xb in batches:
        out = model(xb)
        prob = out.softmax(-1).detach()
        for y in range(K):
            g = torch.autograd.grad(F.cross_entropy(out, torch.full((len(xb),), y)), params, retain_graph=True)
            for a, gi in zip(acc, g):
                a += prob[:, y].mean() * gi.pow(2)
    acc = [a / len(batches) for a in acc]
    ctx = _common.Context(num_classes=K, progress=False)
    names = [n for n, _ in model.named_parameters()]
    got, nb = fisher.fisher_diagonal(model, names, params, influence.Batches(ds, 32, params[0], ctx, False, ""),
                                     K, class_chunk=2)
    assert nb == 2
    for a, b in zip(got, acc):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_ff_mean_var_clamps_on_a_constructed_fisher():
    alpha = 1e-3
    # 1-D, not head: 1/(0+1e-8) -> clamp 1e3; 1/(4) = 0.25; times alpha, times 10
    p1 = torch.ones(3, dtype=torch.float64)
    mu, var = fisher.mean_var(p1, torch.tensor([0.0, 4.0, 1e-6], dtype=torch.float64), alpha, False, None)
    torch.testing.assert_close(var, torch.tensor([1e3, 0.25, 1e3], dtype=torch.float64) * alpha * 10)
    assert torch.equal(mu, p1)
    # 2-D head [K, 2]: clamp at 1e2, mean over dim 1, x10; class 1 -> mu 0, var 1e-4 * 10
    ph = torch.arange(6, dtype=torch.float64).view(3, 2) + 1
    fh = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.5, 0.25]], dtype=torch.float64)
    mu, var = fisher.mean_var(ph, fh, alpha, True, 1)
    inv = torch.tensor([[1e2, 1.0], [1e2, 1e2], [2.0, 4.0]], dtype=torch.float64)
    row = (alpha * inv).mean(1, keepdim=True).expand(3, 2) * 10
    torch.testing.assert_close(var[[0, 2]], row[[0, 2]], rtol=1e-6, atol=0)  # 1e-8 in 1/(F+1e-8)
    torch.testing.assert_close(var[1], torch.full((2,), 1e-3, dtype=torch.float64))
    assert torch.equal(mu[1], torch.zeros(2, dtype=torch.float64)) and torch.equal(mu[[0, 2]], ph[[0, 2]])
    # conv [2, 3, 1, 1], not head: clamp 1e3, mean over the input-channel axis, no x10
    pc = torch.zeros(2, 3, 1, 1, dtype=torch.float64)
    fc = torch.tensor([0.0, 1.0, 0.5, 2.0, 2.0, 2.0], dtype=torch.float64).view(2, 3, 1, 1)
    _, var = fisher.mean_var(pc, fc, alpha, False, None)
    want = alpha * torch.tensor([(1e3 + 1 + 2) / 3, 0.5], dtype=torch.float64)
    torch.testing.assert_close(var[:, :, 0, 0], want.view(2, 1).expand(2, 3), rtol=1e-6, atol=0)
    assert var.max() <= alpha * 1e3 * 10


def test_ff_is_seeded():
    ds = _data(40)
    model = _warm_bn(TinyCNN(), ds)
    f, r = Subset(ds, range(4)), Subset(ds, range(4, 40))
    a, _ = _run(model, f, r, "ff", seed=3, alpha=1e-6)
    b, _ = _run(model, f, r, "ff", seed=3, alpha=1e-6)
    c, _ = _run(model, f, r, "ff", seed=4, alpha=1e-6)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert not torch.equal(a.conv1.weight, model.conv1.weight)


def test_ff_classwise_zeroes_the_forgotten_fc_row():
    ds = _data(60)
    model = _warm_bn(TinyCNN(), ds)
    y = ds.tensors[1]
    f = Subset(ds, (y == 1).nonzero().flatten().tolist())
    r = Subset(ds, (y != 1).nonzero().flatten().tolist())
    before = _params(model)
    # alpha = 0: every variance is 0 except the forgotten row's 1e-4 * 10 -> only that row moves, to N(0, 1e-3)
    out, rec = _run(model, f, r, "ff", alpha=0.0)
    assert rec.extra["forget_class"] == 1 and rec.extra["head"] == ["fc.bias", "fc.weight"]
    for n, p in out.named_parameters():
        if n.startswith("fc"):
            assert torch.equal(p[[0, 2]], before[n][[0, 2]])
        else:
            assert torch.equal(p, before[n]), n
    row = torch.cat([out.fc.weight[1], out.fc.bias[1:2]])
    gen = torch.Generator().manual_seed(0)
    eps = {n: torch.randn(p.shape, generator=gen) for n, p in model.named_parameters()}
    expected = math.sqrt(1e-3) * torch.cat([eps["fc.weight"][1], eps["fc.bias"][1:2]])
    torch.testing.assert_close(row, expected)
    # random forgetting: no class-wise treatment; classwise=True then refuses
    out, rec = _run(model, Subset(ds, range(5)), Subset(ds, range(5, 60)), "ff", alpha=0.0)
    assert rec.extra["forget_class"] is None
    assert all(torch.equal(p, before[n]) for n, p in out.named_parameters())
    with pytest.raises(ValueError, match="classwise"):
        _run(model, Subset(ds, range(5)), Subset(ds, range(5, 60)), "ff", classwise=True)


def test_ff_head_rule_first_dim_catches_k_channel_layers():
    ds = _data(20)
    model = _warm_bn(TinyCNN(c1=K), ds)  # conv1 / bn1 have K channels: the repo's literal rule treats them as fc
    named = list(model.named_parameters())
    assert fisher.head_names(model, named, K, "first_dim") >= {"conv1.weight", "bn1.weight", "fc.weight"}
    assert fisher.head_names(model, named, K, "last_linear") == {"fc.weight", "fc.bias"}
    with pytest.raises(ValueError, match="first_dim"):
        fisher.head_names(nn.Sequential(nn.Conv2d(1, K, 1)), [], K, "last_linear")


# -- pruning ---------------------------------------------------------------------------------------------------------
def _conv_weights(model):
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_omp_global_exact_rate_and_magnitude_order():
    model = TinyCNN()
    ref = copy.deepcopy(model)
    masks = prune.omp(model, 0.7)
    total = sum(w.numel() for w in _conv_weights(model))
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert set(masks) == {"conv1.weight", "conv2.weight"}
    assert pruned == round(0.7 * total) and prune.sparsity(model) == pruned / total
    assert prune.sparsity(model, layers="conv") == pruned / total  # stored weights are 0 where masked
    kept = torch.cat([w[m].abs() for w, m in zip(_conv_weights(model), masks.values())])
    assert torch.equal(model.fc.weight, ref.fc.weight) and "fc.weight" not in prune.get_masks(model)
    gone = torch.cat([w[~m].abs() for w, m in zip(_conv_weights(ref), masks.values())])
    assert kept.min() >= gone.max()


def test_omp_per_layer_vs_global():
    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():
        model.conv1.weight.add_(10)  # conv1 dominates in magnitude: global pruning spares it
    g = prune.omp(copy.deepcopy(model), 0.5)
    layer = prune.omp(copy.deepcopy(model), 0.5, scope="layer")
    for name, m in layer.items():
        assert int((~m).sum()) == round(0.5 * m.numel()), name
    assert int((~g["conv1.weight"]).sum()) == 0
    assert sum(int((~m).sum()) for m in g.values()) == round(0.5 * sum(m.numel() for m in g.values()))


def test_omp_layers_and_cumulative_rate():
    model = TinyCNN()
    masks = prune.omp(model, 0.5, layers="conv+linear")
    assert set(masks) == {"conv1.weight", "conv2.weight", "fc.weight"}
    masks2 = prune.omp(model, 0.8, layers="conv+linear")  # prunes further, never regrows
    assert all(bool((m2 <= m1).all()) for m1, m2 in zip(masks.values(), masks2.values()))
    with pytest.raises(ValueError, match="regrow"):
        prune.omp(model, 0.3, layers="conv+linear")


def test_masks_survive_deepcopy_state_dict_pickle_and_reinit():
    ds = _data(16)
    model = TinyCNN()
    masks = prune.omp(model, 0.6)
    twin = copy.deepcopy(model)
    assert isinstance(twin.conv1, prune.MaskedConv2d) and isinstance(twin.conv1, nn.Conv2d)
    assert all(torch.equal(a, b) for a, b in zip(prune.get_masks(twin).values(), masks.values()))
    sd = model.state_dict()
    assert "conv1.weight_mask" in sd and "conv1.weight" in sd
    fresh = TinyCNN()
    with pytest.raises(RuntimeError):  # a sparse checkpoint needs the masks first (spec §3.8 pitfall iv)
        fresh.load_state_dict(sd)
    prune.apply_masks(fresh, prune.masks_from_state_dict(sd))
    fresh.load_state_dict(sd)
    x = ds.tensors[0]
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x))
    with pytest.raises(RuntimeError):  # and a dense checkpoint does not load into a sparse model silently
        fresh.load_state_dict(TinyCNN().state_dict())
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert torch.equal(loaded.conv2.weight_mask, masks["conv2.weight"])
    # re-initialisation writes the real parameter; applying the masks again gives the sparse model back
    model.conv1.reset_parameters()
    model.conv2.reset_parameters()
    assert prune.sparsity(model, layers="conv") == 0.0
    prune.apply_masks(model, masks)
    assert prune.sparsity(model, layers="conv") == prune.sparsity(model) == pytest.approx(0.6, abs=1e-2)
    prune.remove_masks(model)
    assert type(model.conv1) is nn.Conv2d and prune.get_masks(model) is None
    assert "conv1.weight_mask" not in model.state_dict()


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True),
    lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3),
    lambda ps: torch.optim.AdamW(ps, lr=1e-2),
    lambda ps: __import__("pyunlearn.optim", fromlist=["MaskedSGD"]).MaskedSGD(ps, lr=0.1, momentum=0.9,
                                                                               weight_decay=5e-4),
], ids=["sgd", "adam", "adamw", "masked_sgd"])
def test_optimizers_keep_pruned_weights_zero(make_opt):
    ds = _data(32)
    model = TinyCNN()
    masks = prune.omp(model, 0.5)
    opt = make_opt(model.parameters())
    x, y = ds.tensors
    for _ in range(4):
        opt.zero_grad()
        (F.cross_entropy(model.train()(x), y) + 1e-3 * sum(p.abs().sum() for p in model.parameters())).backward()
        opt.step()
    for w, m in zip(_conv_weights(model), masks.values()):
        assert torch.equal(w[~m], torch.zeros_like(w[~m]))
        assert bool((w[m] != 0).all())


def test_synflow_rate_layers_and_restored_weights():
    model = _warm_bn(TinyCNN(c1=8, c2=8), _data(16))
    before = copy.deepcopy(model.state_dict())
    masks = prune.synflow(model, 0.9, (1, 6, 6))
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.9 * total)
    assert all(int(m.sum()) > 0 for m in masks.values())  # no layer cut off at a moderate rate
    for k, v in model.state_dict().items():
        if k.endswith("weight_mask"):
            continue
        if k in ("conv1.weight", "conv2.weight"):
            m = masks[k]
            assert torch.equal(v[m], before[k][m]) and bool((v[~m] == 0).all())
        else:
            assert torch.equal(v, before[k]), k
    assert not model.training


def test_synflow_avoids_the_layer_collapse_of_magnitude_pruning():
    torch.manual_seed(0)
    model = TinyCNN(c1=16, c2=16)  # conv2 (fan-in 144) starts with smaller weights than conv1 (fan-in 9)
    omp_masks = prune.omp(copy.deepcopy(model), 0.98)
    assert int(omp_masks["conv2.weight"].sum()) == 0  # global magnitude pruning cuts conv2 off entirely
    masks = prune.synflow(model, 0.98, (1, 6, 6))
    assert all(int(m.sum()) > 0 for m in masks.values())


def test_imp_sparsity_and_rewind():
    ds = _data(32)
    model = TinyCNN()
    x, y = ds.tensors
    calls = []

    def train_fn(m):
        calls.append(prune.sparsity(m))
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(m.train()(x), y).backward()
            opt.step()

    rewind = {k: v.clone() for k, v in model.state_dict().items()}
    masks = prune.imp(train_fn, model, 0.2, 3)
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round(total * 0.8 ** 3)
    assert prune.sparsity(model) == pytest.approx(1 - 0.8 ** 3, abs=1 / total)
    assert calls[0] == 0.0 and calls[1] == pytest.approx(0.2, abs=1 / total) and len(calls) == 3
    for k, v in model.state_dict().items():  # rewound to the entry state, under the mask (BN stats too)
        if k.endswith("weight_mask"):
            continue
        want = rewind[k] * masks[k] if k in masks else rewind[k]
        assert torch.equal(v, want), k


def test_sparse_original_schedules():
    def run(method, **kw):
        model, log = TinyCNN(), []

        def train_fn(m, start, stop):
            log.append((start, stop, round(prune.sparsity(m), 2)))
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.01)

        prune.sparse_original(model, train_fn, epochs=10, method=method, **kw)
        return model, log

    model, log = run("omp", rate=0.5, rewind_epoch=2)
    assert log == [(0, 2, 0.0), (2, 10, 0.0), (2, 10, 0.5)]
    model, log = run("omp", rate=0.5, rewind_epoch=0)
    assert log == [(0, 10, 0.0), (0, 10, 0.5)]
    model, log = run("imp", rounds=2, rewind_epoch=1)
    assert log == [(0, 1, 0.0), (1, 10, 0.0), (1, 10, 0.2), (1, 10, 0.36)]
    model, log = run("imp", rate=0.5, rewind_epoch=1)  # fewest rounds reaching 0.5: 4 (1 - 0.8^4 = 0.59)
    assert len(log) == 6 and prune.sparsity(model) == pytest.approx(1 - 0.8 ** 4, abs=1e-2)
    model, log = run("synflow", rate=0.5, input_shape=(1, 6, 6), synflow_rounds=5)
    assert log == [(0, 10, 0.5)]
    with pytest.raises(ValueError, match="input_shape"):
        run("synflow")
    with pytest.raises(ValueError, match="rewind_epoch"):
        run("omp", rewind_epoch=10)
    with pytest.raises(ValueError, match="method"):
        run("snip")


@pytest.mark.parametrize("call, err, match", [
    (lambda m: prune.omp(m, 1.0), ValueError, "rate"),
    (lambda m: prune.omp(m, -0.1), ValueError, "rate"),
    (lambda m: prune.omp(m, "0.5"), TypeError, "rate"),
    (lambda m: prune.omp(m, True), TypeError, "rate"),
    (lambda m: prune.omp(m, 0.5, layers="fc"), ValueError, "layers"),
    (lambda m: prune.omp(m, 0.5, scope="block"), ValueError, "scope"),
    (lambda m: prune.synflow(m, 0.5, (0, 6)), ValueError, "input_shape"),
    (lambda m: prune.synflow(m, 0.5, (1, 6, 6), rounds=0), ValueError, "rounds"),
    (lambda m: prune.imp(lambda _: None, m, 0.2, rounds=0), ValueError, "rounds"),
    (lambda m: prune.imp(lambda _: None, m, 1.2), ValueError, "rate_per_round"),
    (lambda m: prune.apply_masks(m, {"conv1.weight": torch.ones(3, 3, dtype=torch.bool)}), ValueError, "shape"),
    (lambda m: prune.apply_masks(m, {"conv9.weight": torch.ones(1)}), ValueError, "conv9"),
    (lambda m: prune.apply_masks(m, {"conv1.bias": torch.ones(4)}), ValueError, "weight"),
    (lambda m: prune.apply_masks(m, {"bn1.weight": torch.ones(4)}), TypeError, "Conv2d or Linear"),
    (lambda m: prune.apply_masks(m, {"conv1.weight": torch.full((4, 1, 3, 3), 0.5)}), ValueError, "bool"),
    (lambda m: prune.apply_masks(m, [torch.ones(1)]), TypeError, "dict"),
])
def test_bad_inputs(call, err, match):
    model = TinyCNN()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(err, match=match):
        call(model)
    assert prune.get_masks(model) is None  # nothing applied on failure
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_mlp_needs_conv_plus_linear():
    with pytest.raises(ValueError, match="conv\\+linear"):
        prune.omp(TinyMLP(), 0.5)
    masks = prune.omp(TinyMLP(), 0.5, layers="conv+linear")
    assert set(masks) == {"fc1.weight", "fc2.weight"}


def test_overridden_forward_cannot_be_masked():
    class Custom(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    class Plain(nn.Conv2d):
        pass

    with pytest.raises(TypeError, match="overrides"):
        prune.omp(nn.Sequential(Custom(1, 2, 3)), 0.5)
    m = nn.Sequential(Plain(1, 2, 3))
    prune.omp(m, 0.5)
    assert isinstance(m[0], Plain) and isinstance(copy.deepcopy(m)[0], prune.MaskedConv2d)
    prune.remove_masks(m)
    assert type(m[0]) is Plain


# -- composability: every method keeps the mask -------------------------------------------------------------------------
def _ft(model, forget, retain, steps=5):
    """A plain SGD loop standing in for FT (torch.optim, momentum and weight decay, no mask awareness)."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = retain.dataset.tensors[0][retain.indices], retain.dataset.tensors[1][retain.indices]
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


@pytest.mark.parametrize("method", ["iu", "iu_repo", "ff", "ft"])
def test_methods_keep_pruned_weights_at_zero(method):
    ds = _data(48)
    model = _warm_bn(TinyCNN(), ds)
    masks = prune.omp(model, 0.8)
    s = prune.sparsity(model)
    y = ds.tensors[1]
    forget = Subset(ds, (y == 2).nonzero().flatten().tolist())
    retain = Subset(ds, (y != 2).nonzero().flatten().tolist())
    if method == "ft":
        out = _ft(model, forget, retain)
    elif method == "iu_repo":
        out = _run(model, forget, retain, "iu", mode="repo", num_samples=10)[0]
    else:
        out = _run(model, forget, retain, method, alpha=1e-3 if method == "ff" else 10.0)[0]
    assert prune.sparsity(out) == s
    for (name, m), w in zip(prune.get_masks(out).items(), _conv_weights(out)):
        assert torch.equal(m, masks[name])
        assert torch.equal(w[~m], torch.zeros_like(w[~m]))
    assert any(not torch.equal(a, b) for a, b in zip(out.parameters(), model.parameters()))
