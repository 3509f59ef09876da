"""ZO optimizers (spec A3): update rules against hand computations with materialised directions, against
torch.optim.SGD / Adam fed the same estimate, memory (no state for ZO-SGD), resume, and bad input."""

from __future__ import annotations

import copy

import pytest
import torch

from pyunlearn.ops.zo import zo_directions
from pyunlearn.optim import ZOSGD, ZOAdam, ZOSGDCons, ZOSGDSign
from pyunlearn.optim.zo import decay_groups, derive_seed


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(3, 4, generator=g, dtype=torch.float64)),
            torch.nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64))]


def _linear_loss(params, a):
    """l(θ) = aᵀθ: central and forward differences are exact, c_k = aᵀz_k (up to fp64 rounding when μ is a power
    of two, which an fp32 coefficient represents exactly)."""
    return lambda: sum((p * ai).sum() for p, ai in zip(params, a))


def _expected_g(a, seed: int, q: int, dist: str = "gaussian") -> torch.Tensor:
    """g = (1/q) Σ_k (aᵀz_k) z_k with z_k materialised over the flat space."""
    flat_a = torch.cat([x.flatten() for x in a])
    zs = torch.stack([zo_directions(flat_a.numel(), seed=seed, direction=k, dist=dist, dtype=torch.float64)
                      for k in range(q)])  # [q, d]
    return (zs @ flat_a) @ zs / q


def _flat(params) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in params])


@pytest.mark.parametrize("central", [True, False])
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_zosgd_matches_hand_computation(central, dist):
    params = _params()
    a = [torch.randn_like(p) for p in params]
    theta0 = _flat(params)
    opt = ZOSGD(params, lr=0.05, q=3, mu=2.0**-10, central=central, dist=dist, seed=7)
    loss = opt.step(_linear_loss(params, a))
    g = _expected_g(a, derive_seed(7, 0), 3, dist)
    torch.testing.assert_close(_flat(params), theta0 - 0.05 * g, rtol=0, atol=1e-9)
    torch.testing.assert_close(loss, _linear_loss([theta0[:12].view(3, 4), theta0[12:]], a)())
    assert len(opt.state) == 0  # MeZO memory-optimal: no param-sized buffer kept


def test_zosgd_memory_optimal_keeps_no_state_for_any_q():
    params = _params()
    a = [torch.randn_like(p) for p in params]
    opt = ZOSGD(params, lr=0.01, q=16, mu=1e-3, weight_decay=0.1)
    for _ in range(3):
        opt.step(_linear_loss(params, a))
    assert len(opt.state) == 0
    assert not any(isinstance(v, torch.Tensor) for v in opt.state_dict()["zo"].values())


def _torch_twin(cls, zo_kwargs: dict, torch_cls, torch_kwargs: dict, steps: int = 4):
    """Run a ZO optimizer on l = aᵀθ and torch's optimizer on the hand-computed estimate; return both."""
    params, ref = _params(), _params()
    a = [torch.randn_like(p) for p in params]
    zo = cls(params, q=2, mu=2.0**-10, seed=3, **zo_kwargs)
    tt = torch_cls(ref, **torch_kwargs)
    for t in range(steps):
        zo.step(_linear_loss(params, a))
        g = _expected_g(a, derive_seed(3, t), 2)
        ref[0].grad, ref[1].grad = g[:12].view(3, 4).clone(), g[12:].clone()
        tt.step()
    return params, ref, zo


def test_zosgd_momentum_matches_torch_sgd():
    params, ref, zo = _torch_twin(ZOSGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}, torch.optim.SGD,
                                  {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01})
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.detach(), r.detach(), rtol=0, atol=1e-10)
    assert all("momentum_buffer" in zo.state[p] for p in params)  # ZO-SGD-MMT keeps 1 x params


def test_zoadam_matches_torch_adam():
    params, ref, _ = _torch_twin(ZOAdam, {"lr": 0.01, "weight_decay": 0.01}, torch.optim.Adam,
                                 {"lr": 0.01, "weight_decay": 0.01})
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.detach(), r.detach(), rtol=0, atol=1e-10)


def test_sign_uses_sign_of_scalar_projection():
    params = _params()
    a = [torch.randn_like(p) for p in params]
    theta0 = _flat(params)
    opt = ZOSGDSign(params, lr=0.05, q=1, seed=11)
    opt.step(_linear_loss(params, a))
    seed = derive_seed(11, 0)
    z = zo_directions(theta0.numel(), seed=seed, dtype=torch.float64)
    c = torch.cat([x.flatten() for x in a]) @ z
    torch.testing.assert_close(_flat(params), theta0 - 0.05 * torch.sign(c) * z, rtol=0, atol=1e-12)


def test_cons_keeps_the_best_of_three():
    # l(θ) = |θ|²: a tiny step lowers it (moves), a huge step raises both candidates (θ stays within ulps)
    params = _params()
    theta0 = _flat(params)
    closure = lambda: sum((p * p).sum() for p in params)
    big = ZOSGDCons(params, lr=1e3, q=1, seed=1)
    big.step(closure)
    torch.testing.assert_close(_flat(params), theta0, rtol=0, atol=1e-9)
    small = ZOSGDCons(params, lr=1e-3, q=1, seed=1)
    l0 = closure().item()
    for _ in range(5):
        small.step(closure)
    assert closure().item() < l0
    # with g along the gradient, θ − ηg is the candidate kept: equals the ZOSGD step exactly
    p2 = _params()
    ZOSGD(p2, lr=1e-3, q=1, seed=1).step(lambda: sum((p * p).sum() for p in p2))
    p3 = _params()
    ZOSGDCons(p3, lr=1e-3, q=1, seed=1).step(lambda: sum((p * p).sum() for p in p3))
    torch.testing.assert_close(_flat(p3), _flat(p2), rtol=0, atol=1e-12)


class _Named(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.layer_norm = torch.nn.LayerNorm(2)


@pytest.mark.parametrize("how", ["names", "decay_groups"])
def test_weight_decay_skips_bias_and_norm(how):
    if how == "names":  # MeZO's name filter: "bias", "layer_norm", ...
        model = _Named().double()
        params = model.named_parameters()
    else:  # nn.Sequential names say nothing ("1.weight" is the LayerNorm's): decide by module type
        model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2)).double()
        params = decay_groups(model, 0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    w, rest = next(iter(before)), list(before)[1:]
    opt = ZOSGD(params, lr=0.25, weight_decay=0.5, q=1)
    opt.step(lambda: torch.zeros((), dtype=torch.float64))  # constant loss: c = 0, only decay acts
    after = dict(model.named_parameters())
    # perturb/restore round trips leave ulp-level differences: atol far below the 12.5 % decay
    torch.testing.assert_close(after[w].detach(), before[w] * 0.875, rtol=0, atol=1e-14)
    for n in rest:
        torch.testing.assert_close(after[n].detach(), before[n], rtol=0, atol=1e-14, msg=n)


def test_explicit_gradient_mode_is_plain_sgd():
    params, ref = _params(), _params()
    opt = ZOSGD(params, lr=0.1, momentum=0.5)
    tt = torch.optim.SGD(ref, lr=0.1, momentum=0.5)
    for _ in range(3):
        for p, r in zip(params, ref):
            p.grad = torch.ones_like(p) * 0.3
            r.grad = torch.ones_like(r) * 0.3
        assert opt.step() is None
        tt.step()
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.detach(), r.detach(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="needs a closure"):
        ZOSGDSign(_params(), lr=0.1).step()


@pytest.mark.parametrize("cls", [ZOSGD, ZOAdam])
def test_state_dict_round_trip_resumes_exactly(cls):
    kw = {"lr": 0.01, "q": 2, "seed": torch.Generator().manual_seed(5)}
    if cls is ZOSGD:
        kw["momentum"] = 0.9
    params = _params()
    a = [torch.randn_like(p) for p in params]
    opt = cls(params, **kw)
    for _ in range(3):
        opt.step(_linear_loss(params, a))
    sd = copy.deepcopy(opt.state_dict())  # like torch.save: the live state_dict references the buffers
    snap = [p.detach().clone() for p in params]
    for _ in range(2):
        opt.step(_linear_loss(params, a))
    params2 = [torch.nn.Parameter(s.clone()) for s in snap]
    opt2 = cls(params2, **{**kw, "seed": 999})
    opt2.load_state_dict(sd)
    for _ in range(2):
        opt2.step(_linear_loss(params2, a))
    for p, r in zip(params, params2):
        assert torch.equal(p, r)


def test_generator_seed_is_reproducible():
    runs = []
    for _ in range(2):
        params = _params()
        a = [torch.ones_like(p) for p in params]
        opt = ZOSGD(params, lr=0.1, seed=torch.Generator().manual_seed(42))
        opt.step(_linear_loss(params, a))
        runs.append(_flat(params))
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"mu": 0.0}, ValueError, "mu must be > 0"),
    ({"mu": -1e-3}, ValueError, "mu must be > 0"),
    ({"q": 0}, ValueError, "q must be an int >= 1"),
    ({"lr": -0.1}, ValueError, "lr must be >= 0"),
    ({"dist": "uniform"}, ValueError, "dist must be one of"),
    ({"momentum": 1.0}, ValueError, "momentum must be in"),
    ({"seed": -1}, ValueError, "seed must be"),
    ({"bogus": 1}, TypeError, "bogus"),
])
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ZOSGD(_params(), **{"lr": 0.1, **kwargs})


def test_cons_rejects_weight_decay_and_closure_must_be_callable():
    with pytest.raises(TypeError):
        ZOSGDCons(_params(), lr=0.1, weight_decay=0.1)
    with pytest.raises(TypeError, match="closure must be callable"):
        ZOSGD(_params(), lr=0.1).step(3.0)
