"""UM2N training data: random Helmholtz problems (B5) and their Monge–Ampère target meshes, cached on disk.

    out = generate_dataset("data/helmholtz_20", 100, n=20, seed=0)   # parallel, resumable
    samples = load_dataset(out)                                      # list of dicts of numpy arrays
    mesh, problem = sample_mesh(samples[0]), sample_problem(samples[0])

Layout: ``out_dir/meta.json`` (the generation config; a later call with a different config on the same folder
is an error) and one ``sample_{i:05d}.npz`` per sample, written atomically (temporary file + os.replace), so
an interrupted run leaves only complete files and a rerun skips them. A sample whose Monge–Ampère solve
fails leaves ``sample_{i:05d}.failed.json`` with the reason (skipped on reruns and by load_dataset) when
on_fail="skip"; on_fail="raise" stops instead.

Sample i depends only on (seed, i): problem rng = numpy default_rng([seed, i]); the mesh is the same for all
samples of a dataset (unit_square(n, kind, seed=mesh_seed)), so every sample has the same node count.

Keys of a sample (P nodes, T cells, E directed edges, K Gaussians):
    points [P,2] f64 (original mesh ξ), cells [T,3] i64 (CCW), boundary [P] bool, edge_index [2,E] i64,
    monitor [P] f64 (m on the original mesh), target [P,2] f64 (MA-moved points), u_h [P] f64 (P1 solution on
    the original mesh), u_h_ma [P] f64 (on the MA mesh), monitor_ma [P] f64 (m on the MA mesh),
    phi [P] f64 (MA potential), u_exact [P] f64, f [P] f64 (at the original nodes),
    mu_x, mu_y, sigma_x, sigma_y, z [K] f64 (problem parameters), equation str,
    ma_iterations i64, ma_residual f64 (final relative residual), ma_seconds f64, ma_monitor_calls i64,
    error_original, error_ma f64 (L2 errors, B8.4 reference mode), er_ma f64 (ER in %), sample i64, seed i64.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pyunlearn.mesh.geometry import KINDS, Mesh, unit_square
from pyunlearn.mesh.metrics import compare_errors
from pyunlearn.mesh.monge_ampere import MongeAmpereError, monge_ampere
from pyunlearn.mesh.monitor import MODES, HelmholtzMonitor
from pyunlearn.mesh.problems import CENTRES, DISTS, EQUATIONS, PARAM_KEYS, HelmholtzProblem, random_problem

SAMPLE_KEYS = ("points", "cells", "boundary", "edge_index", "monitor", "target", "u_h", "u_h_ma",
               "monitor_ma", "phi", "u_exact", "f", *PARAM_KEYS, "equation", "ma_iterations", "ma_residual",
               "ma_seconds", "ma_monitor_calls", "error_original", "error_ma", "er_ma", "sample", "seed")
ON_FAIL = ("skip", "raise")
# Config entries that change what a sample holds (meta.json must match on reuse); n_samples may grow.
_CONFIG_KEYS = ("n", "kind", "seed", "mesh_seed", "mode", "dist", "centres", "equation", "alpha", "dtau",
                "rtol", "maxiter")


def _sample_path(out: Path, i: int) -> Path:
    return out / f"sample_{i:05d}.npz"


def _failed_path(out: Path, i: int) -> Path:
    return out / f"sample_{i:05d}.failed.json"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _is_complete(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        with np.load(path) as z:
            return all(k in z.files for k in SAMPLE_KEYS)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # truncated / corrupt (not ours: we write
        # atomically): regenerate it
        return False


def make_sample(cfg: dict, i: int) -> dict[str, np.ndarray]:
    """Build sample i of a dataset config (see generate_dataset) in memory; MongeAmpereError on MA failure."""
    mesh = unit_square(cfg["n"], cfg["kind"], seed=cfg["mesh_seed"])
    rng = np.random.default_rng([cfg["seed"], i])
    problem = random_problem(rng, cfg["dist"], cfg["centres"], cfg["equation"])
    mon = HelmholtzMonitor(problem, mesh, mode=cfg["mode"], alpha=cfg["alpha"])
    m0 = mon(mesh.points)
    u0 = mon.last_u if mon.last_u is not None else mon.solve(mesh.points)
    res = monge_ampere(mesh, mon, dtau=cfg["dtau"], rtol=cfg["rtol"], maxiter=cfg["maxiter"])
    u_ma = mon.last_u if cfg["mode"] == "faithful" else mon.solve(res.points)  # faithful: last call was on X
    rep = compare_errors(mesh, res.points, problem, u_orig=u0, u_moved=u_ma)
    out = {
        "points": mesh.points, "cells": mesh.cells, "boundary": mesh.boundary_mask(),
        "edge_index": mesh.edge_index(), "monitor": m0, "target": res.points, "u_h": u0, "u_h_ma": u_ma,
        "monitor_ma": res.monitor, "phi": res.phi, "u_exact": problem.u_exact(mesh.points),
        "f": problem.f(mesh.points), **problem.to_arrays(), "equation": np.array(problem.equation),
        "ma_iterations": np.int64(res.iterations), "ma_residual": np.float64(res.residuals[-1]),
        "ma_seconds": np.float64(res.seconds), "ma_monitor_calls": np.int64(mon.calls - 1),
        "error_original": np.float64(rep.e_orig), "error_ma": np.float64(rep.e_adapt),
        "er_ma": np.float64(rep.er), "sample": np.int64(i), "seed": np.int64(cfg["seed"]),
    }
    return {k: np.asarray(v) for k, v in out.items()}


def _generate_one(cfg: dict, out: str, i: int, on_fail: str) -> tuple[int, str]:
    """Worker: make and write sample i; returns (i, "ok" | failure reason)."""
    out = Path(out)
    try:
        arrays = make_sample(cfg, i)
    except MongeAmpereError as e:
        if on_fail == "raise":
            raise RuntimeError(f"sample {i}: {e}") from e
        info = {"sample": i, "reason": e.reason, "message": str(e), "residuals_tail": e.result.residuals[-5:]}
        _atomic_write(_failed_path(out, i), lambda fh: fh.write(json.dumps(info, indent=1).encode()))
        return i, e.reason
    _atomic_write(_sample_path(out, i), lambda fh: np.savez(fh, **arrays))
    return i, "ok"


def generate_dataset(out_dir, n_samples: int, *, n: int = 20, kind: str = "structured", seed: int = 0,
                     workers: int | None = None, progress: bool = True, mode: str = "faithful",
                     dist: str = "aniso", centres: str = "full", equation: str = "helmholtz",
                     alpha: float = 5.0, dtau: float = 0.1, rtol: float = 1e-3, maxiter: int = 500,
                     mesh_seed: int | None = None, on_fail: str = "skip") -> Path:
    """Generate samples 0..n_samples-1 into ``out_dir`` (created), skipping complete ones; returns the folder.

    workers: processes (default min(4, cpu count)); 0 or 1 runs in this process. mode: the monitor mode
    ("faithful" re-solves each MA iteration, as UM2N). mesh_seed defaults to seed. See the module docstring
    for the file format."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    for name, val, allowed in (("kind", kind, KINDS), ("mode", mode, MODES), ("dist", dist, DISTS),
                               ("centres", centres, tuple(CENTRES)), ("equation", equation, EQUATIONS),
                               ("on_fail", on_fail, ON_FAIL)):
        if val not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {val!r}")
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an int >= 0 or None, got {workers!r}")
    cfg = {"n": int(n), "kind": kind, "seed": int(seed),
           "mesh_seed": int(seed if mesh_seed is None else mesh_seed),
           "mode": mode, "dist": dist, "centres": centres, "equation": equation, "alpha": float(alpha),
           "dtau": float(dtau), "rtol": float(rtol), "maxiter": int(maxiter)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        diff = {k: (old.get(k), cfg[k]) for k in _CONFIG_KEYS if old.get(k) != cfg[k]}
        if diff:
            raise ValueError(f"{out} holds a dataset generated with a different config (key: (existing, "
                             f"requested)) {diff}; use another out_dir")
    meta = {**cfg, "n_samples": max(int(n_samples), json.loads(meta_path.read_text()).get("n_samples", 0)
                                    if meta_path.exists() else 0), "format": list(SAMPLE_KEYS)}
    _atomic_write(meta_path, lambda fh: fh.write(json.dumps(meta, indent=1).encode()))

    todo = [i for i in range(n_samples)
            if not _failed_path(out, i).exists() and not _is_complete(_sample_path(out, i))]
    failed: list[tuple[int, str]] = []
    bar = tqdm(total=n_samples, initial=n_samples - len(todo), desc="mesh dataset", disable=not progress)
    try:
        if workers <= 1 or len(todo) <= 1:
            for i in todo:
                _, status = _generate_one(cfg, str(out), i, on_fail)
                if status != "ok":
                    failed.append((i, status))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
                futures = [pool.submit(_generate_one, cfg, str(out), i, on_fail) for i in todo]
                for fut in as_completed(futures):
                    i, status = fut.result()
                    if status != "ok":
                        failed.append((i, status))
                    bar.update(1)
    finally:
        bar.close()
    if failed:
        warnings.warn(f"{len(failed)} sample(s) failed Monge–Ampère and were skipped: {sorted(failed)[:10]} "
                      f"(see {out}/sample_*.failed.json)", RuntimeWarning, stacklevel=2)
    return out


def load_dataset(data_dir) -> list[dict[str, np.ndarray]]:
    """All complete samples of a generated folder, in sample order, as dicts of numpy arrays (in memory)."""
    d = Path(data_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"dataset folder {d} does not exist")
    files = sorted(d.glob("sample_*.npz"))
    if not files:
        raise FileNotFoundError(f"dataset folder {d} holds no sample_*.npz files (run generate_dataset "
                                f"first)")
    samples = []
    for p in files:
        with np.load(p) as z:
            missing = [k for k in SAMPLE_KEYS if k not in z.files]
            if missing:
                raise ValueError(f"{p} is not a complete sample: missing keys {missing}")
            samples.append({k: z[k] for k in z.files})
    return samples


def sample_mesh(sample: dict) -> Mesh:
    """The original mesh of a sample."""
    return Mesh(sample["points"], sample["cells"])


def sample_problem(sample: dict) -> HelmholtzProblem:
    """The Helmholtz/Poisson problem of a sample."""
    return HelmholtzProblem.from_arrays(sample, equation=str(sample.get("equation", "helmholtz")))
