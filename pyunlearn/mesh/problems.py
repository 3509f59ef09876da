"""Helmholtz test problems with anisotropic Gaussian solutions (zo_graph_kernels.md B5).

    u(x, y) = Σ_k z_k exp(−(x − μx_k)²/σx_k² − (y − μy_k)²/σy_k²),   −Δu + u = f,   u = u_exact on ∂Ω

For one Gaussian g: −Δg + g = g·(1 + 2/σx² + 2/σy² − 4(x−μx)²/σx⁴ − 4(y−μy)²/σy⁴). The Poisson variant
(−Δu = f) drops the "+ g". "iso" samples are the aniso form with σx² = σy² = w.

    rng = np.random.default_rng(63)
    prob = random_problem(rng)                   # B5 "aniso"/"full": 1..5 Gaussians, μ ~ U(0, 1)
    prob.u_exact(xy), prob.f(xy)                 # xy [..., 2] -> [...]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DISTS = ("aniso", "iso")
CENTRES = {"full": (0.0, 1.0), "pad": (0.2, 0.8)}
EQUATIONS = ("helmholtz", "poisson")
PARAM_KEYS = ("mu_x", "mu_y", "sigma_x", "sigma_y", "z")


@dataclass
class HelmholtzProblem:
    """A sum of K anisotropic Gaussians; every parameter is a float64 array [K] (K >= 1, σ > 0)."""

    mu_x: np.ndarray  # [K]
    mu_y: np.ndarray  # [K]
    sigma_x: np.ndarray  # [K]
    sigma_y: np.ndarray  # [K]
    z: np.ndarray  # [K] amplitudes
    equation: str = "helmholtz"  # "helmholtz": −Δu + u = f; "poisson": −Δu = f

    def __post_init__(self):
        arrays = {}
        for name in PARAM_KEYS:
            a = np.atleast_1d(np.asarray(getattr(self, name), dtype=np.float64))
            if a.ndim != 1 or a.size == 0:
                raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"{name} must be finite, got {a.tolist()}")
            arrays[name] = a
        sizes = {k: v.size for k, v in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"all parameter arrays must have the same length K, got {sizes}")
        for name in ("sigma_x", "sigma_y"):
            if (arrays[name] <= 0).any():
                raise ValueError(f"{name} must be > 0, got {arrays[name].tolist()}")
        for name, a in arrays.items():
            setattr(self, name, a)
        if self.equation not in EQUATIONS:
            raise ValueError(f"equation must be one of {EQUATIONS}, got {self.equation!r}")

    @property
    def n_gaussians(self) -> int:
        return self.z.size

    def _terms(self, xy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xy = np.asarray(xy, dtype=np.float64)
        if xy.shape[-1] != 2:
            raise ValueError(f"xy must have a trailing dimension of 2, got shape {xy.shape}")
        dx = xy[..., 0, None] - self.mu_x  # [..., K]
        dy = xy[..., 1, None] - self.mu_y
        g = self.z * np.exp(-(dx / self.sigma_x) ** 2 - (dy / self.sigma_y) ** 2)
        return g, dx, dy

    def u_exact(self, xy) -> np.ndarray:
        """u at xy [..., 2] -> [...]."""
        g, _, _ = self._terms(xy)
        return g.sum(-1)

    def grad_exact(self, xy) -> np.ndarray:
        """∇u at xy [..., 2] -> [..., 2]."""
        g, dx, dy = self._terms(xy)
        gx = (-2 * dx / self.sigma_x**2 * g).sum(-1)
        gy = (-2 * dy / self.sigma_y**2 * g).sum(-1)
        return np.stack([gx, gy], -1)

    def hessian_exact(self, xy) -> np.ndarray:
        """Hessian of u at xy [..., 2] -> [..., 2, 2]."""
        g, dx, dy = self._terms(xy)
        sx2, sy2 = self.sigma_x**2, self.sigma_y**2
        hxx = (g * (4 * dx**2 / sx2**2 - 2 / sx2)).sum(-1)
        hyy = (g * (4 * dy**2 / sy2**2 - 2 / sy2)).sum(-1)
        hxy = (g * 4 * dx * dy / (sx2 * sy2)).sum(-1)
        return np.stack([np.stack([hxx, hxy], -1), np.stack([hxy, hyy], -1)], -2)

    def f(self, xy) -> np.ndarray:
        """Right-hand side −Δu (+ u for Helmholtz) at xy [..., 2] -> [...]."""
        g, dx, dy = self._terms(xy)
        sx2, sy2 = self.sigma_x**2, self.sigma_y**2
        neg_lap = g * (2 / sx2 + 2 / sy2 - 4 * dx**2 / sx2**2 - 4 * dy**2 / sy2**2)
        if self.equation == "helmholtz":
            neg_lap = neg_lap + g
        return neg_lap.sum(-1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The parameters as arrays (the dataset's problem keys)."""
        return {k: getattr(self, k).copy() for k in PARAM_KEYS}

    @classmethod
    def from_arrays(cls, d, equation: str = "helmholtz") -> HelmholtzProblem:
        """Rebuild from a dict (e.g. a dataset sample) holding the keys mu_x, mu_y, sigma_x, sigma_y, z."""
        missing = [k for k in PARAM_KEYS if k not in d]
        if missing:
            raise KeyError(f"problem parameters missing keys {missing}; expected {list(PARAM_KEYS)}")
        return cls(*(np.asarray(d[k]) for k in PARAM_KEYS), equation=equation)


def random_problem(rng: np.random.Generator, dist: str = "aniso", centres: str = "full",
                   equation: str = "helmholtz") -> HelmholtzProblem:
    """Draw a B5 problem: K ~ randint(1, 6) Gaussians, μ ~ U(c_min, c_max) ("full" [0, 1], "pad" [0.2, 0.8]),
    z ~ U(0, 1); "aniso": σx, σy ~ max(N(1/4, 1/6), 1/8) rounded to 3 decimals, independently;
    "iso": σx² = σy² = w ~ U(0.05, 0.2)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if dist not in DISTS:
        raise ValueError(f"dist must be one of {DISTS}, got {dist!r}")
    if centres not in CENTRES:
        raise ValueError(f"centres must be one of {tuple(CENTRES)}, got {centres!r}")
    k = int(rng.integers(1, 6))
    lo, hi = CENTRES[centres]
    mu_x, mu_y = rng.uniform(lo, hi, k), rng.uniform(lo, hi, k)
    if dist == "aniso":
        sigma_x = np.round(np.maximum(rng.normal(0.25, 1 / 6, k), 0.125), 3)
        sigma_y = np.round(np.maximum(rng.normal(0.25, 1 / 6, k), 0.125), 3)
    else:
        sigma_x = np.sqrt(rng.uniform(0.05, 0.2, k))
        sigma_y = sigma_x.copy()
    z = rng.uniform(0.0, 1.0, k)
    return HelmholtzProblem(mu_x, mu_y, sigma_x, sigma_y, z, equation=equation)
