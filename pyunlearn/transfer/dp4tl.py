"""DP4TL (spec §3.15, "Selectivity Drives Productivity", NeurIPS 2023): prune source classes for transfer
learning. A surrogate trained on the full source scores every source class by how much of the *target*
training set maps to it, by Label Mapping (LM: argmax predictions) or Feature Mapping (FM: nearest source-class
centroid of the penultimate features); only the top-scored classes are kept for pretraining, then the model is
fine-tuned on the target.

    s = lm_scores(surrogate, target.train, num_source_classes=40)   # SourceScores(scores [K_s], ranking [K_s])
    kept = keep_classes(s, 0.25)                                     # top 25 % of the source classes

The offline source/target pair and the end-to-end pipeline live in pyunlearn.transfer._pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from pyunlearn.data import labels_of, make_loader


class SourceScores(NamedTuple):
    """scores: int64 [K_s] number of target training samples mapped to each source class;
    ranking: int64 [K_s] source class ids, highest score first (ties: lower class id first)."""

    scores: Tensor
    ranking: Tensor


def _ranking(scores: Tensor) -> Tensor:
    # stable sort on -score: ties keep ascending class order, so rankings are deterministic
    return torch.sort(-scores.to(torch.float64), stable=True).indices


def _check_dataset(name: str, ds) -> None:
    if not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
        raise TypeError(f"{name} must be a map-style dataset of (x, y), got {type(ds).__name__}")
    if len(ds) == 0:
        raise ValueError(f"{name} must not be empty")


def _check_k(name: str, k) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{name} must be a positive int, got {k!r}")
    return k


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def _map_batches(model: nn.Module, dataset: Dataset, fn: Callable[[Tensor], Tensor], batch_size: int) -> Tensor:
    """fn(x) over the dataset in order, eval mode, no grad, no augmentation (spec §3.15); CPU float32 [N, ...].
    The model's train/eval mode is restored afterwards."""
    device = _device_of(model)
    was = model.training
    model.eval()
    try:
        out = [fn(x.to(device)).float().cpu() for x, _ in make_loader(dataset, batch_size, shuffle=False, seed=0)]
    finally:
        model.train(was)
    return torch.cat(out)


def lm_scores(surrogate: nn.Module, target_dataset: Dataset, num_source_classes: int, *,
              batch_size: int = 512) -> SourceScores:
    """Label Mapping: Score(c) = #{j in target train : argmax_c surrogate(x_j) = c} (spec §3.15 [C]).

    surrogate: a classifier over the K_s = num_source_classes source classes (its logits must have K_s
    columns). target_dataset: the target *training* set; its labels are not used."""
    if not isinstance(surrogate, nn.Module):
        raise TypeError(f"surrogate must be a torch.nn.Module, got {type(surrogate).__name__}")
    _check_k("num_source_classes", num_source_classes)
    _check_dataset("target_dataset", target_dataset)

    def pred(x: Tensor) -> Tensor:
        logits = surrogate(x)  # [B, K_s]
        if logits.dim() != 2 or logits.shape[1] != num_source_classes:
            raise ValueError(f"surrogate must output logits [B, num_source_classes={num_source_classes}], "
                             f"got shape {tuple(logits.shape)}")
        return logits.argmax(1)

    hat_y = _map_batches(surrogate, target_dataset, pred, batch_size).to(torch.int64)  # [N_t]
    scores = torch.bincount(hat_y, minlength=num_source_classes)  # [K_s]
    return SourceScores(scores, _ranking(scores))


def _last_linear(model: nn.Module) -> nn.Module:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise ValueError("feature_layer='auto' needs a model with an nn.Linear head (its input is the penultimate "
                         "activation); pass feature_layer=<module name> or a callable x -> features instead")
    return last


def extract_features(model: nn.Module, dataset: Dataset, *, feature_layer: str | Callable = "auto",
                     batch_size: int = 512) -> Tensor:
    """Penultimate features [N, D] (flattened, float32, CPU) of every sample, eval mode, no grad.

    feature_layer: "auto" = the input of the model's last nn.Linear (for SmallCNN / ResNets: the global-avg-pool
    output, the spec's "avgpool output"), captured by a forward pre-hook; a module name from
    `model.named_modules()` = that module's output, captured by a forward hook; a callable x -> features
    (e.g. a model's `features()` method) = called directly."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_dataset("dataset", dataset)
    if callable(feature_layer) and not isinstance(feature_layer, str):
        return _map_batches(model, dataset, lambda x: feature_layer(x).flatten(1), batch_size)
    if not isinstance(feature_layer, str):
        raise TypeError(f"feature_layer must be 'auto', a module name or a callable, got {feature_layer!r}")
    if feature_layer == "auto":
        module, pre = _last_linear(model), True
    else:
        modules = dict(model.named_modules())
        if feature_layer not in modules:
            names = [n for n in modules if n]
            raise ValueError(f"feature_layer {feature_layer!r} is not a module of the model; it has {names}")
        module, pre = modules[feature_layer], False
    captured: list[Tensor] = []
    if pre:
        handle = module.register_forward_pre_hook(lambda m, args: captured.append(args[0].flatten(1)))
    else:
        handle = module.register_forward_hook(lambda m, args, out: captured.append(out.flatten(1)))

    def feats(x: Tensor) -> Tensor:
        captured.clear()
        model(x)
        if len(captured) != 1:
            raise ValueError(f"feature_layer {feature_layer!r} ran {len(captured)} times in one forward pass; "
                             f"expected exactly once")
        return captured[0]

    try:
        return _map_batches(model, dataset, feats, batch_size)
    finally:
        handle.remove()


def class_centroids(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """mu_c = mean of features [N, D] over samples with label c: float [K, D]; NaN rows for absent classes."""
    _check_k("num_classes", num_classes)
    if features.dim() != 2 or labels.dim() != 1 or len(features) != len(labels):
        raise ValueError(f"features must be [N, D] and labels [N], got shapes {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, num_classes={num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    f = features.to(torch.float64)
    sums = torch.zeros(num_classes, f.shape[1], dtype=torch.float64).index_add_(0, labels, f)  # [K, D]
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)  # [K]
    return (sums / counts[:, None]).to(features.dtype)  # 0/0 = NaN for absent classes


def nearest_centroid(features: Tensor, centroids: Tensor) -> Tensor:
    """argmin_c ||features_j - mu_c||_2 for every row: int64 [N]. NaN centroids (absent classes) never win.

    This is the intended FM rule (spec §3.15). The public code writes every distance into slot j (the sample
    index) instead of slot c, so its assignments collapse to class 0/1; that is not reproduced."""
    if features.dim() != 2 or centroids.dim() != 2:
        raise ValueError(f"features must be [N, D] and centroids [K, D], got shapes {tuple(features.shape)} and "
                         f"{tuple(centroids.shape)}")
    if features.shape[1] != centroids.shape[1]:
        raise ValueError(f"feature dims mismatch: target features have D={features.shape[1]}, source centroids "
                         f"have D={centroids.shape[1]}")
    d = torch.cdist(features.to(torch.float64), centroids.to(torch.float64))  # [N, K]
    d = torch.nan_to_num(d, nan=float("inf"))
    return d.argmin(1)


def fm_scores(surrogate: nn.Module, source_dataset: Dataset, target_dataset: Dataset, *,
              num_source_classes: int | None = None, feature_layer: str | Callable = "auto",
              batch_size: int = 512) -> SourceScores:
    """Feature Mapping: centroids mu_c of the surrogate's penultimate features over each source class c of
    `source_dataset`; every target training sample is assigned to its NEAREST centroid (L2);
    Score(c) = number of target samples assigned to c (spec §3.15).

    num_source_classes defaults to 1 + the largest source label; classes without source samples score 0.
    feature_layer: see extract_features."""
    _check_dataset("source_dataset", source_dataset)
    _check_dataset("target_dataset", target_dataset)
    y_s = labels_of(source_dataset)  # [N_s]
    k = int(y_s.max()) + 1 if num_source_classes is None else _check_k("num_source_classes", num_source_classes)
    f_s = extract_features(surrogate, source_dataset, feature_layer=feature_layer, batch_size=batch_size)
    f_t = extract_features(surrogate, target_dataset, feature_layer=feature_layer, batch_size=batch_size)
    assign = nearest_centroid(f_t, class_centroids(f_s, y_s, k))  # [N_t]
    scores = torch.bincount(assign, minlength=k)  # [K_s]
    return SourceScores(scores, _ranking(scores))


def num_kept(num_classes: int, keep: float) -> int:
    """How many classes `keep` means: an int k in [1, K] is a count; a float in (0, 1] is a fraction,
    k = max(1, round(keep * K))."""
    _check_k("num_classes", num_classes)
    if isinstance(keep, bool) or not isinstance(keep, (int, float)):
        raise TypeError(f"keep must be a fraction in (0, 1] or a class count, got {keep!r}")
    if isinstance(keep, int):
        if not 1 <= keep <= num_classes:
            raise ValueError(f"keep as a class count must be in [1, {num_classes}], got {keep}")
        return keep
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep as a fraction must be in (0, 1], got {keep}")
    return max(1, round(keep * num_classes))


def keep_classes(scores: SourceScores | Tensor, keep: float, *, reverse: bool = False) -> list[int]:
    """The source classes to pretrain on, ascending: the top-k by score (ties: lower class id), or with
    reverse=True the bottom-k (the paper's `--reverse` ablation). keep: see num_kept."""
    s = scores.scores if isinstance(scores, SourceScores) else torch.as_tensor(scores)
    if s.dim() != 1 or len(s) == 0:
        raise ValueError(f"scores must be a non-empty 1-D tensor [K_s], got shape {tuple(s.shape)}")
    k = num_kept(len(s), keep)
    # stable sorts: among tied scores the lower class id comes first in both directions
    order = torch.sort(s.to(torch.float64), stable=True).indices if reverse else _ranking(s)
    return sorted(order[:k].tolist())
