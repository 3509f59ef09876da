"""Triangle meshes of the unit square (zo_graph_kernels.md B5, B8): structured, perturbed and unstructured.

A :class:`Mesh` is validated on construction: ``points`` float64 [P, 2] finite, ``cells`` int64 [T, 3] with
indices in range, every cell counter-clockwise with strictly positive signed area (an inverted or degenerate
input mesh is an error, never silently reoriented). Moved vertex positions are plain arrays passed next to a
mesh (``signed_areas(points)``, :func:`tangled_cells`), so a tangled movement never needs a ``Mesh``.

    mesh = unit_square(20)                                   # 441 nodes, 800 cells, Firedrake "left" diagonal
    mesh = unit_square(20, "unstructured", seed=3)           # Delaunay of jittered points, 4n boundary nodes
    tangled_cells(mesh, moved)                               # cells whose signed area is <= 0 after moving
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.spatial import Delaunay

KINDS = ("structured", "perturbed", "unstructured")
DIAGONALS = ("left", "right", "crisscross")

# Relative area below which a cell counts as degenerate (area / mean area); also the sign tolerance of the
# tangling check: floating-point noise on a flat cell must not count as valid.
_AREA_RTOL = 1e-12


def _check_points(points, name: str = "points") -> np.ndarray:
    """points as a finite float64 [P, 2] array (a copy is never made when it already is one)."""
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"{name} must be an array of shape [P, 2], got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.floating):
        raise ValueError(f"{name} must be a floating-point array, got dtype {p.dtype}")
    p = p.astype(np.float64, copy=False)
    if not np.isfinite(p).all():
        n_bad = int((~np.isfinite(p)).any(axis=1).sum())
        raise ValueError(f"{name} must be finite, got {n_bad} non-finite row(s)")
    return p


def _check_cells(cells, n_points: int) -> np.ndarray:
    """cells as an int64 [T, 3] array of node indices in [0, n_points)."""
    c = np.asarray(cells)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"cells must be triangles, an integer array of shape [T, 3], got shape {c.shape}")
    if c.shape[0] == 0:
        raise ValueError("cells must hold at least one triangle, got 0")
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"cells must be an integer array, got dtype {c.dtype}")
    c = c.astype(np.int64, copy=False)
    if c.min() < 0 or c.max() >= n_points:
        raise ValueError(f"cells must index points in [0, {n_points}), got range [{c.min()}, {c.max()}]")
    if ((c[:, 0] == c[:, 1]) | (c[:, 1] == c[:, 2]) | (c[:, 0] == c[:, 2])).any():
        raise ValueError("cells must have 3 distinct vertices each, got a cell with a repeated vertex")
    return c


def signed_areas_of(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Signed areas [T] = ½ det[p1 − p0, p2 − p0] (positive for counter-clockwise cells)."""
    p0, p1, p2 = points[cells[:, 0]], points[cells[:, 1]], points[cells[:, 2]]
    d1, d2 = p1 - p0, p2 - p0
    return 0.5 * (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0])


def boundary_edges_of(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boundary edges [B, 2] of counter-clockwise ``cells`` (edges of exactly one cell), directed as in their
    cell (so counter-clockwise around the domain, interior on the left), and the owning cell index [B]."""
    directed = np.concatenate([cells[:, [0, 1]], cells[:, [1, 2]], cells[:, [2, 0]]])  # [3T, 2]
    owner = np.tile(np.arange(len(cells)), 3)
    key = np.sort(directed, axis=1)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    on_bd = counts[inv.ravel()] == 1
    return directed[on_bd], owner[on_bd]


@dataclass(eq=False)
class Mesh:
    """A valid triangle mesh: points float64 [P, 2], cells int64 [T, 3] counter-clockwise (signed area > 0).

    Raises ValueError for non-triangular cells, out-of-range indices, non-finite points, or any cell with
    signed area <= 0 (an inverted or degenerate mesh), naming how many and the first offending cell.
    """

    points: np.ndarray  # [P, 2] float64
    cells: np.ndarray  # [T, 3] int64, counter-clockwise
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.points = _check_points(self.points)
        self.cells = _check_cells(self.cells, len(self.points))
        areas = signed_areas_of(self.points, self.cells)
        tol = _AREA_RTOL * np.abs(areas).mean()
        bad = np.flatnonzero(areas <= tol)
        if bad.size:
            raise ValueError(
                f"mesh has {bad.size} inverted or degenerate cell(s) (signed area <= 0; cells must be "
                f"counter-clockwise): first is cell {bad[0]} = {self.cells[bad[0]].tolist()} with area "
                f"{areas[bad[0]]:.3e}")
        used = np.zeros(len(self.points), dtype=bool)
        used[self.cells.ravel()] = True
        if not used.all():
            raise ValueError(f"mesh has {int((~used).sum())} point(s) not referenced by any cell, "
                             f"first is point {int(np.flatnonzero(~used)[0])}")

    @property
    def n_points(self) -> int:
        return len(self.points)

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    def signed_areas(self, points: np.ndarray | None = None) -> np.ndarray:
        """Signed cell areas [T] of this topology at ``points`` (default: the mesh's own points)."""
        p = self.points if points is None else _check_points(points)
        if len(p) != self.n_points:
            raise ValueError(f"points must have {self.n_points} rows (one per mesh node), got {len(p)}")
        return signed_areas_of(p, self.cells)

    @cached_property
    def _edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Unique undirected edges [E_u, 2] (sorted pairs) and how many cells hold each."""
        c = self.cells
        e = np.concatenate([c[:, [0, 1]], c[:, [1, 2]], c[:, [2, 0]]])
        e.sort(axis=1)
        uniq, counts = np.unique(e, axis=0, return_counts=True)
        if counts.max() > 2:
            raise ValueError("mesh is not a manifold: an edge is shared by more than 2 cells")
        return uniq, counts

    def boundary_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Boundary edges [B, 2] oriented counter-clockwise around the domain (interior on the left) and
        the index [B] of the cell each belongs to. The outward normal of edge (a, b) is rot(-90°)(b − a)."""
        if "bedges" not in self._cache:
            self._cache["bedges"] = boundary_edges_of(self.cells)
        return self._cache["bedges"]

    def boundary_mask(self) -> np.ndarray:
        """bool [P]: nodes on a boundary edge (an edge of exactly one cell)."""
        if "bmask" not in self._cache:
            edges, _ = self.boundary_edges()
            mask = np.zeros(self.n_points, dtype=bool)
            mask[edges.ravel()] = True
            self._cache["bmask"] = mask
        return self._cache["bmask"].copy()

    def edge_index(self) -> np.ndarray:
        """int64 [2, E]: every unique undirected cell edge in both directions (row 0 source j, row 1 target
        i), no self loops, sorted by (source, target)."""
        uniq, _ = self._edges
        both = np.concatenate([uniq, uniq[:, ::-1]])
        order = np.lexsort((both[:, 1], both[:, 0]))
        return np.ascontiguousarray(both[order].T).astype(np.int64)

    def h(self) -> float:
        """Mean edge length (a mesh-size scale)."""
        uniq, _ = self._edges
        return float(np.linalg.norm(self.points[uniq[:, 0]] - self.points[uniq[:, 1]], axis=1).mean())


def tangled_cells(mesh: Mesh, moved_points: np.ndarray) -> int:
    """Number of cells whose signed area at ``moved_points`` changed sign or became 0 (B6).

    Mesh cells are counter-clockwise, so this counts A_e(moved) <= tol with tol = 1e-12 · mean |A_e(ξ)|.
    Non-finite moved points raise ValueError (a NaN vertex is not "untangled")."""
    areas = mesh.signed_areas(moved_points)
    tol = _AREA_RTOL * np.abs(mesh.signed_areas()).mean()
    return int((areas <= tol).sum())


def check_in_unit_square(points: np.ndarray, name: str = "points", atol: float = 1e-10) -> None:
    """Raise ValueError if any point lies outside [0, 1]² by more than ``atol``."""
    p = _check_points(points, name)
    out = (p < -atol) | (p > 1 + atol)
    if out.any():
        rows = np.flatnonzero(out.any(axis=1))
        raise ValueError(f"{name} must lie in the unit square [0, 1]^2, got {rows.size} point(s) outside, "
                         f"first is row {rows[0]} = {p[rows[0]].tolist()}")


def _structured(n: int, diagonal: str) -> tuple[np.ndarray, np.ndarray]:
    xs = np.linspace(0.0, 1.0, n + 1)
    X, Y = np.meshgrid(xs, xs)  # node (i, j) at index j*(n+1) + i
    points = np.stack([X.ravel(), Y.ravel()], axis=1)
    j, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a = (j * (n + 1) + i).ravel()
    b, c, d = a + 1, a + n + 2, a + n + 1  # corners (i+1, j), (i+1, j+1), (i, j+1)
    if diagonal == "left":  # Firedrake UnitSquareMesh default: diagonal from (i+1, j) to (i, j+1)
        cells = np.concatenate([np.stack([a, b, d], 1), np.stack([b, c, d], 1)])
    elif diagonal == "right":
        cells = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    else:  # crisscross: one extra node at each square's centre, four cells per square
        centres = np.stack([(i.ravel() + 0.5) / n, (j.ravel() + 0.5) / n], 1)
        e = len(points) + np.arange(n * n)
        points = np.concatenate([points, centres])
        cells = np.concatenate([np.stack([a, b, e], 1), np.stack([b, c, e], 1),
                                np.stack([c, d, e], 1), np.stack([d, a, e], 1)])
    return points, cells.astype(np.int64)


def unit_square(n: int, kind: str = "structured", seed: int = 0, *, diagonal: str = "left",
                jitter: float = 0.1, smooth: int = 10) -> Mesh:
    """Triangulation of [0, 1]² with n intervals per side.

    kind "structured": (n+1)² nodes, 2n² cells (``diagonal`` "left" as Firedrake's UnitSquareMesh, "right",
    or "crisscross" with a centre node per square). "perturbed": the structured mesh with every interior node
    moved by U(−jitter·h, jitter·h) per coordinate (h = 1/n; jitter < 0.25 keeps every cell valid).
    "unstructured": 4n equally spaced boundary nodes plus (n−1)² interior nodes of a grid jittered by
    U(−0.35h, 0.35h), Delaunay-triangulated (scipy / Qhull) after ``smooth`` sweeps of Laplacian smoothing
    with re-triangulation (a stand-in for gmsh's Frontal-Delaunay quality: raw jittered Delaunay meshes have
    15° angles that the Monge–Ampère mover tangles). ``seed`` drives the jitter (unused when structured).
    The result is validated (CCW, positive areas)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    n = int(n)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if diagonal not in DIAGONALS:
        raise ValueError(f"diagonal must be one of {DIAGONALS}, got {diagonal!r}")
    if not (0.0 <= jitter < 0.25):
        raise ValueError(f"jitter must be in [0, 0.25) (a fraction of the cell size 1/n), got {jitter!r}")
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 0:
        raise ValueError(f"smooth must be an int >= 0, got {smooth!r}")
    rng = np.random.default_rng(seed)
    h = 1.0 / n
    if kind == "structured":
        return Mesh(*_structured(n, diagonal))
    if kind == "perturbed":
        points, cells = _structured(n, diagonal)
        interior = ((points > 0) & (points < 1)).all(axis=1)
        points[interior] += rng.uniform(-jitter * h, jitter * h, size=(int(interior.sum()), 2))
        return Mesh(points, cells)
    t = np.linspace(0.0, 1.0, n + 1)[:-1]
    boundary = np.concatenate([np.stack([t, np.zeros(n)], 1), np.stack([np.ones(n), t], 1),
                               np.stack([1 - t, np.ones(n)], 1), np.stack([np.zeros(n), 1 - t], 1)])
    g = np.linspace(0.0, 1.0, n + 1)[1:-1]
    X, Y = np.meshgrid(g, g)
    interior = np.stack([X.ravel(), Y.ravel()], 1)
    interior = interior + rng.uniform(-0.35 * h, 0.35 * h, size=interior.shape)
    points = np.concatenate([boundary, interior])
    nb = len(boundary)
    for _ in range(smooth):  # Laplacian smoothing of the interior nodes, re-triangulating each sweep
        cells = _delaunay(points, h)
        e = np.concatenate([cells[:, [0, 1]], cells[:, [1, 2]], cells[:, [2, 0]]])
        e = np.unique(np.sort(e, axis=1), axis=0)
        e = np.concatenate([e, e[:, ::-1]])
        deg = np.bincount(e[:, 0], minlength=len(points))
        avg = np.stack([np.bincount(e[:, 0], weights=points[e[:, 1], d], minlength=len(points))
                        for d in range(2)], 1) / deg[:, None]
        points[nb:] = avg[nb:]
    return Mesh(points, _delaunay(points, h))


def _delaunay(points: np.ndarray, h: float) -> np.ndarray:
    """Counter-clockwise Delaunay cells of points in the unit square, flat boundary slivers dropped."""
    cells = Delaunay(points).simplices.astype(np.int64)
    areas = signed_areas_of(points, cells)
    cells[areas < 0] = cells[areas < 0][:, [0, 2, 1]]  # Qhull's orientation is not guaranteed
    return cells[np.abs(areas) > 1e-9 * h * h]  # collinear boundary nodes may give zero-area cells
