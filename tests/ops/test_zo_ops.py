"""Seeded ZO direction ops: Philox known answers; raw words bit-identical and Rademacher values exact on every
backend; Gaussian values within 8 fp32 ulps of the reference twin; chunking / order invariance; perturb +
restore; opcheck; torch.compile; statistics of the generated directions; clear errors for bad input."""

from __future__ import annotations

import math

import pytest
import torch

import pyunlearn
from pyunlearn.ops import zo
from pyunlearn.reference import zo as rz
from pyunlearn.testing import backends, devices

DEVICE = devices()[0]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
GAUSS_ULPS = 8  # tested bound between backends (measured max: 3 ulps, docs/zo_ops.md)
F = 0xFFFFFFFF

# Random123's known-answer vectors of Philox4x32-10 (counter, key) -> words: the three "philox4x32 10" lines
# of its tests/kat_vectors file (compared against public copies of that file on 2026-11-28).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((F, F, F, F), (F, F), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def _ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| in units of fp32 ulps of |b| (the smallest normal's ulp for zeros)."""
    b32 = b.float().abs().clamp(min=2.0 ** -126)
    ulp = torch.pow(2.0, torch.floor(torch.log2(b32)) - 23)
    return (a.double() - b.double()).abs() / ulp.double()


@pytest.mark.parametrize("counter,key,words", KAT)
def test_philox_known_answers(counter, key, words):
    assert rz.philox4x32_scalar(counter, key) == words
    c = [torch.tensor([x], dtype=torch.int64) for x in counter]
    got = rz.philox4x32(*c, *key)
    assert tuple(int(w) for w in got) == words


def test_philox_tensor_form_matches_scalar_form():
    """The 16-bit-limb int64 emulation equals the Python-int textbook form on random counters and keys."""
    g = torch.Generator().manual_seed(1)
    cs = torch.randint(0, 1 << 32, (4, 64), generator=g, dtype=torch.int64)
    for key in [(0, 0), (F, 1), (0x12345678, 0x9ABCDEF0)]:
        words = torch.stack(rz.philox4x32(*cs, *key), dim=1)
        for i in range(cs.shape[1]):
            assert tuple(words[i].tolist()) == rz.philox4x32_scalar(cs[:, i].tolist(), key)


def test_stream_layout():
    """Element j of direction k owns word j & 3 of Philox(counter=(j>>2 lo, hi, k lo, hi), key=(seed lo, hi))."""
    seed, k, off = (0xDEADBEEF << 32) | 0x01234567, (7 << 32) + 3, (5 << 32) + 2
    bits = rz.philox_bits(seed, k, off, 9)
    for i in range(9):
        j = off + i
        w = rz.philox4x32_scalar((j >> 2, (j >> 2) >> 32, k, k >> 32), (seed, seed >> 32))
        assert int(bits[i]) == w[j & 3]


BITS_CASES = [  # (seed, direction, offset, numel): hi words of seed / direction / group set, unaligned starts
    (0, 0, 0, 37),
    ((1 << 64) - 5, 7, 3, 4099),
    (123456789, (1 << 32) + 1, (1 << 34) + 1, 61),
    (1 << 63, 2, 6, 1),
]


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("seed,direction,offset,numel", BITS_CASES)
def test_bits_identical_across_backends(backend, seed, direction, offset, numel):
    expected = rz.philox_bits(seed, direction, offset, numel, DEVICE)
    with pyunlearn.use_backend(backend):
        got = zo.zo_bits(numel, seed=seed, direction=direction, offset=offset, device=DEVICE)
    assert got.dtype == torch.int64 and torch.equal(got, expected)
    assert int(got.min()) >= 0 and int(got.max()) <= F


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
@pytest.mark.parametrize("direction,offset", [(3, 1), ((1 << 33) + 1, (1 << 34) + 3)])
def test_directions_match_reference(backend, dist, direction, offset):
    n = 3 * 4096 + 5
    kw = {"seed": 2024, "direction": direction, "offset": offset, "dist": dist, "device": DEVICE}
    with pyunlearn.use_backend("reference"):
        expected = zo.zo_directions(n, **kw)
    with pyunlearn.use_backend(backend):
        got = zo.zo_directions(n, **kw)
    if dist == "rademacher":
        assert torch.equal(got, expected)
        assert set(got.unique().tolist()) == {-1.0, 1.0}
    else:
        assert float(_ulps(got, expected).max()) <= GAUSS_ULPS


def test_reference_gaussian_against_double_formula():
    """The twin's fp32 Box-Muller is within a few ulps of the same formula in double from the raw words."""
    n = 4000
    z = rz.directions_f32(99, 4, 2, n, "gaussian")
    bits = rz.philox_bits(99, 4, 0, n + 2).tolist()
    expect = []
    for j in range(2, n + 2):
        p = (j & 3) >> 1
        a, b = bits[4 * (j >> 2) + 2 * p], bits[4 * (j >> 2) + 2 * p + 1]
        u, v = ((a >> 8) + 1) * 2.0 ** -24, (b >> 8) * 2.0 ** -24
        t = float(torch.tensor(v * rz.TWO_PI_F32, dtype=torch.float32))  # the fp32 angle the kernels form
        r = math.sqrt(-2.0 * math.log(u))
        expect.append(r * (math.cos(t) if j % 2 == 0 else math.sin(t)))
    assert float(_ulps(z, torch.tensor(expect, dtype=torch.float64)).max()) <= 4


def _cases(dtype, device):
    g = torch.Generator().manual_seed(5)
    mk = lambda *s: torch.randn(*s, generator=g).to(dtype=dtype, device=device)
    noncontig = mk(6, 10)[:, ::3]  # [6, 4], strides (10, 3)
    return [mk(7, 3), mk(0), mk(1), noncontig, mk(4099)]


def _close(got, expected, dist, dtype, bound, backend):
    if dist == "rademacher":
        if dtype == torch.bfloat16 and backend == "triton" and got.device.type == "cpu":
            # the Triton interpreter's fp32 -> bf16 store truncates instead of rounding (DESIGN.md build facts)
            torch.testing.assert_close(got, expected, rtol=2 ** -7, atol=0)
        else:
            assert torch.equal(got, expected)
        return
    if dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(got, expected, rtol=0, atol=bound)
    else:  # one rounding of the storage dtype may differ
        torch.testing.assert_close(got, expected, rtol=1e-2 if dtype == torch.bfloat16 else 1e-3, atol=bound)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_accumulate_matches_reference(backend, dtype, dist):
    coeffs = torch.tensor([0.5, -1.25, 2.0], dtype=torch.float64 if dtype == torch.float64 else torch.float32,
                          device=DEVICE)
    expected, got = _cases(dtype, DEVICE), _cases(dtype, DEVICE)
    strides = [t.stride() for t in got]
    with pyunlearn.use_backend("reference"):
        zo.zo_accumulate_(expected, coeffs, seed=77, direction0=11, scale=-0.3, dist=dist, offset=6)
    with pyunlearn.use_backend(backend):
        zo.zo_accumulate_(got, coeffs, seed=77, direction0=11, scale=-0.3, dist=dist, offset=6)
    # |scale| * sum|c| * 6 (max |z|) * 8 ulps of fp32
    bound = 0.3 * 3.75 * 6 * GAUSS_ULPS * 2.0 ** -23
    for i, (a, e) in enumerate(zip(got, expected)):
        assert a.stride() == strides[i]
        _close(a, e, dist, dtype, bound, backend)


@pytest.mark.parametrize("backend", ["reference", *backends()])
def test_accumulate_formula(backend):
    """t += scale * sum_k c_k z_k with z from zo_directions (fp64 tensors: no rounding worth the name)."""
    n, off = 1000, 13
    t0 = torch.randn(n, dtype=torch.float64, device=DEVICE)
    c = torch.tensor([0.7, -0.2], dtype=torch.float64, device=DEVICE)
    with pyunlearn.use_backend(backend):
        t = t0.clone()
        zo.zo_accumulate_([t], c, seed=3, direction0=4, scale=0.5, offset=off)
        z4 = zo.zo_directions(n, seed=3, direction=4, offset=off, dtype=torch.float64, device=DEVICE)
        z5 = zo.zo_directions(n, seed=3, direction=5, offset=off, dtype=torch.float64, device=DEVICE)
    torch.testing.assert_close(t, t0 + 0.5 * (0.7 * z4 - 0.2 * z5), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("backend", ["reference", *backends()])
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_chunking_and_order_invariance(backend, dist):
    """One call over [a, b] == two calls with offsets == one call over cat(a, b) == any order: bitwise."""
    a0, b0 = torch.randn(4, 5, device=DEVICE), torch.randn(4099, device=DEVICE)
    c = torch.tensor([0.25, -1.5], device=DEVICE)
    kw = {"seed": 5, "direction0": 2, "scale": 0.5, "dist": dist}
    with pyunlearn.use_backend(backend):
        a, b = a0.clone(), b0.clone()
        zo.zo_accumulate_([a, b], c, offset=3, **kw)
        a2, b2 = a0.clone(), b0.clone()
        zo.zo_accumulate_([b2], c, offset=3 + a0.numel(), **kw)  # order: b first
        zo.zo_accumulate_([a2], c, offset=3, **kw)
        cat = torch.cat([a0.reshape(-1), b0])
        zo.zo_accumulate_([cat], c, offset=3, **kw)
        split = torch.cat([a0.reshape(-1), b0])
        for lo, hi in [(0, 7), (7, 1000), (1000, split.numel())]:  # chunks not aligned to Philox groups
            zo.zo_accumulate_([split[lo:hi]], c, offset=3 + lo, **kw)
    flat = torch.cat([a.reshape(-1), b])
    assert torch.equal(a2, a) and torch.equal(b2, b)
    assert torch.equal(cat, flat) and torch.equal(split, flat)


@pytest.mark.parametrize("backend", ["reference", *backends()])
def test_perturb_restore_rademacher_exact(backend):
    """Rademacher with a power-of-two mu on parameters that t +- mu does not round: back bit for bit."""
    mu = 2.0 ** -10
    t0 = (torch.randint(-4096, 4096, (3000,), device=DEVICE).float() * mu)
    with pyunlearn.use_backend(backend):
        t = t0.clone()
        zo.perturb_([t], seed=8, direction=1, alpha=mu, dist="rademacher")
        assert torch.equal((t - t0).abs(), torch.full_like(t, mu))
        zo.restore_([t], seed=8, direction=1, alpha=mu, dist="rademacher")
    assert torch.equal(t, t0)


@pytest.mark.parametrize("backend", ["reference", *backends()])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_perturb_restore_gaussian_bound(backend, dtype):
    """Gaussian: restore(perturb(t)) is within one rounding of t + mu z: |t' - t| <= ulp(|t| + |mu z|)."""
    mu = 1e-3
    t0 = torch.randn(5000, dtype=dtype, device=DEVICE)
    with pyunlearn.use_backend(backend):
        t = t0.clone()
        zo.perturb_([t], seed=21, direction=0, alpha=mu)
        z = zo.zo_directions(t.numel(), seed=21, dtype=dtype, device=DEVICE)
        zo.restore_([t], seed=21, direction=0, alpha=mu)
    eps = torch.finfo(dtype).eps
    assert bool(((t - t0).abs() <= eps * (t0.abs() + mu * z.abs())).all())
    assert float((t != t0).float().mean()) < 0.5  # most entries come back exactly


@pytest.mark.parametrize("backend", ["reference", *backends()])
def test_perturb_restore_device_alpha(backend):
    """alpha as a one-element tensor (a device-side projected gradient) equals alpha as a float."""
    t0 = torch.randn(100, device=DEVICE)
    with pyunlearn.use_backend(backend):
        a, b = t0.clone(), t0.clone()
        zo.perturb_(a, seed=1, direction=2, alpha=0.125)
        zo.perturb_(b, seed=1, direction=2, alpha=torch.tensor(0.125, device=DEVICE))
        assert torch.equal(a, b)
        zo.restore_(b, seed=1, direction=2, alpha=torch.tensor([0.125], device=DEVICE))
        z = zo.zo_directions(100, seed=1, direction=2, device=DEVICE)
    assert torch.equal(b, (t0 + 0.125 * z) - 0.125 * z)


@pytest.mark.parametrize("backend", ["reference", *backends()])
def test_assemble(backend):
    q = 4
    c = torch.tensor([0.5, -2.0, 1.0, 3.0], device=DEVICE)
    like = [torch.empty(3, 4, device=DEVICE), torch.empty(5, device=DEVICE)]
    with pyunlearn.use_backend(backend):
        g = zo.assemble(like, c, seed=9, scale=1.0 / q, offset=2)
        g_shapes = zo.assemble([(3, 4), (5,)], c, seed=9, scale=1.0 / q, offset=2)
        zs = [zo.zo_directions(17, seed=9, direction=k, offset=2, dtype=torch.float64, device=DEVICE)
              for k in range(q)]
    flat = sum(float(c[k]) * zs[k] for k in range(q)) / q
    got = torch.cat([x.reshape(-1) for x in g])
    assert [x.shape for x in g] == [(3, 4), (5,)] and all(x.dtype == torch.float32 for x in g)
    torch.testing.assert_close(got.double(), flat, rtol=1e-6, atol=1e-6)
    assert all(torch.equal(x, y) for x, y in zip(g, g_shapes))


@pytest.mark.parametrize("backend", ["reference", *backends()])
def test_empty_inputs(backend):
    with pyunlearn.use_backend(backend):
        assert zo.zo_directions(0, seed=1, device=DEVICE).shape == (0,)
        zo.zo_accumulate_([], torch.ones(2, device=DEVICE), seed=1)
        t = torch.randn(5, device=DEVICE)
        before = t.clone()
        zo.zo_accumulate_([t, torch.empty(0, device=DEVICE)], torch.ones(0, device=DEVICE), seed=1)
        assert torch.equal(t, before)


def test_fp16_directions_are_rounded_fp32_values():
    z32 = zo.zo_directions(999, seed=4, offset=1)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert torch.equal(zo.zo_directions(999, seed=4, offset=1, dtype=dtype), z32.to(dtype))


def test_opcheck():
    ts = [torch.randn(3, 5), torch.randn(7)]
    torch.library.opcheck(torch.ops.pyunlearn.zo_accumulate, (ts, torch.tensor([0.5, 1.0]), 3, 1, 0.5, "gaussian", 2))
    torch.library.opcheck(torch.ops.pyunlearn.zo_philox_bits, (torch.empty(9, dtype=torch.int64), 3, 1, 2))


def test_torch_compile_fullgraph():
    def mezo_probe(ps, c):
        zo.perturb_(ps, seed=12, direction=3, alpha=c)
        loss = sum((p * p).sum() for p in ps)
        zo.restore_(ps, seed=12, direction=3, alpha=c)
        return loss

    ps0 = [torch.randn(4, 6), torch.randn(9)]
    c = torch.tensor([1e-2])
    ps_e, ps_c = [p.clone() for p in ps0], [p.clone() for p in ps0]
    expected = mezo_probe(ps_e, c)
    got = torch.compile(mezo_probe, fullgraph=True, backend="inductor")(ps_c, c)
    torch.testing.assert_close(got, expected)
    assert all(torch.equal(a, b) for a, b in zip(ps_c, ps_e))


def test_gaussian_statistics():
    from scipy import stats

    n = 1_000_000
    z = zo.zo_directions(n, seed=31337, direction=0).double()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    # cos/sin halves of a Box-Muller pair and neighbouring directions are uncorrelated
    z2 = zo.zo_directions(n, seed=31337, direction=1).double()
    assert abs(float((z * z2).mean())) < 5 / math.sqrt(n)
    assert abs(float((z[0::2] * z[1::2]).mean())) < 5 / math.sqrt(n / 2)


def test_rademacher_statistics():
    n = 1_000_000
    z = zo.zo_directions(n, seed=7, direction=3, dist="rademacher").double()
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    z2 = zo.zo_directions(n, seed=8, direction=3, dist="rademacher").double()
    assert abs(float((z * z2).mean())) < 5 / math.sqrt(n)
    assert abs(float((z[1:] * z[:-1]).mean())) < 5 / math.sqrt(n)


def test_seed_bits_and_range():
    """Seeds in [0, 2^64): 2^64 - 1 and -1's bit pattern are the same key; out-of-range seeds are refused."""
    top = zo.zo_bits(8, seed=(1 << 64) - 1)
    assert torch.equal(top, rz.philox_bits(-1, 0, 0, 8))
    assert not torch.equal(top, zo.zo_bits(8, seed=(1 << 63) - 1))
    for bad in (-1, 1 << 64):
        with pytest.raises(ValueError, match="seed"):
            zo.zo_directions(4, seed=bad)
    with pytest.raises(TypeError, match="seed"):
        zo.zo_directions(4, seed=1.5)


ERRORS = [
    (lambda: zo.zo_directions(4, seed=1, dist="uniform"), ValueError, "dist"),
    (lambda: zo.zo_directions(-1, seed=1), ValueError, "numel"),
    (lambda: zo.zo_directions(4, seed=1, offset=-2), ValueError, "offset"),
    (lambda: zo.zo_directions(4, seed=1, direction=-1), ValueError, "direction"),
    (lambda: zo.zo_directions(4, seed=1, dtype=torch.int32), TypeError, "dtype"),
    (lambda: zo.zo_accumulate_([torch.zeros(3)], torch.ones(2, 2), seed=1), ValueError, "coeffs must be 1-D"),
    (lambda: zo.zo_accumulate_([torch.zeros(3)], torch.ones(2, dtype=torch.int64), seed=1), TypeError, "coeffs"),
    (lambda: zo.zo_accumulate_([torch.zeros(3)], [1.0], seed=1), TypeError, "coeffs"),
    (lambda: zo.zo_accumulate_([torch.zeros(3), torch.zeros(2, dtype=torch.float64)], torch.ones(1), seed=1),
     TypeError, r"tensors\[1\]"),
    (lambda: zo.zo_accumulate_([torch.zeros(3), torch.zeros(2, device="meta")], torch.ones(1), seed=1),
     ValueError, r"tensors\[1\] must be on"),
    (lambda: zo.zo_accumulate_([torch.zeros(3, device="meta")], torch.ones(1), seed=1), ValueError,
     "coeffs must be on"),
    (lambda: zo.zo_accumulate_([torch.zeros(3, dtype=torch.int32)], torch.ones(1), seed=1), TypeError,
     r"tensors\[0\]"),
    (lambda: zo.perturb_([torch.zeros(3)], seed=1, direction=0, alpha=torch.ones(2)), ValueError, "alpha"),
    (lambda: zo.assemble(["x"], torch.ones(1), seed=1), TypeError, r"like\[0\]"),
    (lambda: zo.zo_bits(4, seed=1, offset=(1 << 63) - 2), ValueError, "offset"),
]


@pytest.mark.parametrize("call,exc,match", ERRORS)
def test_bad_input_messages(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("backend", backends())
def test_kernel_side_checks(backend):
    """Straight calls to torch.ops.pyunlearn.* are checked by the kernels too (cpp: the same words)."""
    if backend != "cpp":
        pytest.skip("the Triton launchers trust the Python layer's checks")
    op = torch.ops.pyunlearn.zo_accumulate
    with pytest.raises(ValueError, match="dist must be one of"):
        op([torch.zeros(3)], torch.ones(1), 1, 0, 1.0, "cauchy", 0)
    with pytest.raises(ValueError, match="offset must be >= 0"):
        op([torch.zeros(3)], torch.ones(1), 1, 0, 1.0, "gaussian", -1)
    with pytest.raises(TypeError, match=r"tensors\[1\] must have tensors\[0\]'s dtype"):
        op([torch.zeros(3), torch.zeros(3, dtype=torch.float64)], torch.ones(1), 1, 0, 1.0, "gaussian", 0)
    with pytest.raises(TypeError, match="out must be int64"):
        torch.ops.pyunlearn.zo_philox_bits(torch.zeros(3), 1, 0, 0)


# --- zo_accumulate_rows: K directions at once, row k of [K, n_i] tensors = direction direction0 + k ----------------

ROW_SEED, ROW_D0, ROW_OFF = (1 << 63) + 12345, (1 << 32) + 7, (1 << 33) + 3


def _row_cases(dtype, device, k=3):
    """[K, n] tensors: contiguous, empty row, rows of a bigger buffer (row stride > n), one column, transposed
    (non-contiguous rows: the copy path), and 1030 columns (an unaligned tail)."""
    g = torch.Generator().manual_seed(9)
    mk = lambda *s: torch.randn(*s, generator=g).to(dtype=dtype, device=device)
    return [mk(k, 7), mk(k, 0), mk(k + 3, 1030)[1:k + 1, 2:1029], mk(k, 1), mk(5, k).t(), mk(k, 1030)]


def _alpha(dtype, value=-0.37):
    return torch.tensor([value], dtype=torch.float64 if dtype == torch.float64 else torch.float32, device=DEVICE)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_rows_match_reference(backend, dtype, dist):
    expected, got = _row_cases(dtype, DEVICE), _row_cases(dtype, DEVICE)
    strides = [t.stride() for t in got]
    a = _alpha(dtype)
    with pyunlearn.use_backend("reference"):
        zo.zo_accumulate_rows_(expected, a, seed=ROW_SEED, direction0=ROW_D0, dist=dist, offset=ROW_OFF)
    with pyunlearn.use_backend(backend):
        zo.zo_accumulate_rows_(got, a, seed=ROW_SEED, direction0=ROW_D0, dist=dist, offset=ROW_OFF)
    bound = 0.37 * 6 * GAUSS_ULPS * 2.0 ** -23  # |alpha| * max |z| * 8 ulps of fp32
    for i, (x, e) in enumerate(zip(got, expected)):
        assert x.stride() == strides[i]
        _close(x, e, dist, dtype, bound, backend)


@pytest.mark.parametrize("backend", ["reference", *backends()])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_rows_equal_separate_calls_bitwise(backend, dtype, dist):
    """Row k == zo_accumulate_([row k of every tensor], alpha, direction0 + k) on the same backend, bit for bit
    (fp64 alpha with fp32 tensors: both round it to fp32 first)."""
    rows, seq = _row_cases(dtype, DEVICE), _row_cases(dtype, DEVICE)
    a = torch.tensor([0.3719], dtype=torch.float64, device=DEVICE)
    with pyunlearn.use_backend(backend):
        zo.zo_accumulate_rows_(rows, a, seed=ROW_SEED, direction0=ROW_D0, dist=dist, offset=ROW_OFF)
        for k in range(rows[0].shape[0]):
            zo.zo_accumulate_([t[k] for t in seq], a, seed=ROW_SEED, direction0=ROW_D0 + k, dist=dist,
                              offset=ROW_OFF)
    for x, y in zip(rows, seq):
        assert torch.equal(x, y)


def test_rows_formula():
    """fp64 rows from zeros: row k of tensor i is alpha * z(seed, d0 + k, offset + start_i + column)."""
    ts = [torch.zeros(4, 5, dtype=torch.float64), torch.zeros(4, 9, dtype=torch.float64)]
    zo.zo_accumulate_rows_(ts, torch.tensor([2.0], dtype=torch.float64), seed=5, direction0=2, offset=3)
    for k in range(4):
        z = zo.zo_directions(14, seed=5, direction=2 + k, offset=3, dtype=torch.float64)
        assert torch.equal(torch.cat([ts[0][k], ts[1][k]]), 2.0 * z)
    assert not torch.equal(ts[0][0], ts[0][1])  # the rows are different directions


@pytest.mark.parametrize("backend", ["reference", *backends()])
def test_rows_empty(backend):
    with pyunlearn.use_backend(backend):
        zo.zo_accumulate_rows_([], _alpha(torch.float32), seed=1)
        ts = [torch.zeros(0, 5, device=DEVICE), torch.zeros(0, 0, device=DEVICE)]
        zo.zo_accumulate_rows_(ts, _alpha(torch.float32), seed=1)
        t = torch.randn(3, 4, device=DEVICE)
        before = t.clone()
        zo.zo_accumulate_rows_([t, torch.zeros(3, 0, device=DEVICE)], _alpha(torch.float32), seed=1, direction0=4)
        assert not torch.equal(t, before)
        zo.zo_accumulate_rows_([torch.zeros(3, 0, device=DEVICE)], _alpha(torch.float32), seed=1)
    assert [tuple(x.shape) for x in ts] == [(0, 5), (0, 0)]


def test_rows_opcheck():
    ts = [torch.randn(3, 5), torch.randn(3, 7)]
    torch.library.opcheck(torch.ops.pyunlearn.zo_accumulate_rows, (ts, torch.tensor([0.5]), 3, 1, "gaussian", 2))


ROW_ERRORS = [
    (lambda: zo.zo_accumulate_rows_([torch.zeros(3)], _alpha(torch.float32), seed=1), ValueError,
     r"tensors\[0\] must be 2-D"),
    (lambda: zo.zo_accumulate_rows_([torch.zeros(3, 2), torch.zeros(4, 2)], _alpha(torch.float32), seed=1),
     ValueError, r"tensors\[1\] must have tensors\[0\]'s number of rows K = 3, got 4"),
    (lambda: zo.zo_accumulate_rows_([torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.float64)],
                                    _alpha(torch.float32), seed=1), TypeError, r"tensors\[1\] must have"),
    (lambda: zo.zo_accumulate_rows_([torch.zeros(3, 2), torch.zeros(3, 2, device="meta")], _alpha(torch.float32),
                                    seed=1), ValueError, r"tensors\[1\] must be on"),
    (lambda: zo.zo_accumulate_rows_([torch.zeros(3, 2)], torch.ones(2), seed=1), ValueError,
     "alpha must be a one-element tensor"),
    (lambda: zo.zo_accumulate_rows_([torch.zeros(3, 2)], torch.ones(1, dtype=torch.float16), seed=1), TypeError,
     "alpha must be fp32 or fp64"),
    (lambda: zo.zo_accumulate_rows_([torch.zeros(3, 2)], 0.5, seed=1), TypeError, "alpha must be a one-element"),
    (lambda: zo.zo_accumulate_rows_([torch.zeros(3, 2, device="meta")], torch.ones(1), seed=1), ValueError,
     "alpha must be on"),
    (lambda: zo.zo_accumulate_rows_([torch.zeros(3, 2)], torch.ones(1), seed=1, direction0=(1 << 63) - 2),
     ValueError, r"direction0 \+ K"),
    (lambda: zo.zo_accumulate_rows_([torch.zeros(3, 2)], torch.ones(1), seed=1, dist="uniform"), ValueError,
     "dist"),
]


@pytest.mark.parametrize("call,exc,match", ROW_ERRORS)
def test_rows_bad_input_messages(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_rows_kernel_side_checks():
    """Straight calls of torch.ops.pyunlearn.zo_accumulate_rows are checked by the C++ kernel too."""
    op = torch.ops.pyunlearn.zo_accumulate_rows
    with pytest.raises(ValueError, match=r"tensors\[0\] must be 2-D"):
        op([torch.zeros(3)], torch.ones(1), 1, 0, "gaussian", 0)
    with pytest.raises(ValueError, match=r"tensors\[1\] must have tensors\[0\]'s number of rows K = 2, got 3"):
        op([torch.zeros(2, 3), torch.zeros(3, 3)], torch.ones(1), 1, 0, "gaussian", 0)
    with pytest.raises(ValueError, match="alpha must be a one-element tensor"):
        op([torch.zeros(2, 3)], torch.ones(2), 1, 0, "gaussian", 0)
    with pytest.raises(TypeError, match="alpha must be fp32 or fp64"):
        op([torch.zeros(2, 3)], torch.ones(1, dtype=torch.int64), 1, 0, "gaussian", 0)
    with pytest.raises(ValueError, match="dist must be one of"):
        op([torch.zeros(2, 3)], torch.ones(1), 1, 0, "cauchy", 0)
    with pytest.raises(ValueError, match="direction0 must be >= 0"):
        op([torch.zeros(2, 3)], torch.ones(1), 1, -1, "gaussian", 0)
