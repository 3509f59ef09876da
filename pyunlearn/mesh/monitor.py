"""Hessian-based monitor functions (zo_graph_kernels.md B5, B8.2): m = 1 + α ‖H‖_F² / max_nodes ‖H‖_F².

‖H‖_F² is the SQUARED Frobenius norm (H00² + H01² + H10² + H11², as UM2N's code), α = 5 (UM2N default).

Modes of :class:`HelmholtzMonitor` (a callable moved-points [P, 2] -> m [P] for the Monge–Ampère mover):
* "faithful": re-solve the PDE on the current moved mesh and recover its Hessian by integration by parts at
  every call (what UM2N's targets do; the dominant cost of MA);
* "fast": solve once on a fixed ``grid`` × ``grid`` structured background mesh, recover m there and
  interpolate it bilinearly to the moved nodes;
* "analytic": m from the exact Hessian of u_exact at the moved nodes (no PDE solve).
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from pyunlearn.mesh.fem import solve_problem
from pyunlearn.mesh.geometry import Mesh, check_in_unit_square, unit_square
from pyunlearn.mesh.recovery import Recovery

MODES = ("faithful", "fast", "analytic")


def check_monitor(m, n_points: int, name: str = "monitor") -> np.ndarray:
    """m as a float64 [n_points] array of finite values > 0; ValueError naming the problem otherwise."""
    m = np.asarray(m)
    if m.shape != (n_points,):
        raise ValueError(f"{name} must have shape ({n_points},) (one value per node), got {m.shape}")
    m = m.astype(np.float64, copy=False)
    bad = ~np.isfinite(m)
    if bad.any():
        raise ValueError(f"{name} values must be finite, got {int(bad.sum())} NaN/inf value(s), first at "
                         f"node {int(np.flatnonzero(bad)[0])}")
    if (m <= 0).any():
        raise ValueError(f"{name} values must be > 0, got min {m.min():.3e}")
    return m


def hessian_monitor_values(H: np.ndarray, alpha: float = 5.0) -> np.ndarray:
    """m [P] = 1 + α ‖H‖_F² / max ‖H‖_F² from nodal Hessians H [P, 2, 2] (m ≡ 1 when H ≡ 0)."""
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 3 or H.shape[1:] != (2, 2):
        raise ValueError(f"H must have shape [P, 2, 2], got {H.shape}")
    if not np.isfinite(H).all():
        raise ValueError("H must be finite, got NaN/inf Hessian values")
    fro2 = (H * H).sum((1, 2))
    top = fro2.max()
    return 1.0 + alpha * (fro2 / top if top > 0 else fro2)


class HelmholtzMonitor:
    """Monitor of a Helmholtz/Poisson problem on a fixed mesh topology: ``monitor(X)`` -> m [P] at moved
    positions X [P, 2] (same node order as ``mesh``). After a faithful call, ``last_u`` holds the P1
    solution on X.

    boundary: the IBP Hessian's boundary term ("full" default for the PDE solution; see recovery.py)."""

    def __init__(self, problem, mesh: Mesh, *, mode: str = "faithful", alpha: float = 5.0,
                 lumped: bool = True, boundary: str = "full", grid: int = 200, degree: int = 5):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not (np.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        self.problem, self.mesh, self.mode, self.alpha = problem, mesh, mode, float(alpha)
        self.lumped, self.boundary, self.degree = lumped, boundary, degree
        self._bmask = mesh.boundary_mask()
        self._bedges = mesh.boundary_edges()
        self.last_u: np.ndarray | None = None
        self.calls = 0
        if mode == "fast":
            bg = unit_square(grid, "structured")
            u = solve_problem(bg.points, bg.cells, problem, bg.boundary_mask(), degree=degree)
            H = Recovery(bg.points, bg.cells, lumped=lumped).hessian(u, boundary=boundary)
            m = hessian_monitor_values(H, self.alpha).reshape(grid + 1, grid + 1)  # [y, x] node order
            xs = np.linspace(0.0, 1.0, grid + 1)
            self._interp = RegularGridInterpolator((xs, xs), m.T, method="linear")

    def solve(self, X: np.ndarray) -> np.ndarray:
        """P1 solution [P] on the mesh at positions X."""
        return solve_problem(X, self.mesh.cells, self.problem, self._bmask, degree=self.degree)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.shape != self.mesh.points.shape:
            raise ValueError(f"X must have shape {self.mesh.points.shape}, got {X.shape}")
        self.calls += 1
        if self.mode == "faithful":
            u = self.solve(X)
            self.last_u = u
            H = Recovery(X, self.mesh.cells, lumped=self.lumped, boundary_edges=self._bedges).hessian(
                u, boundary=self.boundary)
            m = hessian_monitor_values(H, self.alpha)
        elif self.mode == "fast":
            check_in_unit_square(X, "moved points")
            m = self._interp(np.clip(X, 0.0, 1.0))
        else:
            m = hessian_monitor_values(self.problem.hessian_exact(X), self.alpha)
        return check_monitor(m, len(X))
