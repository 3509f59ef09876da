"""Masked optimizer ops: every backend against the reference twin; masked entries bit-identical; opcheck;
torch.compile; clear errors for bad input."""

from __future__ import annotations

import pytest
import torch

import pyunlearn
from pyunlearn import reference
from pyunlearn.testing import assert_close, backends, devices

from _masked_cases import DTYPES, MASKS, SHAPES, adamw_args, clone_args, on_mask, sgd_args, sophia_args

OPS = {
    "sgd": (torch.ops.pyunlearn.masked_sgd_step, reference.masked_sgd_step_ref, sgd_args),
    "adamw": (torch.ops.pyunlearn.masked_adamw_step, reference.masked_adamw_step_ref, adamw_args),
    "sophia": (torch.ops.pyunlearn.masked_sophia_step, reference.masked_sophia_step_ref, sophia_args),
}
DEVICE = devices()[0]


def run_and_compare(backend, op_name, shape_id, dtype, form, **flags):
    op, ref, build = OPS[op_name]
    tensors, scalars = build(shape_id, dtype, DEVICE, form, **flags)
    before, expected, actual = clone_args(tensors), clone_args(tensors), tensors
    ref(*expected.values(), *scalars)
    with pyunlearn.use_backend(backend):
        op(*actual.values(), *scalars)
    for name, lst in actual.items():
        if name in ("grads", "masks"):
            continue
        for i, t in enumerate(lst):
            on = on_mask(actual["masks"][i], t)
            # exactness: where the mask is off, nothing moved (bitwise)
            assert torch.equal(t[~on], before[name][i][~on]), f"{name}[{i}] moved where the mask is off"
            assert_close(t, expected[name][i], f"{backend} {op_name} {name}[{i}]")
            assert t.stride() == before[name][i].stride()


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("form", MASKS)
@pytest.mark.parametrize("op_name", list(OPS))
def test_matches_reference_mask_forms(backend, op_name, form, dtype):
    run_and_compare(backend, op_name, "2d", dtype, form)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("shape_id", list(SHAPES))
@pytest.mark.parametrize("form", ["none", "bool", "idx64"])
@pytest.mark.parametrize("op_name", list(OPS))
def test_matches_reference_shapes(backend, op_name, form, shape_id):
    run_and_compare(backend, op_name, shape_id, torch.float32, form)


FLAG_CASES = [
    ("sgd", dict(momentum=0.0, nesterov=False)),
    ("sgd", dict(momentum=0.9, nesterov=False, first_step=True)),
    ("sgd", dict(momentum=0.9, nesterov=True, first_step=False)),
    ("adamw", dict(amsgrad=False)),
    ("adamw", dict(amsgrad=True, maximize=True)),
    ("sophia", dict(update_hessian=False)),
    ("sophia", dict(update_hessian=True, maximize=True)),
]


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("op_name,flags", FLAG_CASES, ids=[f"{o}-{sorted(f.items())}" for o, f in FLAG_CASES])
@pytest.mark.parametrize("form", ["none", "bool", "idx32"])
def test_matches_reference_flags(backend, op_name, flags, form):
    run_and_compare(backend, op_name, "odd", torch.float32, form, **flags)


def test_all_on_mask_equals_unmasked():
    """A dense all-one mask and an index list of every entry step exactly as no mask at all."""
    op, _, build = OPS["adamw"]
    tensors, scalars = build("2d", torch.float32, DEVICE, "none")
    results = []
    for form in ("none", "all_on", "every_index"):
        t = clone_args(tensors)
        if form == "all_on":
            t["masks"] = [torch.ones_like(p, dtype=torch.bool) for p in t["params"]]
        elif form == "every_index":
            t["masks"] = [torch.arange(p.numel(), device=p.device) for p in t["params"]]
        op(*t.values(), *scalars)
        results.append(t["params"])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_sophia_clips_and_preconditions():
    """Sanity of the math itself: with h = 0 every entry moves by exactly lr*sign(m); with a large h the step
    is m / (rho*bs*h), unclipped."""
    p, g = torch.zeros(4), torch.tensor([1.0, -2.0, 0.0, 3.0])
    m, h = torch.zeros(4), torch.zeros(4)
    pyunlearn.ops.masked_sophia_step(p, g, m, h, lr=0.5, beta1=0.0, rho=1.0, bs=1.0, weight_decay=0.0)
    assert torch.equal(p, torch.tensor([-0.5, 0.5, 0.0, -0.5]))
    p, h = torch.zeros(4), torch.full((4,), 100.0)
    pyunlearn.ops.masked_sophia_step(p, g, m, h, lr=1.0, beta1=0.0, rho=1.0, bs=1.0, weight_decay=0.0)
    torch.testing.assert_close(p, -g / 100.0)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("op_name", list(OPS))
def test_opcheck(backend, op_name):
    op, _, build = OPS[op_name]
    tensors, scalars = build("odd", torch.float32, DEVICE, "bool")
    with pyunlearn.use_backend(backend):
        torch.library.opcheck(op, (*tensors.values(), *scalars))


@pytest.mark.parametrize("op_name", list(OPS))
def test_torch_compile_fullgraph(op_name):
    op, ref, build = OPS[op_name]
    tensors, scalars = build("odd", torch.float32, DEVICE, "idx64")
    expected = clone_args(tensors)
    ref(*expected.values(), *scalars)

    @torch.compile(fullgraph=True, backend="inductor")
    def step(*lists):
        op(*lists, *scalars)

    step(*tensors.values())
    for a, b in zip(tensors["params"], expected["params"]):
        assert_close(a, b)


# ---- bad input: clear errors naming the argument, through the public API (all backends) and the raw C++ op ----
def _adamw(p, g=None, m=None, v=None, mask=None, **kw):
    g = torch.randn_like(p, dtype=p.dtype) if g is None else g
    m = torch.zeros_like(p) if m is None else m
    v = torch.zeros_like(p) if v is None else v
    args = dict(lr=1e-3, step=1)
    args.update(kw)
    pyunlearn.ops.masked_adamw_step(p, g, m, v, mask, **args)


BAD = [
    ("mask shape", lambda: _adamw(torch.zeros(4), mask=torch.ones(5, dtype=torch.bool)), ValueError,
     r"masks\[0\] \(a dense mask\) must have params\[0\]'s shape \[4\], got \[5\]"),
    ("mask device", lambda: _adamw(torch.zeros(4), mask=torch.ones(4, dtype=torch.bool, device="meta")),
     ValueError, r"masks\[0\] must be on params\[0\]'s device cpu, got meta"),
    ("mask dtype", lambda: _adamw(torch.zeros(4), mask=torch.ones(4)), TypeError,
     r"masks\[0\] must be a bool/uint8 dense mask or an int32/int64 index list, got dtype torch.float32"),
    ("index 2-D", lambda: _adamw(torch.zeros(4), mask=torch.zeros(2, 1, dtype=torch.long)), ValueError,
     r"masks\[0\] \(an index list\) must be 1-D"),
    ("index out of range", lambda: _adamw(torch.zeros(4), mask=torch.tensor([0, 4])), IndexError,
     r"masks\[0\] must hold flat indices in \[0, 4\), got values in \[0, 4\]"),
    ("negative index", lambda: _adamw(torch.zeros(4), mask=torch.tensor([-1])), IndexError,
     r"flat indices in \[0, 4\)"),
    ("int params", lambda: _adamw(torch.zeros(4, dtype=torch.long), g=torch.zeros(4, dtype=torch.long)), TypeError,
     r"params\[0\] must be a floating-point tensor, got torch.int64"),
    ("grad dtype", lambda: _adamw(torch.zeros(4), g=torch.zeros(4, dtype=torch.float64)), TypeError,
     r"grads\[0\] must have dtype torch.float32, got torch.float64"),
    ("state shape", lambda: _adamw(torch.zeros(4), m=torch.zeros(3)), ValueError,
     r"exp_avgs\[0\] must have params\[0\]'s shape \[4\], got \[3\]"),
    ("half state", lambda: _adamw(torch.zeros(4, dtype=torch.half), m=torch.zeros(4, dtype=torch.half),
                                  v=torch.zeros(4, dtype=torch.half)), TypeError,
     r"exp_avgs\[0\] must have dtype torch.float32, got torch.float16"),
    ("lr < 0", lambda: _adamw(torch.zeros(4), lr=-1e-3), ValueError, r"lr must be >= 0, got -0.001"),
    ("lr tensor", lambda: _adamw(torch.zeros(4), lr=torch.tensor(1e-3)), TypeError, r"lr must be a Python float"),
    ("beta2 >= 1", lambda: _adamw(torch.zeros(4), beta2=1.0), ValueError, r"beta2 must be in \[0, 1\), got 1.0"),
    ("step 0", lambda: _adamw(torch.zeros(4), step=0), ValueError, r"step must be >= 1, got 0"),
    ("mask count", lambda: pyunlearn.ops.masked_sgd_step([torch.zeros(2)], [torch.zeros(2)], masks=[None, None],
                                                          lr=0.1), ValueError,
     r"masks must have one entry per tensor of params \(expected 1\), got 2"),
    ("nesterov", lambda: pyunlearn.ops.masked_sgd_step(torch.zeros(2), torch.zeros(2), torch.zeros(2), lr=0.1,
                                                        momentum=0.0, nesterov=True), ValueError,
     r"nesterov needs momentum > 0 and dampening == 0"),
    ("sophia bs", lambda: pyunlearn.ops.masked_sophia_step(torch.zeros(2), torch.zeros(2), torch.zeros(2),
                                                            torch.zeros(2), lr=0.1, bs=0), ValueError,
     r"bs must be > 0, got 0"),
]


@pytest.mark.parametrize("name,call,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input_public_api(name, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


CPP_BAD = [
    ("mask shape", dict(mask=torch.ones(5, dtype=torch.bool)), ValueError,
     r"masks\[0\] \(a dense mask\) must have params\[0\]'s shape \[4\], got \[5\]"),
    ("index out of range", dict(mask=torch.tensor([7])), IndexError,
     r"masks\[0\] must hold flat indices in \[0, 4\), got values in \[7, 7\]"),
    ("mask dtype", dict(mask=torch.ones(4)), TypeError, r"must be a bool/uint8 dense mask or an int32/int64"),
    ("lr < 0", dict(lr=-1.0), ValueError, r"lr must be >= 0, got -1"),
    ("grad dtype", dict(g=torch.zeros(4, dtype=torch.float64)), TypeError,
     r"grads\[0\] must have dtype Float, got Double"),
]


@pytest.mark.parametrize("name,kw,exc,match", CPP_BAD, ids=[b[0] for b in CPP_BAD])
def test_bad_input_cpp_op(name, kw, exc, match):
    """The C++ kernels check too, for callers that go straight to torch.ops.pyunlearn.*."""
    p = torch.zeros(4)
    g = kw.get("g", torch.zeros(4))
    with pytest.raises(exc, match=match):
        torch.ops.pyunlearn.masked_adamw_step([p], [g], [torch.zeros(4)], [torch.zeros(4)], [], [kw.get("mask")],
                                              kw.get("lr", 1e-3), 0.9, 0.999, 0.0, 1e-8, 1.0, False, False)


@pytest.mark.skipif(DEVICE != "cpu", reason="CPU instruction sets")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op_name", list(OPS))
def test_cpu_instruction_sets_agree_bitwise(op_name, dtype):
    """The CPU loops are compiled for base x86-64 and AVX2 without FMA contraction: every instruction set
    this machine has must give bit-identical results (and match the reference, checked above for the default)."""
    op, _, build = OPS[op_name]
    isas = pyunlearn._C.build_info()["cpu_isas"]
    default = pyunlearn._C.build_info()["cpu_isa"]
    tensors, scalars = build("2d", dtype, DEVICE, "bool")
    results = []
    try:
        for isa in isas:
            assert pyunlearn._C.set_cpu_isa(isa)
            t = clone_args(tensors)
            op(*t.values(), *scalars)
            results.append((isa, t))
    finally:
        pyunlearn._C.set_cpu_isa(default)
    for isa, t in results[1:]:
        for name in t:
            for a, b in zip(t[name], results[0][1][name]):
                if a is not None:
                    assert torch.equal(a, b), f"{isa} differs from {results[0][0]} in {name}"


def test_set_cpu_isa_rejects_unknown():
    assert pyunlearn._C.set_cpu_isa("sse9") is False


@pytest.mark.parametrize("backend,module", [("triton", "pyunlearn.kernels.masked_optim"),
                                            ("reference", "pyunlearn.reference.masked_optim")])
def test_backend_switch_really_runs_that_backend(backend, module, monkeypatch):
    """Guards the tests above against passing on the C++ kernel: under use_backend(b) the op must run b's code,
    and after it the C++ kernel again."""
    if backend not in pyunlearn.available_backends():
        pytest.skip(f"{backend} not available here")
    import importlib

    mod = importlib.import_module(module)
    name = "_launch" if backend == "triton" else "_put"
    calls = []
    real = getattr(mod, name)
    monkeypatch.setattr(mod, name, lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    op, _, build = OPS["adamw"]
    tensors, scalars = build("odd", torch.float32, DEVICE, "bool")
    with pyunlearn.use_backend(backend):
        assert pyunlearn.get_backend() == backend
        op(*tensors.values(), *scalars)
    assert calls, f"the {backend} backend's code did not run"
    n = len(calls)
    op(*tensors.values(), *scalars)
    assert len(calls) == n and pyunlearn.get_backend() == "cpp"


def test_set_backend_rejects_unknown():
    with pytest.raises(ValueError, match=r"backend must be one of \('cpp', 'triton', 'reference'\), got 'cuda'"):
        pyunlearn.set_backend("cuda")
