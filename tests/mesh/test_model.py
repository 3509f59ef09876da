"""UM2N model and losses: boundary handling, batching, equivariance, the fused DeformGAT against a dense
reference, hand-computed losses, Chamfer properties, clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pyunlearn.mesh.geometry import Mesh, unit_square
from pyunlearn.mesh.losses import (
    LossConfig,
    chamfer_distance,
    coordinate_loss,
    element_area_loss,
    signed_areas,
    tangled_per_mesh,
    um2n_loss,
)
from pyunlearn.mesh.model import UM2N, DeformGAT, MeshBatch, UM2NConfig, make_batch, sample_from_mesh
from pyunlearn.ops.gat import gat_graph


def _monitor(points: np.ndarray, c=(0.4, 0.6)) -> np.ndarray:
    return 1.0 + 5.0 * np.exp(-((points - np.asarray(c)) ** 2).sum(1) / 0.02)


def _sample(mesh: Mesh, c=(0.4, 0.6)) -> dict:
    return sample_from_mesh(mesh, _monitor(mesh.points, c))


def _model(dtype=torch.float64, **kw) -> UM2N:
    torch.manual_seed(0)
    return UM2N(UM2NConfig.small(**kw)).to(dtype).eval()


MESHES = [unit_square(6), unit_square(7, "unstructured", seed=1), unit_square(5, "perturbed", seed=2)]


# ------------------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attention", ["selu", "leaky_relu"])
def test_boundary_slides_exactly_and_points_stay_in_the_square(attention):
    """B1: a vertex on x=0/1 keeps its x bit for bit, one on y=0/1 its y; corners do not move at all; the
    moved mesh stays inside the unit square (every block output is a convex combination of positions)."""
    model = _model(attention=attention)
    b = make_batch([_sample(m) for m in MESHES], dtype=torch.float64)
    with torch.no_grad():
        x = model(b)
    p = b.coords
    on_x = (p[:, 0] == 0) | (p[:, 0] == 1)
    on_y = (p[:, 1] == 0) | (p[:, 1] == 1)
    assert torch.equal(x[on_x, 0], p[on_x, 0]) and torch.equal(x[on_y, 1], p[on_y, 1])
    corners = on_x & on_y
    assert int(corners.sum()) == 12 and torch.equal(x[corners], p[corners])
    slid = (x[on_x & ~on_y, 1] - p[on_x & ~on_y, 1]).abs()
    assert slid.max() > 1e-3  # boundary vertices really slide (not held fixed)
    assert (x >= 0).all() and (x <= 1).all()
    interior = ~b.boundary
    assert (x[interior] - p[interior]).abs().max() > 1e-3


def test_fixed_boundary_mode_holds_every_boundary_vertex():
    model = _model(boundary="fixed")
    b = make_batch([_sample(m) for m in MESHES], dtype=torch.float64)
    with torch.no_grad():
        x = model(b)
    assert torch.equal(x[b.boundary], b.coords[b.boundary])


def test_padded_batch_of_unequal_meshes_equals_meshes_alone():
    """Pad + mask in the encoder: a mesh's output does not depend on the other meshes of its batch."""
    model = _model()
    samples = [_sample(m) for m in MESHES]
    with torch.no_grad():
        together = model(make_batch(samples, dtype=torch.float64))
        alone = torch.cat([model(make_batch([s], dtype=torch.float64)) for s in samples])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-12)


def test_vertex_relabelling_permutes_the_output():
    """A graph model: renumbering vertices (points, cells, edges) renumbers the moved points, nothing else."""
    mesh = MESHES[1]
    s = _sample(mesh)
    perm = np.random.default_rng(0).permutation(mesh.n_points)
    inv = np.argsort(perm)
    s2 = {"points": s["points"][perm], "monitor": s["monitor"][perm], "boundary": s["boundary"][perm],
          "cells": inv[s["cells"]], "edge_index": inv[s["edge_index"]]}
    model = _model()
    with torch.no_grad():
        x = model(make_batch([s], dtype=torch.float64))
        x2 = model(make_batch([s2], dtype=torch.float64))
    torch.testing.assert_close(x2, x[torch.as_tensor(perm)], rtol=0, atol=1e-12)


def _deform_dense(block: DeformGAT, coords, feats, edge_index):
    """Dense reference of one DeformGAT block: explicit per-target softmax over incoming edges."""
    n, h, c = len(coords), block.heads, block.out_channels
    z = block.lin(feats).view(n, h, c)
    a, b = (z * block.att_src).sum(-1), (z * block.att_dst).sum(-1)
    act = F.selu if block.attention == "selu" else (lambda t: F.leaky_relu(t, 0.2))
    x_out, f_out = torch.zeros(n, h, 2, dtype=coords.dtype), torch.zeros(n, h, c, dtype=coords.dtype)
    src, dst = edge_index
    for i in range(n):
        js = src[dst == i]
        wx = torch.softmax(act(0.2 * a[js] + 0.2 * b[i]), 0)  # [deg, H]
        wf = torch.softmax(act(a[js] + b[i]), 0)
        x_out[i] = torch.einsum("eh,ed->hd", wx, coords[js])
        f_out[i] = torch.einsum("eh,ehc->hc", wf, z[js])
    return x_out.mean(1), F.selu(f_out.mean(1))


@pytest.mark.parametrize("attention", ["selu", "leaky_relu"])
def test_deformgat_on_the_fused_op_matches_a_dense_reference(attention):
    torch.manual_seed(1)
    mesh = MESHES[1]
    ei = torch.as_tensor(mesh.edge_index())
    coords = torch.as_tensor(mesh.points)
    block = DeformGAT(7, 5, 3, attention).double()
    feats = torch.randn(mesh.n_points, 7, dtype=torch.float64, requires_grad=True)
    graph = gat_graph(ei, mesh.n_points)
    dst_csr = torch.repeat_interleave(torch.arange(mesh.n_points), torch.diff(graph.rowptr.long()))
    x, f = block(coords, feats, graph, dst_csr)
    xr, fr = _deform_dense(block, coords, feats, ei)
    torch.testing.assert_close(x, xr, rtol=0, atol=1e-12)
    torch.testing.assert_close(f, fr, rtol=0, atol=1e-12)
    g = torch.autograd.grad((x.sum() + f.square().sum()), [feats, block.att_src])
    gr = torch.autograd.grad((xr.sum() + fr.square().sum()), [feats, block.att_src])
    for u, v in zip(g, gr):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-11)


def test_released_widths():
    """B3.1: encoder d=64 / 4 heads; deformer blocks 256->508, 512->250, 256->120, 128->20 with 6 heads."""
    model = UM2N()
    assert [(blk.lin.in_features, blk.out_channels, blk.heads) for blk in model.blocks] == [
        (256, 508, 6), (512, 250, 6), (256, 120, 6), (128, 20, 6)]
    assert model.lin_in.in_features == 35 and model.lin_in.out_features == 254
    assert model.encoder.block.qkv.in_features == 64 and model.encoder.block.heads == 4
    b = make_batch([_sample(unit_square(4))])
    assert model.eval()(b).shape == (25, 2)


def test_monitor_is_normalised_per_mesh():
    s1, s2 = _sample(unit_square(4)), _sample(unit_square(5))
    s2["monitor"] = 10 * s2["monitor"]
    b = make_batch([s1, s2], dtype=torch.float64)
    assert b.monitor[:25].max() == 1.0 and b.monitor[25:].max() == 1.0
    torch.testing.assert_close(b.monitor[25:], torch.as_tensor(s2["monitor"] / s2["monitor"].max()))


def test_bad_input_gives_clear_errors():
    good = _sample(unit_square(4))
    nan = dict(good, monitor=np.where(np.arange(25) == 3, np.nan, good["monitor"]))
    with pytest.raises(ValueError, match="monitor must be finite"):
        make_batch([nan])
    with pytest.raises(ValueError, match=r"points must have shape \[P, 2\], got \[25, 3\]"):
        make_batch([dict(good, points=np.ones((25, 3)))])
    with pytest.raises(ValueError, match="monitor and boundary must have one entry per point"):
        make_batch([dict(good, monitor=good["monitor"][:-1])])
    with pytest.raises(ValueError, match="zero everywhere"):
        make_batch([dict(good, monitor=np.zeros(25))])
    with pytest.raises(ValueError, match=r"cells must have shape \[T, 3\]"):
        make_batch([dict(good, cells=good["cells"][:, :2])])
    with pytest.raises(KeyError, match="has no 'monitor'"):
        make_batch([{k: v for k, v in good.items() if k != "monitor"}])
    lonely = dict(good, edge_index=good["edge_index"][:, good["edge_index"][1] != 7])
    with pytest.raises(ValueError, match="incoming edge"):
        make_batch([lonely])
    with pytest.raises(ValueError, match="target must be finite"):
        make_batch([dict(good, target=np.full((25, 2), np.nan))])
    model = _model()
    with pytest.raises(ValueError, match="dtype"):
        model(make_batch([good], dtype=torch.float32))
    b = make_batch([good], dtype=torch.float64)
    bad = MeshBatch(b.coords, b.monitor * float("nan"), b.boundary, b.edge_index, b.cells, b.batch,
                    b.cell_batch, 1)
    with pytest.raises(ValueError, match="monitor must be finite"):
        model(bad)
    with pytest.raises(ValueError, match="encoder_heads"):
        UM2NConfig(encoder_dim=30, encoder_heads=4)
    with pytest.raises(ValueError, match="attention"):
        UM2NConfig(attention="relu")


# ------------------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------------------

SQUARE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
TWO_CELLS = torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_losses_on_two_triangles_match_hand_computation():
    """Target: the unit square split along its diagonal (areas ½, ½). Prediction: vertex 2 moved to the
    centre, so both areas are ¼ -> L_vol = 100·(¼ + ¼) = 50. Chamfer: the centre is 0.5 (squared) from every
    corner, so each direction's mean is 0.5/4 -> L_ch = 100·(0.125 + 0.125) = 25. Coord: L1 mean over 8
    entries = 1/8 -> 1000/8 = 125. Release total (w = 0, 1, 1): 75."""
    pred = SQUARE.clone()
    pred[2] = torch.tensor([0.5, 0.5])
    torch.testing.assert_close(signed_areas(pred, TWO_CELLS), torch.tensor([0.25, 0.25], dtype=torch.float64))
    assert float(element_area_loss(pred, SQUARE, TWO_CELLS)) == pytest.approx(50.0, abs=1e-12)
    assert float(chamfer_distance(pred, SQUARE, 100.0)) == pytest.approx(25.0, abs=1e-12)
    assert float(coordinate_loss(pred, SQUARE)) == pytest.approx(125.0, abs=1e-12)
    terms = um2n_loss(pred, SQUARE, TWO_CELLS, 1)
    assert float(terms["loss"]) == pytest.approx(75.0, abs=1e-12)
    assert float(terms["coord"]) == pytest.approx(125.0, abs=1e-12)
    with_coord = um2n_loss(pred, SQUARE, TWO_CELLS, 1, LossConfig(w_coord=0.5, w_vol=0.0, w_chamfer=2.0))
    assert float(with_coord["loss"]) == pytest.approx(0.5 * 125 + 2 * 25, abs=1e-12)
    # two meshes in the batch: the area sum is divided by B
    assert float(element_area_loss(pred, SQUARE, TWO_CELLS, num_graphs=2)) == pytest.approx(25.0, abs=1e-12)


def test_chamfer_symmetric_zero_for_identical_sets_and_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(37, 2, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(23, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert float(chamfer_distance(a.detach(), a.detach()[torch.randperm(37, generator=g)])) == 0.0
    assert float(chamfer_distance(a, b).detach()) == float(chamfer_distance(b, a).detach())
    d2 = ((a[:, None] - b[None]) ** 2).sum(-1)
    brute = d2.min(1).values.mean() + d2.min(0).values.mean()
    ours = chamfer_distance(a, b)
    torch.testing.assert_close(ours, brute, rtol=0, atol=1e-14)
    for u, v in zip(torch.autograd.grad(ours, [a, b]), torch.autograd.grad(brute, [a, b])):
        torch.testing.assert_close(u, v, rtol=0, atol=1e-14)
    # tiled nearest-neighbour search (tiny tiles) gives the same value
    from pyunlearn.mesh.losses import nearest_neighbour

    assert torch.equal(nearest_neighbour(a, b, max_elements=5), d2.argmin(1))


def test_tangled_per_mesh_counts_inverted_cells():
    pred = SQUARE.clone()
    pred[2] = torch.tensor([-0.5, -0.5])  # through the opposite corner: both cells flip
    cells = torch.cat([TWO_CELLS, TWO_CELLS + 4])
    both = torch.cat([SQUARE, SQUARE])
    out = tangled_per_mesh(torch.cat([pred, SQUARE]), both, cells, torch.tensor([0, 0, 1, 1]), 2)
    assert out.tolist() == [2, 0]


def test_loss_errors():
    with pytest.raises(ValueError, match=r"pred and target must both have shape \[N, 2\]"):
        element_area_loss(SQUARE, SQUARE[:3], TWO_CELLS)
    with pytest.raises(FloatingPointError, match="NaN"):
        um2n_loss(SQUARE * float("nan"), SQUARE, TWO_CELLS, 1)
    with pytest.raises(ValueError, match="non-zero weight"):
        LossConfig(w_vol=0.0, w_chamfer=0.0)
    with pytest.raises(ValueError, match="non-empty"):
        chamfer_distance(SQUARE[:0], SQUARE)
