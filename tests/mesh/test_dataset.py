"""UM2N dataset generation (pyunlearn.mesh.dataset): format, determinism across worker counts, caching,
resumption after a corrupt file, config mismatch and failure handling."""

import json
import warnings

import numpy as np
import pytest

from pyunlearn.mesh.dataset import (
    SAMPLE_KEYS,
    generate_dataset,
    load_dataset,
    make_sample,
    sample_mesh,
    sample_problem,
)
from pyunlearn.mesh.fem import solve_problem
from pyunlearn.mesh.geometry import tangled_cells

N = 8  # 81 nodes, 128 cells: each sample takes ~0.05 s


def _equal_samples(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        if k != "ma_seconds":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_format_and_content(tmp_path):
    out = generate_dataset(tmp_path / "ds", 3, n=N, seed=1, workers=0, progress=False)
    samples = load_dataset(out)
    assert len(samples) == 3 and set(samples[0]) == set(SAMPLE_KEYS)
    s = samples[0]
    P, T = 81, 128
    shapes = {"points": (P, 2), "cells": (T, 3), "boundary": (P,), "monitor": (P,), "target": (P, 2),
              "u_h": (P,), "u_h_ma": (P,), "monitor_ma": (P,), "phi": (P,), "u_exact": (P,), "f": (P,)}
    for k, shape in shapes.items():
        assert s[k].shape == shape, k
    dtypes = {"points": np.float64, "cells": np.int64, "boundary": np.bool_, "edge_index": np.int64,
              "target": np.float64}
    for k, dt in dtypes.items():
        assert s[k].dtype == dt, k
    assert s["edge_index"].shape == (2, 2 * (3 * N * N + 2 * N))
    K = s["z"].size
    assert all(s[k].shape == (K,) for k in ("mu_x", "mu_y", "sigma_x", "sigma_y", "z")) and 1 <= K <= 5
    mesh, prob = sample_mesh(s), sample_problem(s)
    np.testing.assert_array_equal(s["boundary"], mesh.boundary_mask())
    np.testing.assert_allclose(s["u_exact"], prob.u_exact(s["points"]))
    u_h = solve_problem(mesh.points, mesh.cells, prob, s["boundary"])
    np.testing.assert_allclose(s["u_h"], u_h, atol=1e-13)
    assert tangled_cells(mesh, s["target"]) == 0 and int(s["ma_iterations"]) > 5
    assert s["monitor"].min() >= 1.0 and s["monitor"].max() == pytest.approx(6.0)
    er = 100 * (s["error_original"] - s["error_ma"]) / s["error_original"]
    assert float(s["er_ma"]) == pytest.approx(float(er))
    assert float(s["ma_residual"]) < 1e-3 and str(s["equation"]) == "helmholtz"
    # samples differ from each other (different problems), the mesh is shared
    assert not np.allclose(samples[0]["target"], samples[1]["target"])
    np.testing.assert_array_equal(samples[0]["points"], samples[2]["points"])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n"] == N and meta["seed"] == 1 and meta["n_samples"] == 3


def test_deterministic_across_worker_counts_and_matches_make_sample(tmp_path):
    a = load_dataset(generate_dataset(tmp_path / "a", 3, n=N, seed=5, workers=0, progress=False))
    b = load_dataset(generate_dataset(tmp_path / "b", 3, n=N, seed=5, workers=2, progress=False))
    for sa, sb in zip(a, b):
        _equal_samples(sa, sb)
    cfg = json.loads((tmp_path / "a" / "meta.json").read_text())
    _equal_samples(a[2], make_sample(cfg, 2))
    c = load_dataset(generate_dataset(tmp_path / "c", 1, n=N, seed=6, workers=0, progress=False))
    assert not np.allclose(c[0]["target"], a[0]["target"])


def test_cache_skips_complete_files_and_regenerates_corrupt_ones(tmp_path):
    out = generate_dataset(tmp_path, 2, n=N, workers=0, progress=False)
    files = sorted(out.glob("sample_*.npz"))
    stamps = [f.stat().st_mtime_ns for f in files]
    first = load_dataset(out)
    generate_dataset(tmp_path, 2, n=N, workers=0, progress=False)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing rewritten
    files[1].write_bytes(files[1].read_bytes()[:100])  # a truncated file (killed writer)
    generate_dataset(tmp_path, 3, n=N, workers=0, progress=False)  # also extends to 3 samples
    assert files[0].stat().st_mtime_ns == stamps[0]
    again = load_dataset(out)
    assert len(again) == 3
    _equal_samples(again[1], first[1])
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind
    with pytest.raises(ValueError, match=r"different config.*'n': \(8, 10\)"):
        generate_dataset(tmp_path, 2, n=10, workers=0, progress=False)


def test_failures_are_recorded_or_raised(tmp_path):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = generate_dataset(tmp_path / "skip", 2, n=N, maxiter=2, workers=0, progress=False)
    assert any("2 sample(s) failed" in str(x.message) for x in w)
    marker = json.loads((out / "sample_00000.failed.json").read_text())
    assert marker["reason"] == "maxiter"
    with pytest.raises(FileNotFoundError, match="no sample_"):
        load_dataset(out)
    with pytest.raises(RuntimeError, match="sample 0: .*did not converge"):
        generate_dataset(tmp_path / "raise", 1, n=N, maxiter=2, workers=0, progress=False, on_fail="raise")


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="n_samples must be an int >= 1"):
        generate_dataset(tmp_path, 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        generate_dataset(tmp_path, 1, kind="gmsh")
    with pytest.raises(ValueError, match="workers must be an int >= 0"):
        generate_dataset(tmp_path, 1, workers=-1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "missing")
