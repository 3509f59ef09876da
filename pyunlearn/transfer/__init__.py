"""Transfer learning: DP4TL source-class pruning by Label Mapping / Feature Mapping (spec §3.15).

    from pyunlearn.transfer import lm_scores, fm_scores, keep_classes, run_dp4tl
    s = lm_scores(surrogate, target_train, num_source_classes=40)   # SourceScores(scores, ranking)
    kept = keep_classes(s, 0.25)                                     # the top 25 % source classes
    results = run_dp4tl()                                            # rotated digits -> upright digits

CLI: `pyunlearn dp4tl --score lm --score fm --keep 0.25 --out DIR` (registered by add_cli)."""

from __future__ import annotations

from pyunlearn.transfer._cli import add_cli
from pyunlearn.transfer._pipeline import (
    DP4TLConfig,
    DP4TLResults,
    TransferTask,
    digits_rotation_task,
    finetune_accuracy,
    pretrain,
    run_dp4tl,
)
from pyunlearn.transfer.dp4tl import (
    SourceScores,
    class_centroids,
    extract_features,
    fm_scores,
    keep_classes,
    lm_scores,
    nearest_centroid,
    num_kept,
)

__all__ = [
    "DP4TLConfig",
    "DP4TLResults",
    "SourceScores",
    "TransferTask",
    "add_cli",
    "class_centroids",
    "digits_rotation_task",
    "extract_features",
    "finetune_accuracy",
    "fm_scores",
    "keep_classes",
    "lm_scores",
    "nearest_centroid",
    "num_kept",
    "pretrain",
    "run_dp4tl",
]
