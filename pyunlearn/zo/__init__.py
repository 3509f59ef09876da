"""Zeroth-order optimisation (docs/zo_estimators.md, docs/zo_training.md).

- estimators: `spsa_projections` (MeZO-style in-place queries, O(d) memory), `rge` (batched over directions for
  Sequential models), `cge` (coordinate-wise, with feature reuse), `param_offsets`
- grasp: ZO-GraSP layer-wise pruning ratios; deepzero: the DeepZero trainer (sparse CGE + SGD, resumable);
  distributed: directions / coordinates split over torch.distributed ranks; mezo: MeZO fine-tuning
- the ZO optimizers (ZOSGD, ZOSGDSign, ZOSGDCons, ZOAdam) live in pyunlearn.optim
"""

from pyunlearn.zo.estimators import cge, param_offsets, rge, spsa_projections

__all__ = ["cge", "param_offsets", "rge", "spsa_projections"]
