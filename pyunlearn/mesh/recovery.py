"""Gradient and Hessian recovery of P1 fields (zo_graph_kernels.md B8.2).

* gradient: L2 projection of the piecewise-constant ∇u_h onto P1, M g = Σ_T |T|/3 (∇u)_T at each vertex
  (lumped M: the area-weighted average of the cell gradients around a vertex);
* Hessian by integration by parts (as UM2N / movement do; NOT the "double L2 projection" of ∇ of the
  projected gradient, which stalls the Monge–Ampère iteration and tangles meshes, B8.2):

      (M H_kl)_i = −Σ_T |T| (∂_l ψ_i)_T (∂_k u)_T + Σ_{boundary edges e ∋ i} (|e|/2) b_k n_l

  with n the outward normal of e and b the gradient of the cell owning e: the full gradient
  (``boundary="full"``, exact zero Hessian for linear u) or its tangential part b = ∇u − (∇u·n) n
  (``boundary="tangential"``, B8.2/B8.3 for the Monge–Ampère potential whose normal derivative vanishes);
  then H ← (H + Hᵀ)/2.

    rec = Recovery(points, cells)               # geometry, boundary edges and the mass factorisation, once
    g = rec.gradient(u)                          # [P, 2]
    H = rec.hessian(u)                           # [P, 2, 2]
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from pyunlearn.mesh.fem import mass, p1_gradients
from pyunlearn.mesh.geometry import boundary_edges_of

BOUNDARY_TERMS = ("full", "tangential", "none")


class Recovery:
    """Recovery operators of one (points, cells) geometry; ``lumped`` picks the lumped or consistent mass."""

    def __init__(self, points: np.ndarray, cells: np.ndarray, *, lumped: bool = True,
                 boundary_edges: tuple[np.ndarray, np.ndarray] | None = None):
        self.points, self.cells, self.lumped = points, cells, lumped
        self.n = len(points)
        self.area, self.grads = p1_gradients(points, cells)  # [T], [T, 3, 2]
        edges, owner = boundary_edges if boundary_edges is not None else boundary_edges_of(cells)
        d = points[edges[:, 1]] - points[edges[:, 0]]
        length = np.linalg.norm(d, axis=1)
        self._bd_edges, self._bd_owner = edges, owner
        self._bd_half = length / 2  # ∫_e ψ_i = |e|/2 for either end vertex
        self._bd_normal = np.stack([d[:, 1], -d[:, 0]], 1) / length[:, None]  # outward: interior on the left
        if lumped:
            self._ml = mass(points, cells, lumped=True)
        else:
            self._lu = splu(sp.csc_matrix(mass(points, cells)))

    def _solve_mass(self, rhs: np.ndarray) -> np.ndarray:
        flat = rhs.reshape(self.n, -1)
        out = flat / self._ml[:, None] if self.lumped else self._lu.solve(flat)
        return out.reshape(rhs.shape)

    def cell_gradients(self, u: np.ndarray) -> np.ndarray:
        """(∇u_h)_T [T, 2] of the P1 field u [P]."""
        u = np.asarray(u, dtype=np.float64)
        if u.shape != (self.n,):
            raise ValueError(f"u must have shape ({self.n},) (one value per node), got {u.shape}")
        if not np.isfinite(u).all():
            raise ValueError("u must be finite, got NaN/inf values")
        return np.einsum("tad,ta->td", self.grads, u[self.cells])

    def gradient(self, u: np.ndarray) -> np.ndarray:
        """Recovered nodal gradient [P, 2]."""
        gc = self.cell_gradients(u)
        rhs = np.zeros((self.n, 2))
        w = (self.area / 3)[:, None] * gc  # [T, 2], the same for the 3 vertices
        for a in range(3):
            np.add.at(rhs, self.cells[:, a], w)
        return self._solve_mass(rhs)

    def hessian(self, u: np.ndarray, *, boundary: str = "full") -> np.ndarray:
        """Recovered symmetric nodal Hessian [P, 2, 2] by integration by parts."""
        if boundary not in BOUNDARY_TERMS:
            raise ValueError(f"boundary must be one of {BOUNDARY_TERMS}, got {boundary!r}")
        gc = self.cell_gradients(u)
        # −|T| (∂_l ψ_a)(∂_k u): local [T, 3, k, l]
        local = -self.area[:, None, None, None] * np.einsum("tk,tal->takl", gc, self.grads)
        rhs = np.zeros((self.n, 2, 2))
        np.add.at(rhs, self.cells.ravel(), local.reshape(-1, 2, 2))
        if boundary != "none" and len(self._bd_edges):
            b = gc[self._bd_owner]  # [B, 2]
            n = self._bd_normal
            if boundary == "tangential":
                b = b - (b * n).sum(1, keepdims=True) * n
            term = self._bd_half[:, None, None] * np.einsum("bk,bl->bkl", b, n)
            np.add.at(rhs, self._bd_edges[:, 0], term)
            np.add.at(rhs, self._bd_edges[:, 1], term)
        H = self._solve_mass(rhs)
        return 0.5 * (H + H.transpose(0, 2, 1))


def recover_gradient(points: np.ndarray, cells: np.ndarray, u: np.ndarray, *,
                     lumped: bool = True) -> np.ndarray:
    """Nodal gradient [P, 2] of the P1 field u [P] (L2 projection, lumped mass by default)."""
    return Recovery(points, cells, lumped=lumped).gradient(u)


def recover_hessian(points: np.ndarray, cells: np.ndarray, u: np.ndarray, *, lumped: bool = True,
                    boundary: str = "full") -> np.ndarray:
    """Nodal Hessian [P, 2, 2] of the P1 field u [P] by integration by parts (B8.2)."""
    return Recovery(points, cells, lumped=lumped).hessian(u, boundary=boundary)
