"""Mesh-movement metrics (zo_graph_kernels.md B6, B8.4): tangled cells, L2 error, error reduction (ER).

Error modes:
* "reference" (default, B8.4): e = (Σ_T Σ_q w_q |T| (u_exact(x_q) − u_h(x_q))²)^{1/2} on the mesh itself
  with a high-order rule (collapsed Gauss, exact to degree 10: 36 points per cell) and the analytic u_exact;
  deterministic, the "true" L2 error of the P1 solution;
* "fine": Firedrake emulation: u_h interpolated (barycentric point location, matplotlib's trapezoid-map
  finder) at the nodes of a 100×100 structured fine mesh, compared with u_exact there in the fine mass-matrix
  norm (UM2N L2-projected instead of interpolating: ER agrees to ~1–2 points, B8.4).

ER = (e_orig − e_adapt)/e_orig in % (positive = the moved mesh is more accurate). A tangled moved mesh has no
meaningful FEM solution: ER is NaN and ``ErrorReport.tangled`` > 0 (error_reduction warns).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from pyunlearn.mesh.fem import l2_norm_error, mass, solve_problem
from pyunlearn.mesh.geometry import Mesh, check_in_unit_square, tangled_cells, unit_square

ERROR_MODES = ("reference", "fine")

__all__ = ["ErrorReport", "compare_errors", "error_reduction", "l2_error", "tangled_cells"]


def _points_cells(mesh_or_points, cells) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(mesh_or_points, Mesh):
        if cells is not None:
            raise ValueError("pass either a Mesh or (points, cells), not a Mesh and cells")
        return mesh_or_points.points, mesh_or_points.cells
    if cells is None:
        raise ValueError("cells is required when mesh_or_points is a points array")
    m = Mesh(mesh_or_points, cells)  # validates shapes, orientation, positive areas
    return m.points, m.cells


def l2_error(mesh_or_points, u_h: np.ndarray, problem, cells: np.ndarray | None = None, *,
             mode: str = "reference", degree: int = 10, fine_n: int = 100) -> float:
    """‖u_exact − u_h‖_{L2} of the P1 field u_h [P] on a mesh (a Mesh, or points [P, 2] with cells [T, 3])."""
    if mode not in ERROR_MODES:
        raise ValueError(f"mode must be one of {ERROR_MODES}, got {mode!r}")
    points, cells = _points_cells(mesh_or_points, cells)
    u_h = np.asarray(u_h, dtype=np.float64)
    if u_h.shape != (len(points),):
        raise ValueError(f"u_h must have shape ({len(points)},), got {u_h.shape}")
    if not np.isfinite(u_h).all():
        raise ValueError("u_h must be finite, got NaN/inf values")
    if mode == "reference":
        return l2_norm_error(points, cells, u_h, problem.u_exact, degree=degree)
    from matplotlib.tri import LinearTriInterpolator, Triangulation

    check_in_unit_square(points)
    fine = unit_square(fine_n, "structured")
    tri = Triangulation(points[:, 0], points[:, 1], cells)
    vals = LinearTriInterpolator(tri, u_h)(fine.points[:, 0], fine.points[:, 1])
    if np.ma.is_masked(vals) and vals.mask.any():
        raise ValueError(f"{int(vals.mask.sum())} fine-mesh node(s) lie outside the mesh (it must cover the "
                         f"unit square for mode 'fine')")
    e = problem.u_exact(fine.points) - np.asarray(vals)
    return float(math.sqrt(max(e @ (mass(fine.points, fine.cells) @ e), 0.0)))


@dataclass
class ErrorReport:
    """e_orig, e_adapt (L2 errors on the original and the moved mesh), ER in % (NaN if tangled), and the
    number of tangled cells."""

    e_orig: float
    e_adapt: float
    er: float
    tangled: int

    def as_dict(self) -> dict:
        return asdict(self)


def compare_errors(mesh: Mesh, moved_points: np.ndarray, problem, *, mode: str = "reference",
                   u_orig: np.ndarray | None = None, u_moved: np.ndarray | None = None) -> ErrorReport:
    """Solve ``problem`` on the original and the moved mesh (unless u_orig / u_moved are given) and
    compare the L2 errors."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a pyunlearn.mesh.Mesh, got {type(mesh).__name__}")
    moved = np.asarray(moved_points, dtype=np.float64)
    if moved.shape != mesh.points.shape:
        raise ValueError(f"moved_points must have shape {mesh.points.shape}, got {moved.shape}")
    bmask = mesh.boundary_mask()
    if u_orig is None:
        u_orig = solve_problem(mesh.points, mesh.cells, problem, bmask)
    e_orig = l2_error(mesh, u_orig, problem, mode=mode)
    n_tangled = tangled_cells(mesh, moved)
    if n_tangled:
        return ErrorReport(e_orig, float("nan"), float("nan"), n_tangled)
    if u_moved is None:
        u_moved = solve_problem(moved, mesh.cells, problem, bmask)
    e_adapt = l2_error(moved, u_moved, problem, mesh.cells, mode=mode)
    return ErrorReport(e_orig, e_adapt, 100.0 * (e_orig - e_adapt) / e_orig, 0)


def error_reduction(mesh: Mesh, moved_points: np.ndarray, problem, *, mode: str = "reference") -> float:
    """ER in % of the moved mesh against the original (B6); NaN with a RuntimeWarning if it tangles."""
    rep = compare_errors(mesh, moved_points, problem, mode=mode)
    if rep.tangled:
        warnings.warn(f"moved mesh has {rep.tangled} tangled cell(s): error reduction is undefined (NaN)",
                      RuntimeWarning, stacklevel=2)
    return rep.er
