"""Unit-square meshes and P1 FEM (pyunlearn.mesh.geometry / fem / problems): quadrature exactness, matrix
identities, exact reproduction of linear solutions, and the manufactured-solution convergence rates."""

from math import erf, factorial, pi, sqrt

import numpy as np
import pytest

from pyunlearn.mesh import fem
from pyunlearn.mesh.geometry import Mesh, check_in_unit_square, tangled_cells, unit_square
from pyunlearn.mesh.metrics import l2_error
from pyunlearn.mesh.problems import HelmholtzProblem, random_problem

KINDS = ("structured", "perturbed", "unstructured")


def _min_angle(mesh: Mesh) -> float:
    p = mesh.points[mesh.cells]
    out = []
    for k in range(3):
        u, v = p[:, (k + 1) % 3] - p[:, k], p[:, (k + 2) % 3] - p[:, k]
        cos = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
        out.append(np.degrees(np.arccos(cos)).min())
    return float(min(out))


# ---------------------------------------------------------------- geometry

@pytest.mark.parametrize("diagonal", ["left", "right", "crisscross"])
def test_structured_counts_orientation_boundary(diagonal):
    n = 6
    m = unit_square(n, diagonal=diagonal)
    extra = n * n if diagonal == "crisscross" else 0
    assert m.n_points == (n + 1) ** 2 + extra
    assert m.n_cells == (4 if diagonal == "crisscross" else 2) * n * n
    areas = m.signed_areas()
    assert (areas > 0).all() and areas.sum() == pytest.approx(1.0, abs=1e-14)
    on_edge = ((m.points == 0) | (m.points == 1)).any(axis=1)
    np.testing.assert_array_equal(m.boundary_mask(), on_edge)
    assert m.boundary_mask().sum() == 4 * n
    ei = m.edge_index()
    n_edges = 3 * n * n + 2 * n if diagonal != "crisscross" else 2 * n * (n + 1) + 4 * n * n
    assert ei.shape == (2, 2 * n_edges) and ei.dtype == np.int64
    assert (ei[0] != ei[1]).all()
    pairs = set(map(tuple, ei.T.tolist()))
    assert len(pairs) == ei.shape[1] and all((j, i) in pairs for i, j in pairs)
    edges, _ = m.boundary_edges()  # CCW around the domain: the outward normal points out of [0,1]^2
    d = m.points[edges[:, 1]] - m.points[edges[:, 0]]
    mid = 0.5 * (m.points[edges[:, 1]] + m.points[edges[:, 0]])
    out = mid + 1e-3 * np.stack([d[:, 1], -d[:, 0]], 1)
    assert ((out < 0) | (out > 1)).any(axis=1).all()


@pytest.mark.parametrize("kind", ["perturbed", "unstructured"])
def test_perturbed_and_unstructured_meshes_are_valid(kind):
    m = unit_square(12, kind, seed=4)
    assert (m.signed_areas() > 0).all() and m.signed_areas().sum() == pytest.approx(1.0, abs=1e-12)
    check_in_unit_square(m.points)
    bm = m.boundary_mask()
    on_edge = np.isclose(m.points, 0, atol=1e-14) | np.isclose(m.points, 1, atol=1e-14)
    np.testing.assert_array_equal(bm, on_edge.any(axis=1))  # boundary nodes on ∂Ω, no interior node on it
    assert bm.sum() == 48
    assert _min_angle(m) > (25.0 if kind == "unstructured" else 20.0)
    # seeded: same seed, same mesh; other seed, other mesh
    np.testing.assert_array_equal(unit_square(12, kind, seed=4).points, m.points)
    assert not np.allclose(unit_square(12, kind, seed=5).points, m.points)


def test_mesh_rejects_bad_input():
    m = unit_square(3)
    with pytest.raises(ValueError, match=r"triangles.*\[T, 3\].*\(18, 4\)"):
        Mesh(m.points, np.concatenate([m.cells, m.cells[:, :1]], 1))
    inverted = m.cells.copy()
    inverted[5] = inverted[5, [0, 2, 1]]
    with pytest.raises(ValueError, match=r"1 inverted or degenerate cell.*cell 5"):
        Mesh(m.points, inverted)
    with pytest.raises(ValueError, match=r"index points in \[0, 16\)"):
        Mesh(m.points, m.cells + 1)
    bad = m.points.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        Mesh(bad, m.cells)
    with pytest.raises(ValueError, match=r"shape \[P, 2\]"):
        Mesh(m.points[:, :1], m.cells)
    with pytest.raises(ValueError, match="unit square.*row 2"):
        check_in_unit_square(m.points + np.where(np.arange(16) == 2, 1.5, 0.0)[:, None])
    with pytest.raises(ValueError, match="kind must be one of"):
        unit_square(4, "hexagonal")
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        unit_square(0)


def test_tangled_cells_counts_sign_changes():
    m = unit_square(4)  # node 6 = (0.5, 0.25) interior; its 6 cells surround it
    assert tangled_cells(m, m.points) == 0
    moved = m.points.copy()
    moved[6] = [0.5, 0.25 + 0.3]  # jumps over the row of nodes at y = 0.5: the cells below it flip
    n_bad = tangled_cells(m, moved)
    areas = m.signed_areas(moved)
    assert n_bad == int((areas <= 0).sum()) and n_bad >= 2
    moved[6] = [0.5, 0.5]  # onto a neighbour's row: flat cells count too
    assert tangled_cells(m, moved) >= 1
    with pytest.raises(ValueError, match="finite"):
        tangled_cells(m, np.full_like(m.points, np.nan))


# ---------------------------------------------------------------- quadrature and matrices

@pytest.mark.parametrize("degree", [1, 2, 4, 5, 7, 10])
def test_triangle_rule_is_exact_to_its_degree(degree):
    bary, w = fem.triangle_rule(degree)
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    x, y = bary[:, 1], bary[:, 2]  # reference triangle (0,0),(1,0),(0,1), area 1/2
    for a in range(degree + 1):
        for b in range(degree + 1 - a):
            exact = factorial(a) * factorial(b) / factorial(a + b + 2)
            assert 0.5 * (w * x**a * y**b).sum() == pytest.approx(exact, rel=1e-12, abs=1e-15), (a, b)


def test_radon_rule_is_not_exact_beyond_degree_5():
    bary, w = fem.triangle_rule(5)
    x = bary[:, 1]
    assert 0.5 * (w * x**6).sum() != pytest.approx(factorial(6) / factorial(8), rel=1e-8)


def test_mass_and_stiffness_identities():
    m = unit_square(5, "unstructured", seed=1)
    M, K = fem.mass(m.points, m.cells), fem.stiffness(m.points, m.cells)
    ones, x = np.ones(m.n_points), m.points[:, 0]
    assert ones @ M @ ones == pytest.approx(1.0, abs=1e-13)  # ∫ 1 = |Ω|
    assert x @ M @ x == pytest.approx(1 / 3, abs=1e-13)  # ∫ x² for the P1 interpolant of x = x
    assert np.abs(K @ ones).max() < 1e-12  # constants are in the null space
    assert x @ K @ x == pytest.approx(1.0, abs=1e-12)  # ∫ |∇x|² = 1
    np.testing.assert_allclose(fem.mass(m.points, m.cells, lumped=True), M @ ones, atol=1e-15)
    assert abs(M - M.T).max() < 1e-15 and abs(K - K.T).max() < 1e-14
    assert np.linalg.eigvalsh(K.toarray())[1] > 0  # only one zero eigenvalue: connected mesh


@pytest.mark.parametrize("equation", ["helmholtz", "poisson"])
def test_linear_solution_is_reproduced_exactly(equation):
    m = unit_square(7, "perturbed", seed=3)

    def u(xy):
        return 1 + 2 * xy[..., 0] - 3 * xy[..., 1]

    def f(xy):
        return u(xy) if equation == "helmholtz" else np.zeros(xy.shape[:-1])

    uh = fem.solve_pde(m.points, m.cells, f, u, m.boundary_mask(), equation=equation)
    np.testing.assert_allclose(uh, u(m.points), atol=1e-12)


def test_load_and_pde_argument_checks():
    m = unit_square(3)
    with pytest.raises(ValueError, match="degree must be >= 4"):
        fem.load(m.points, m.cells, lambda xy: xy[..., 0], degree=2)
    with pytest.raises(ValueError, match="needs at least one Dirichlet"):
        fem.solve_pde(m.points, m.cells, lambda xy: xy[..., 0], lambda xy: xy[..., 0],
                      np.zeros(m.n_points, bool), equation="poisson")
    inverted = m.points.copy()
    inverted[[5, 6]] = inverted[[6, 5]]  # swap two interior nodes: cells flip
    with pytest.raises(ValueError, match="signed area <= 0"):
        fem.stiffness(inverted, m.cells)


# ---------------------------------------------------------------- convergence on a manufactured solution

def _rates(errors):
    return [np.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]


@pytest.mark.parametrize("equation", ["helmholtz", "poisson"])
@pytest.mark.parametrize("kind", ["structured", "perturbed"])
def test_manufactured_solution_converges_at_rate_2_in_l2_and_1_in_h1(equation, kind):
    prob = HelmholtzProblem([0.4, 0.7], [0.6, 0.3], [0.2, 0.3], [0.3, 0.15], [1.0, 0.5], equation=equation)
    l2, h1 = [], []
    for n in (8, 16, 32):
        m = unit_square(n, kind, seed=1)
        uh = fem.solve_problem(m.points, m.cells, prob, m.boundary_mask())
        l2.append(l2_error(m, uh, prob))
        h1.append(fem.h1_seminorm_error(m.points, m.cells, uh, prob.grad_exact))
    r2, r1 = _rates(l2), _rates(h1)
    assert all(1.8 < r < 2.25 for r in r2), (l2, r2)
    assert all(0.85 < r < 1.15 for r in r1), (h1, r1)


def test_l2_error_of_zero_field_is_the_analytic_gaussian_norm():
    prob = HelmholtzProblem([0.45], [0.6], [0.2], [0.3], [0.8])

    def one_d(mu, s):  # ∫_0^1 exp(-2 (t - mu)^2 / s^2) dt
        return s * sqrt(pi / 8) * (erf(sqrt(2) * (1 - mu) / s) + erf(sqrt(2) * mu / s))

    exact = 0.8 * sqrt(one_d(0.45, 0.2) * one_d(0.6, 0.3))
    m = unit_square(16)
    assert l2_error(m, np.zeros(m.n_points), prob) == pytest.approx(exact, rel=1e-6)


def test_problem_formulas_match_finite_differences():
    prob = random_problem(np.random.default_rng(7))
    xy, h = np.array([[0.31, 0.62], [0.8, 0.15]]), 1e-4
    ex, ey = np.array([h, 0.0]), np.array([0.0, h])
    lap = sum(prob.u_exact(xy + e) - 2 * prob.u_exact(xy) + prob.u_exact(xy - e) for e in (ex, ey)) / h**2
    np.testing.assert_allclose(prob.f(xy), -lap + prob.u_exact(xy), rtol=1e-5)
    grad = np.stack([(prob.u_exact(xy + e) - prob.u_exact(xy - e)) / (2 * h) for e in (ex, ey)], -1)
    np.testing.assert_allclose(prob.grad_exact(xy), grad, rtol=1e-6)
    H = prob.hessian_exact(xy)
    np.testing.assert_allclose(np.trace(H, axis1=-2, axis2=-1), lap, rtol=1e-5)


def test_random_problem_follows_b5_distribution():
    rng = np.random.default_rng(0)
    probs = [random_problem(rng) for _ in range(300)]
    ks = np.array([p.n_gaussians for p in probs])
    assert ks.min() == 1 and ks.max() == 5
    sig = np.concatenate([np.concatenate([p.sigma_x, p.sigma_y]) for p in probs])
    assert sig.min() == 0.125 and np.allclose(sig, np.round(sig, 3))
    assert 0.2 < (sig == 0.125).mean() < 0.35  # P(N(1/4, 1/6) < 1/8) = Φ(-0.75) = 0.227, plus rounding
    mus = np.concatenate([p.mu_x for p in probs])
    assert 0 <= mus.min() and mus.max() <= 1
    pad = random_problem(np.random.default_rng(1), centres="pad")
    assert ((0.2 <= pad.mu_x) & (pad.mu_x <= 0.8)).all()
    with pytest.raises(ValueError, match="sigma_x must be > 0"):
        HelmholtzProblem([0.5], [0.5], [0.0], [0.2], [1.0])
    with pytest.raises(ValueError, match="same length K"):
        HelmholtzProblem([0.5, 0.2], [0.5], [0.1], [0.2], [1.0])
