"""P1 finite elements on triangles with numpy/scipy (zo_graph_kernels.md B8.1): no Firedrake.

Vectorised assembly: per-cell (T, 3, 3) matrices by einsum, one scipy COO -> CSR (duplicates summed).

* stiffness K_ab = |T| ∇ψ_a·∇ψ_b; consistent mass M_ab = |T|/12 (1 + δ_ab); lumped mass |T|/3;
* load F_a = Σ_q w_q |T| f(x_q) ψ_a(x_q) with a triangle rule of degree >= 4 (default: Radon's 7-point
  degree-5 rule, as the B8.4 sanity reference);
* Helmholtz (K + M) u = F or Poisson K u = F, Dirichlet u = g on boundary nodes by symmetric elimination
  (known values moved to the right-hand side, the interior block factorised with SuperLU).

Functions take (points, cells) arrays rather than a Mesh so that moved vertex positions of a fixed
topology can be assembled directly; every cell must still have positive signed area (checked).

    u = solve_problem(mesh.points, mesh.cells, problem, mesh.boundary_mask())
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

EQUATIONS = ("helmholtz", "poisson")


@cache
def triangle_rule(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature on a triangle exact for polynomials of total degree ``degree``.

    Returns barycentric points [Q, 3] and weights [Q] summing to 1 (multiply by |T|). Degree <= 1: centroid;
    2: 3-point (Strang–Fix); 3–5: Radon's 7-point degree-5 rule; > 5: collapsed (Duffy) Gauss–Legendre
    tensor rule with q = ceil((degree + 2)/2) points per direction (q² points)."""
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise ValueError(f"degree must be an int >= 0, got {degree!r}")
    if degree <= 1:
        bary, w = np.array([[1 / 3, 1 / 3, 1 / 3]]), np.array([1.0])
    elif degree == 2:
        bary = np.array([[2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3]])
        w = np.full(3, 1 / 3)
    elif degree <= 5:
        s15 = math.sqrt(15.0)
        a1, a2 = (6 - s15) / 21, (6 + s15) / 21
        w1, w2 = (155 - s15) / 1200, (155 + s15) / 1200
        bary = np.array([[1 / 3, 1 / 3, 1 / 3],
                         [a1, a1, 1 - 2 * a1], [a1, 1 - 2 * a1, a1], [1 - 2 * a1, a1, a1],
                         [a2, a2, 1 - 2 * a2], [a2, 1 - 2 * a2, a2], [1 - 2 * a2, a2, a2]])
        w = np.array([9 / 40, w1, w1, w1, w2, w2, w2])
    else:
        q = math.ceil((degree + 2) / 2)
        x, wx = np.polynomial.legendre.leggauss(q)
        s, ws = (x + 1) / 2, wx / 2  # Gauss–Legendre on [0, 1]
        S, T = np.meshgrid(s, s, indexing="ij")
        WS, WT = np.meshgrid(ws, ws, indexing="ij")
        xi, eta = S.ravel(), (T * (1 - S)).ravel()  # (s, t) in [0,1]^2 -> (xi, eta) in the unit triangle
        w = 2 * (WS * WT * (1 - S)).ravel()  # Jacobian (1 - s); reference area 1/2 -> weights sum to 1
        bary = np.stack([1 - xi - eta, xi, eta], 1)
    bary.setflags(write=False)
    w.setflags(write=False)
    return bary, w


def p1_gradients(points: np.ndarray, cells: np.ndarray, *,
                 check: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Cell areas [T] and constant P1 shape-function gradients [T, 3, 2]:
    ∇ψ_a = rot(p_b − p_c)/(2 A) with (a, b, c) cyclic and rot(x, y) = (y, −x).

    With check=True any cell of signed area <= 0 raises ValueError (FEM on a tangled mesh is meaningless)."""
    p = points[cells]  # [T, 3, 2]
    d = p[:, [1, 2, 0]] - p[:, [2, 0, 1]]  # p_b − p_c for a = 0, 1, 2
    area2 = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 1, 1] - p[:, 0, 1]) * (
        p[:, 2, 0] - p[:, 0, 0])
    if check:
        bad = np.flatnonzero(~(area2 > 0))
        if bad.size:
            raise ValueError(f"{bad.size} cell(s) have signed area <= 0 (inverted/degenerate mesh); first is "
                             f"cell {bad[0]} = {cells[bad[0]].tolist()} with area {area2[bad[0]] / 2:.3e}")
    grads = np.stack([d[..., 1], -d[..., 0]], -1) / area2[:, None, None]
    return area2 / 2, grads


def _coo(cells: np.ndarray, local: np.ndarray, n: int) -> sp.csr_matrix:
    rows = np.broadcast_to(cells[:, :, None], local.shape).ravel()
    cols = np.broadcast_to(cells[:, None, :], local.shape).ravel()
    return sp.coo_matrix((local.ravel(), (rows, cols)), shape=(n, n)).tocsr()


def stiffness(points: np.ndarray, cells: np.ndarray) -> sp.csr_matrix:
    """P1 stiffness matrix K [P, P] (CSR)."""
    area, g = p1_gradients(points, cells)
    return _coo(cells, area[:, None, None] * np.einsum("tad,tbd->tab", g, g), len(points))


_MASS_LOCAL = (np.ones((3, 3)) + np.eye(3)) / 12.0


def mass(points: np.ndarray, cells: np.ndarray, *, lumped: bool = False):
    """Consistent mass matrix M [P, P] (CSR), or with lumped=True the lumped diagonal [P] (|T|/3 per
    vertex)."""
    area, _ = p1_gradients(points, cells)
    if lumped:
        return np.bincount(cells.ravel(), weights=np.repeat(area / 3, 3), minlength=len(points))
    return _coo(cells, area[:, None, None] * _MASS_LOCAL, len(points))


def quadrature_points(points: np.ndarray, cells: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
    """Physical quadrature points [T, Q, 2], barycentric coordinates [Q, 3] and weights [T, Q] (incl. |T|)."""
    bary, w = triangle_rule(degree)
    area, _ = p1_gradients(points, cells)
    xq = np.einsum("qa,tad->tqd", bary, points[cells])
    return xq, bary, area[:, None] * w[None, :]


def load(points: np.ndarray, cells: np.ndarray, f, *, degree: int = 5) -> np.ndarray:
    """Load vector F [P], F_a = ∫ f ψ_a by a degree-``degree`` rule (>= 4 required; f: callable of
    xy [..., 2])."""
    if degree < 4:
        raise ValueError(f"degree must be >= 4 for the load vector (B8.1), got {degree}")
    xq, bary, wq = quadrature_points(points, cells, degree)
    fq = np.asarray(f(xq), dtype=np.float64)
    if fq.shape != xq.shape[:2]:
        raise ValueError(f"f must map xy [T, Q, 2] to [T, Q], got shape {fq.shape}")
    local = np.einsum("tq,qa->ta", wq * fq, bary)
    return np.bincount(cells.ravel(), weights=local.ravel(), minlength=len(points))


def solve_dirichlet(A: sp.spmatrix, F: np.ndarray, boundary: np.ndarray, g_b: np.ndarray) -> np.ndarray:
    """Solve A u = F with u = g_b on ``boundary`` nodes by symmetric elimination:
    A_II u_I = F_I − A_IB g_b (SuperLU on the interior block)."""
    boundary = np.asarray(boundary, dtype=bool)
    if boundary.shape != (A.shape[0],):
        raise ValueError(f"boundary must be a bool mask of shape ({A.shape[0]},), got {boundary.shape}")
    A = sp.csr_matrix(A)
    inner = ~boundary
    u = np.zeros(A.shape[0])
    u[boundary] = g_b
    if inner.any():
        rhs = F[inner] - A[inner][:, boundary] @ g_b
        u[inner] = splu(sp.csc_matrix(A[inner][:, inner])).solve(rhs)
    return u


def solve_pde(points: np.ndarray, cells: np.ndarray, f, g, boundary: np.ndarray, *,
              equation: str = "helmholtz", degree: int = 5) -> np.ndarray:
    """P1 solution u_h [P] of −Δu + u = f ("helmholtz") or −Δu = f ("poisson") with u = g on boundary nodes.

    f, g: callables of xy [..., 2]; boundary: bool [P] (for Poisson it must be non-empty)."""
    if equation not in EQUATIONS:
        raise ValueError(f"equation must be one of {EQUATIONS}, got {equation!r}")
    boundary = np.asarray(boundary, dtype=bool)
    if equation == "poisson" and not boundary.any():
        raise ValueError("the Poisson problem needs at least one Dirichlet (boundary) node, got none")
    A = stiffness(points, cells)
    if equation == "helmholtz":
        A = A + mass(points, cells)
    F = load(points, cells, f, degree=degree)
    return solve_dirichlet(A, F, boundary, np.asarray(g(points[boundary]), dtype=np.float64))


def solve_problem(points: np.ndarray, cells: np.ndarray, problem, boundary: np.ndarray, *,
                  degree: int = 5) -> np.ndarray:
    """Solve a :class:`~pyunlearn.mesh.problems.HelmholtzProblem` (its equation, f, Dirichlet u_exact)."""
    return solve_pde(points, cells, problem.f, problem.u_exact, boundary, equation=problem.equation,
                     degree=degree)


def l2_norm_error(points: np.ndarray, cells: np.ndarray, u_h: np.ndarray, u_exact, *,
                  degree: int = 10) -> float:
    """‖u_exact − u_h‖_{L2} by a degree-``degree`` rule on the mesh itself (u_h is P1, u_exact analytic)."""
    u_h = np.asarray(u_h, dtype=np.float64)
    if u_h.shape != (len(points),):
        raise ValueError(f"u_h must have shape ({len(points)},), got {u_h.shape}")
    xq, bary, wq = quadrature_points(points, cells, degree)
    uq = np.einsum("qa,ta->tq", bary, u_h[cells])
    diff = np.asarray(u_exact(xq), dtype=np.float64) - uq
    return float(math.sqrt(max((wq * diff * diff).sum(), 0.0)))


def h1_seminorm_error(points: np.ndarray, cells: np.ndarray, u_h: np.ndarray, grad_exact, *,
                      degree: int = 10) -> float:
    """|u_exact − u_h|_{H1} = ‖∇u_exact − ∇u_h‖_{L2} (∇u_h constant per cell)."""
    _, grads = p1_gradients(points, cells)
    gh = np.einsum("tad,ta->td", grads, np.asarray(u_h, dtype=np.float64)[cells])
    xq, _, wq = quadrature_points(points, cells, degree)
    diff = np.asarray(grad_exact(xq)) - gh[:, None, :]
    return float(math.sqrt((wq * (diff**2).sum(-1)).sum()))
