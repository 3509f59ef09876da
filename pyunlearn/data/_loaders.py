"""labels_of and make_loader: the two dataset helpers every trainer, method and metric goes through."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset


def labels_of(dataset: Dataset) -> Tensor:
    """int64 labels [N] of a map-style dataset of (x, y).

    Fast paths (no sample is loaded): TensorDataset (its second tensor), Subset and ConcatDataset (recursive)
    and datasets with a `targets` attribute (torchvision). Anything else is read item by item."""
    if isinstance(dataset, TensorDataset):
        if len(dataset.tensors) < 2:
            raise ValueError(f"a TensorDataset needs (x, y) tensors to have labels, "
                             f"got {len(dataset.tensors)} tensor(s)")
        return dataset.tensors[1].detach().to("cpu", torch.int64).reshape(-1)
    if isinstance(dataset, Subset):
        idx = dataset.indices
        if isinstance(idx, Tensor):
            idx = idx.to("cpu", torch.int64)
        else:
            idx = torch.as_tensor(list(idx), dtype=torch.int64)
        return labels_of(dataset.dataset)[idx]
    if isinstance(dataset, ConcatDataset):
        parts = [labels_of(d) for d in dataset.datasets]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)
    targets = getattr(dataset, "targets", None)
    if targets is not None and hasattr(dataset, "__len__") and len(targets) == len(dataset):
        return torch.as_tensor(targets).to(torch.int64).reshape(-1)
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(f"dataset must be a map-style dataset of (x, y), got {type(dataset).__name__}")
    return torch.tensor([_label(dataset[i], i) for i in range(len(dataset))], dtype=torch.int64)


def _label(item, i: int) -> int:
    if not (isinstance(item, (tuple, list)) and len(item) >= 2):
        raise TypeError(f"dataset must yield (x, y) pairs, item {i} is a {type(item).__name__}")
    return int(item[1])


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int) -> DataLoader:
    """A single-process DataLoader whose shuffling draws only from its own torch.Generator(seed).

    Each pass over the loader draws a fresh permutation from that generator, so epoch e of two loaders made
    with the same seed yields the same batches. `loader.generator.get_state()` is what a checkpoint saves."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(f"dataset must be a map-style dataset of (x, y), got {type(dataset).__name__}")
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)
