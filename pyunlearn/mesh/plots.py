"""Pictures of mesh movement: original / MA / UM2N meshes coloured by the pointwise solution error, and the
training curve. matplotlib's object API (no pyplot state, no display needed).

    plot_meshes(mesh, {"original": mesh.points, "MA": target, "UM2N": moved}, problem, "movement.png")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path


def plot_meshes(mesh, panels: Mapping[str, np.ndarray], problem, path: str | os.PathLike,
                title: str | None = None) -> Path:
    """One panel per entry of `panels` (name -> vertex positions [P, 2] of `mesh`'s topology): the mesh edges
    over |u_h − u_exact| at the vertices (u_h the P1 solution of `problem` on that mesh; one colour scale for
    all panels), titled with the L2 error and the ER against the first panel. Tangled cells are filled red and
    get no solve. Returns the path of the written image."""
    from matplotlib.tri import Triangulation

    from pyunlearn.mesh.fem import solve_problem
    from pyunlearn.mesh.geometry import tangled_cells
    from pyunlearn.mesh.metrics import l2_error

    if len(panels) == 0:
        raise ValueError("panels must name at least one set of vertex positions, got none")
    bmask = mesh.boundary_mask()
    fields, titles, first_err = {}, {}, None
    for name, pts in panels.items():
        pts = np.asarray(pts, dtype=np.float64)
        if pts.shape != mesh.points.shape:
            raise ValueError(f"panel {name!r} must have shape {mesh.points.shape}, got {pts.shape}")
        n_bad = tangled_cells(mesh, pts)
        if n_bad:
            fields[name], titles[name] = None, f"{name}: {n_bad} tangled cells"
            continue
        u_h = solve_problem(pts, mesh.cells, problem, bmask)
        err = l2_error(pts, u_h, problem, mesh.cells)
        fields[name] = np.abs(u_h - problem.u_exact(pts))
        first_err = err if first_err is None else first_err
        er = "" if err is first_err else f", ER {100 * (first_err - err) / first_err:+.1f}%"
        titles[name] = f"{name}: L2 error {err:.3e}{er}"
    finite = [f for f in fields.values() if f is not None]
    vmax = max(float(f.max()) for f in finite) if finite else 1.0
    fig = _figure(4.2 * len(panels), 4.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    im = None
    for ax, (name, pts) in zip(axes, panels.items()):
        pts = np.asarray(pts, dtype=np.float64)
        tri = Triangulation(pts[:, 0], pts[:, 1], mesh.cells)
        if fields[name] is not None:
            im = ax.tripcolor(tri, fields[name], shading="gouraud", cmap="viridis", vmin=0.0, vmax=vmax)
        else:
            bad = mesh.signed_areas(pts) <= 0
            ax.tripcolor(tri, facecolors=bad.astype(float), cmap="Reds", vmin=0.0, vmax=1.0)
        ax.triplot(tri, color="k", linewidth=0.3)
        ax.set_title(titles[name], fontsize=9)
        ax.set_aspect("equal")
        ax.margins(0.01)
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.8, label="|u_h − u_exact| at vertices")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_history(history: Sequence[dict], path: str | os.PathLike) -> Path:
    """Training (and validation) loss per epoch, log scale."""
    if len(history) == 0:
        raise ValueError("history must hold at least one epoch, got none")
    fig = _figure(5.0, 3.4)
    ax = fig.subplots()
    ep = [h["epoch"] for h in history]
    ax.semilogy(ep, [h["loss"] for h in history], label="train loss")
    if all("val_loss" in h for h in history):
        ax.semilogy(ep, [h["val_loss"] for h in history], label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("area + Chamfer loss")
    ax.legend()
    return _save(fig, path)
