"""UM2N mesh movement without Firedrake: unit-square meshes, P1 FEM, Hessian monitors and Monge–Ampère targets
(docs/mesh_pipeline.md); the UM2N model (graph-transformer encoder + DeformGAT blocks on the fused graph-attention
op), its losses, training and evaluation (docs/um2n.md)."""

from pyunlearn.mesh.dataset import generate_dataset, load_dataset
from pyunlearn.mesh.geometry import Mesh, tangled_cells, unit_square
from pyunlearn.mesh.losses import LossConfig, chamfer_distance, element_area_loss, um2n_loss
from pyunlearn.mesh.metrics import compare_errors, error_reduction, l2_error
from pyunlearn.mesh.model import (
    UM2N,
    MeshBatch,
    UM2NConfig,
    load_model,
    make_batch,
    sample_from_mesh,
    save_model,
)
from pyunlearn.mesh.monge_ampere import MAResult, MongeAmpereError, monge_ampere
from pyunlearn.mesh.monitor import HelmholtzMonitor
from pyunlearn.mesh.plots import plot_meshes
from pyunlearn.mesh.problems import HelmholtzProblem, random_problem
from pyunlearn.mesh.train import TrainConfig, TrainResult, evaluate, move_mesh, move_points, train_um2n

__all__ = [
    "UM2N",
    "HelmholtzMonitor",
    "HelmholtzProblem",
    "LossConfig",
    "MAResult",
    "Mesh",
    "MeshBatch",
    "MongeAmpereError",
    "TrainConfig",
    "TrainResult",
    "UM2NConfig",
    "chamfer_distance",
    "compare_errors",
    "element_area_loss",
    "error_reduction",
    "evaluate",
    "generate_dataset",
    "l2_error",
    "load_dataset",
    "load_model",
    "make_batch",
    "monge_ampere",
    "move_mesh",
    "move_points",
    "plot_meshes",
    "random_problem",
    "sample_from_mesh",
    "save_model",
    "tangled_cells",
    "train_um2n",
    "um2n_loss",
    "unit_square",
]
