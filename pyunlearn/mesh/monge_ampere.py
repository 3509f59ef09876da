"""Monge–Ampère mesh movement by relaxation (zo_graph_kernels.md B8.3; movement's
MongeAmpereMover_Relaxation, McRae et al. 2018), numpy/scipy only.

On the fixed computational mesh ξ: φ ∈ P1 and H_φ ∈ (P1)^{2×2}, both starting at 0; pseudo-time step dτ.
Each iteration:

    G  = lumped L2 projection of ∇φ; G_x = 0 where ξ_x ∈ {0, 1}, G_y = 0 where ξ_y ∈ {0, 1}  (sliding)
    X  = ξ + G;  m = monitor(X)
    θ  = ∫ m det(I + H_φ) dξ / |Ω|,   b_i = ∫ ψ_i (m det(I + H_φ) − θ) dξ     (m, H_φ P1; degree-5 rule, so
                                                                            Σ_i b_i = 0 exactly)
    stop when ‖b‖₂ / ‖θ M 1‖₂ < rtol;  fail when it exceeds dtol × the first residual, is not finite,
    or X tangles a cell
    K δ = dτ b (K the Neumann Laplacian pinned at node 0, factorised once); φ ← φ + δ − mean
    H_φ = integration-by-parts Hessian recovery of φ (tangential boundary term, B8.2)

K (pinned) and the recovery operators are built once on ξ, so an iteration costs two triangular solves,
O(P) gathers and the monitor (a PDE solve + recovery in the faithful mode).

    res = monge_ampere(mesh, HelmholtzMonitor(problem, mesh))
    res.points, res.iterations, res.residuals
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu
from tqdm.auto import tqdm

from pyunlearn.mesh.fem import mass, quadrature_points, stiffness
from pyunlearn.mesh.geometry import Mesh, check_in_unit_square
from pyunlearn.mesh.monitor import check_monitor
from pyunlearn.mesh.recovery import Recovery


@dataclass
class MAResult:
    """Outcome of a Monge–Ampère solve: moved points [P, 2], potential φ [P], monitor on the moved mesh [P],
    relaxation steps taken, relative residual per evaluated iterate, converged flag and wall time (s)."""

    points: np.ndarray
    phi: np.ndarray
    monitor: np.ndarray
    iterations: int
    residuals: list = field(default_factory=list)
    converged: bool = False
    seconds: float = 0.0


class MongeAmpereError(RuntimeError):
    """The relaxation failed; ``reason`` is "diverged", "tangled", "maxiter" or "nonfinite", ``result`` holds
    the last iterate (for "tangled": the tangled positions) and the residual history."""

    def __init__(self, message: str, reason: str, result: MAResult):
        super().__init__(message)
        self.reason, self.result = reason, result


def _check_positive(name: str, v, integer: bool = False):
    ok = (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) if integer else \
        (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
    if not ok or v <= 0:
        kind = "an int" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} > 0, got {v!r}")


def monge_ampere(mesh: Mesh, monitor, *, dtau: float = 0.1, rtol: float = 1e-3, maxiter: int = 500,
                 dtol: float = 1e3, lumped: bool = True, raise_on_fail: bool = True,
                 progress: bool = False) -> MAResult:
    """Move ``mesh`` so that m(X) det(∂X/∂ξ) is equidistributed; monitor: callable X [P, 2] -> m [P] (> 0).

    Defaults: dτ = 0.1, rtol = 1e-3, maxiter = 500 (UM2N's MA targets). Raises :class:`MongeAmpereError` on
    divergence, tangling, non-finite values, or (with raise_on_fail) no convergence within maxiter."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a pyunlearn.mesh.Mesh, got {type(mesh).__name__}")
    if not callable(monitor):
        raise TypeError(f"monitor must be a callable X [P, 2] -> m [P], got {type(monitor).__name__}")
    for name, v in (("dtau", dtau), ("rtol", rtol), ("dtol", dtol)):
        _check_positive(name, v)
    _check_positive("maxiter", maxiter, integer=True)
    check_in_unit_square(mesh.points, "mesh points")
    t0 = time.perf_counter()
    xi, cells, P = mesh.points, mesh.cells, mesh.n_points
    rec = Recovery(xi, cells, lumped=lumped, boundary_edges=mesh.boundary_edges())
    K = stiffness(xi, cells)
    lu = splu(sp.csc_matrix(K[1:, 1:]))  # Neumann Laplacian, node 0 pinned (constants are its null space)
    ml = mass(xi, cells, lumped=True)
    area_total = ml.sum()
    _, bary, wq = quadrature_points(xi, cells, 5)  # ψ m det is degree 4: exact
    tol = 1e-12
    slide_x = (np.abs(xi[:, 0]) < tol) | (np.abs(xi[:, 0] - 1) < tol)
    slide_y = (np.abs(xi[:, 1]) < tol) | (np.abs(xi[:, 1] - 1) < tol)
    off_side = mesh.boundary_mask() & ~(slide_x | slide_y)
    if off_side.any():  # the sliding constraint knows the four sides of [0, 1]^2 only
        k = int(np.flatnonzero(off_side)[0])
        raise ValueError(f"monge_ampere supports unit-square meshes only: {int(off_side.sum())} boundary node(s) "
                         f"are not on a side of [0, 1]^2, first is node {k} at {xi[k].tolist()}")

    phi = np.zeros(P)
    H = np.zeros((P, 2, 2))
    residuals: list[float] = []
    result = MAResult(points=xi.copy(), phi=phi, monitor=np.ones(P), iterations=0, residuals=residuals)

    def fail(reason: str, msg: str):
        result.seconds = time.perf_counter() - t0
        raise MongeAmpereError(f"Monge–Ampère relaxation {msg}", reason, result)

    bar = tqdm(total=maxiter, desc="monge-ampere", disable=not progress, leave=False)
    try:
        for it in range(maxiter + 1):
            G = rec.gradient(phi)
            G[slide_x, 0] = 0.0
            G[slide_y, 1] = 0.0
            X = xi + G
            areas = mesh.signed_areas(X)
            n_bad = int((areas <= 1e-12 * np.abs(mesh.signed_areas()).mean()).sum())
            if n_bad:
                result.points, result.phi, result.iterations = X, phi, it  # the tangled iterate, to inspect
                fail("tangled", f"tangled {n_bad} cell(s) at iteration {it} (last residuals "
                                f"{[round(r, 4) for r in residuals[-3:]]})")
            m = check_monitor(monitor(X), P, "monitor(X)")
            result.points, result.phi, result.monitor, result.iterations = X, phi, m, it
            det = (1 + H[:, 0, 0]) * (1 + H[:, 1, 1]) - H[:, 0, 1] * H[:, 1, 0]
            md_q = (m[cells] @ bary.T) * (det[cells] @ bary.T)  # [T, Q] at quadrature points
            theta = float((wq * md_q).sum()) / area_total
            r_q = wq * (md_q - theta)
            b = np.bincount(cells.ravel(), weights=(r_q @ bary).ravel(), minlength=P)
            res = float(np.linalg.norm(b) / np.linalg.norm(theta * ml))
            residuals.append(res)
            if not math.isfinite(res):
                fail("nonfinite", f"produced a non-finite residual at iteration {it}")
            if res < rtol:
                result.converged = True
                break
            if res > dtol * residuals[0]:
                fail("diverged", f"diverged at iteration {it}: residual {res:.3e} > dtol {dtol:g} x initial "
                                 f"{residuals[0]:.3e}")
            if it == maxiter:
                break
            delta = np.zeros(P)
            delta[1:] = lu.solve(dtau * b[1:])
            phi = phi + delta
            phi -= phi.mean()
            H = rec.hessian(phi, boundary="tangential")
            bar.update(1)
            bar.set_postfix(res=f"{res:.2e}")
    finally:
        bar.close()
    result.seconds = time.perf_counter() - t0
    if not result.converged and raise_on_fail:
        fail("maxiter", f"did not converge to rtol {rtol:g} in {maxiter} iterations "
                        f"(last residual {residuals[-1]:.3e})")
    return result
