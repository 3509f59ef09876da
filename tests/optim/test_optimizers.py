"""Drop-in optimizers vs torch.optim, exact masks over many steps, state_dict round trips, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

import pyunlearn
from pyunlearn.optim import MaskedAdamW, MaskedSGD, Sophia
from pyunlearn.testing import backends, devices

DEVICE = devices()[0]


def make_model(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 9), torch.nn.Tanh(), torch.nn.Linear(9, 3)).to(DEVICE, dtype)


def train(model, opt, steps=20, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 12, generator=gen).to(DEVICE, dtype)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


PAIRS = [
    ("adamw", lambda ps: MaskedAdamW(ps, lr=1e-2, weight_decay=0.1),
     lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1)),
    ("adamw-amsgrad-maximize", lambda ps: MaskedAdamW(ps, lr=1e-2, amsgrad=True, maximize=True),
     lambda ps: torch.optim.AdamW(ps, lr=1e-2, amsgrad=True, maximize=True)),
    ("sgd-nesterov", lambda ps: MaskedSGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("sgd-dampening", lambda ps: MaskedSGD(ps, lr=0.05, momentum=0.5, dampening=0.3),
     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.5, dampening=0.3)),
    ("sgd-plain", lambda ps: MaskedSGD(ps, lr=0.05), lambda ps: torch.optim.SGD(ps, lr=0.05)),
]


def assert_within_torch_error(ours, theirs, truth):
    """Ours may differ from torch.optim by fp32 rounding: its error against a float64 run of torch.optim must be
    at most twice torch's own fp32 error (the flash-attention rule), never a hand-picked atol."""
    for po, pt, p64 in zip(ours.parameters(), theirs.parameters(), truth.parameters()):
        err_ours = (po.double() - p64).abs().max().item()
        err_torch = (pt.double() - p64).abs().max().item()
        assert err_ours <= 2 * err_torch + 1e-7, f"error {err_ours:.3g} vs torch.optim's own {err_torch:.3g}"


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("all_one", [False, True], ids=["no-mask", "all-one-mask"])
@pytest.mark.parametrize("name,ours,theirs", PAIRS, ids=[p[0] for p in PAIRS])
def test_matches_torch_optim_over_20_steps(backend, name, ours, theirs, all_one):
    a, b, truth = make_model(), make_model(), make_model(torch.float64)
    masks = {p: torch.ones_like(p, dtype=torch.bool) for p in a.parameters()} if all_one else None
    opt_a = ours(a.parameters())
    opt_a.set_masks(masks)
    with pyunlearn.use_backend(backend):
        train(a, opt_a)
    train(b, theirs(b.parameters()))
    train(truth, theirs(truth.parameters()), dtype=torch.float64)
    assert_within_torch_error(a, b, truth)


def sophia_official(params, grads, state, lr, b1, b2, rho, bs, wd):
    """SophiaG's per-step update with SOUL's every-step squared-gradient Hessian, written out in plain torch."""
    for p, g in zip(params, grads):
        st = state.setdefault(p, {"m": torch.zeros_like(p), "h": torch.zeros_like(p)})
        st["h"].mul_(b2).addcmul_(g, g, value=1 - b2)
        st["m"].mul_(b1).add_(g, alpha=1 - b1)
        p.mul_(1 - lr * wd)
        ratio = (st["m"].abs() / (rho * bs * st["h"] + 1e-15)).clamp(None, 1)
        p.addcmul_(st["m"].sign(), ratio, value=-lr)


@pytest.mark.parametrize("backend", backends())
def test_sophia_matches_official_update(backend):
    a, b = make_model(), make_model()
    opt = Sophia(a.parameters(), lr=1e-2, betas=(0.9, 0.95), rho=0.04, weight_decay=0.1, bs=64)
    state, gen = {}, torch.Generator().manual_seed(1)
    with pyunlearn.use_backend(backend):
        for _ in range(20):
            x = torch.randn(16, 12, generator=gen).to(DEVICE)
            for model in (a, b):
                model.zero_grad()
                model(x).pow(2).mean().backward()
            opt.step()
            with torch.no_grad():
                sophia_official(list(b.parameters()), [p.grad for p in b.parameters()], state, 1e-2, 0.9, 0.95,
                                0.04, 64, 0.1)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def random_masks(model, form):
    masks = {}
    for p in model.parameters():
        on = torch.rand(p.shape, device=p.device) < 0.3
        on.view(-1)[0] = True  # never an empty selection: the test also asserts that selected entries move
        masks[p] = on if form == "dense" else on.flatten().nonzero().squeeze(1).to(torch.int32)
    return masks


OPTS = {
    "adamw": lambda ps: MaskedAdamW(ps, lr=1e-2, weight_decay=0.5, amsgrad=True),
    "sgd": lambda ps: MaskedSGD(ps, lr=0.05, momentum=0.9, weight_decay=0.5),
    "sophia": lambda ps: Sophia(ps, lr=1e-2, weight_decay=0.5),
}


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("form", ["dense", "index"])
@pytest.mark.parametrize("opt_name", list(OPTS))
def test_masked_entries_never_move(backend, opt_name, form):
    model = make_model()
    opt = OPTS[opt_name](model.parameters())
    train(model, opt, steps=2)  # non-zero state everywhere first
    masks = random_masks(model, form)
    opt.set_masks(masks)
    frozen = {p: (p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)})
              for p in model.parameters()}
    with pyunlearn.use_backend(backend):
        train(model, opt, steps=5)
    for p in model.parameters():
        off = ~masks[p] if form == "dense" else torch.ones(p.numel(), dtype=torch.bool).index_fill_(
            0, masks[p].long(), False).view(p.shape)
        p0, st0 = frozen[p]
        assert torch.equal(p.detach()[off], p0[off])
        assert not torch.equal(p.detach()[~off], p0[~off])
        for k, v in opt.state[p].items():
            if torch.is_tensor(v) and v.shape == p.shape:
                assert torch.equal(v[off], st0[k][off]), f"state {k} moved where the mask is off"


def test_masks_replaced_between_steps():
    model = make_model()
    opt = MaskedAdamW(model.parameters(), lr=1e-2)
    w = model[0].weight
    first = torch.zeros_like(w, dtype=torch.bool)
    first[0] = True
    opt.set_masks({w: first})
    train(model, opt, steps=1)
    second = torch.zeros_like(w, dtype=torch.bool)
    second[1] = True
    opt.set_masks({w: second})
    before = w.detach().clone()
    train(model, opt, steps=1)
    changed = (w.detach() != before).any(dim=1)
    assert changed[1] and not changed[0] and not changed[2:].any()
    opt.set_masks(None)
    before = w.detach().clone()
    train(model, opt, steps=1)
    assert (w.detach() != before).any(dim=1).all()


def test_grad_none_is_skipped():
    model = make_model()
    opt = MaskedAdamW(model.parameters(), lr=1e-2)
    model[2].weight.requires_grad_(False)
    before = model[2].weight.detach().clone()
    train(model, opt, steps=2)
    assert torch.equal(model[2].weight, before)
    assert model[2].weight not in opt.state


@pytest.mark.parametrize("opt_name", list(OPTS))
def test_state_dict_round_trip_resumes_identically(opt_name):
    a = make_model()
    opt_a = OPTS[opt_name](a.parameters())
    opt_a.set_masks(random_masks(a, "index"))
    train(a, opt_a, steps=3)
    b = copy.deepcopy(a)
    opt_b = OPTS[opt_name](b.parameters())
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(opt_a.mask_of(pa), opt_b.mask_of(pb))
    train(a, opt_a, steps=3)
    train(b, opt_b, steps=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_loads_torch_adamw_state_dict():
    a, b = make_model(), make_model()
    theirs = torch.optim.AdamW(a.parameters(), lr=1e-2)
    train(a, theirs, steps=3)
    b.load_state_dict(a.state_dict())
    ours = MaskedAdamW(b.parameters(), lr=1e-2)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))  # torch.optim shares loaded tensors; keep them apart
    train(a, theirs, steps=3)
    train(b, ours, steps=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=2e-6)


def test_bf16_params_keep_fp32_state():
    model = make_model(torch.bfloat16)
    opt = MaskedAdamW(model.parameters(), lr=1e-2)
    train(model, opt, steps=2, dtype=torch.bfloat16)
    st = opt.state[model[0].weight]
    assert st["exp_avg"].dtype == torch.float32 and st["exp_avg_sq"].dtype == torch.float32
    assert model[0].weight.dtype == torch.bfloat16


@pytest.mark.parametrize("make,match,exc", [
    (lambda ps: MaskedAdamW(ps, lr=-1.0), r"lr must be >= 0, got -1.0", ValueError),
    (lambda ps: MaskedAdamW(ps, betas=(0.9, 1.5)), r"betas\[1\] must be in \[0, 1\), got 1.5", ValueError),
    (lambda ps: MaskedSGD(ps, lr=0.1, nesterov=True), r"nesterov needs momentum > 0", ValueError),
    (lambda ps: Sophia(ps, hessian="gnb2"), r"hessian must be one of", ValueError),
    (lambda ps: MaskedAdamW(ps, masks=[1, 2]), r"masks must be a dict parameter -> mask", TypeError),
    (lambda ps: MaskedAdamW(ps, masks={torch.zeros(3): None}), r"masks has a key that is not a parameter",
     ValueError),
])
def test_bad_constructor_arguments(make, match, exc):
    with pytest.raises(exc, match=match):
        make(make_model().parameters())


def test_bad_masks_named_by_parameter():
    model = make_model()
    w = model[0].weight  # params[0], 9 x 12 = 108 entries
    opt = MaskedAdamW(model.parameters())
    with pytest.raises(IndexError, match=r"masks\[params\[0\]\] must hold flat indices in \[0, 108\)"):
        opt.set_masks({w: torch.tensor([0, 108])})
    with pytest.raises(ValueError, match=r"masks\[params\[0\]\] must not repeat an index"):
        opt.set_masks({w: torch.tensor([3, 3])})
    with pytest.raises(ValueError, match=r"masks\[params\[0\]\] \(a dense mask\) must have params\[0\]'s shape"):
        opt.set_masks({w: torch.ones(12, 9, dtype=torch.bool)})


def test_sophia_external_hessian_only_moves_in_update_hessian():
    """hessian="external" (official SophiaG): step() leaves h alone; update_hessian() folds g^2 in, masked."""
    model = make_model()
    w = model[0].weight
    mask = torch.zeros_like(w, dtype=torch.bool)
    mask[:3] = True
    opt = Sophia(model.parameters(), lr=1e-2, hessian="external", masks={w: mask})
    train(model, opt, steps=2)
    h = opt.state[w]["hessian"]
    assert torch.count_nonzero(h) == 0
    g = w.grad.clone()
    opt.update_hessian()
    torch.testing.assert_close(h[mask], (1 - 0.99) * g[mask] ** 2)
    assert torch.count_nonzero(h[~mask]) == 0
    before = h.clone()
    train(model, opt, steps=1)
    assert torch.equal(h, before)
