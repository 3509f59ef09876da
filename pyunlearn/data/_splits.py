"""DataSplits: ONE seeded train/val/test split shared by the original model, the forget/retain selection and
Retrain (spec §2.6 pitfall 1), plus the batch-wise train augmentation that goes with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset

from pyunlearn.data._loaders import labels_of

Augment = Callable[[Tensor, torch.Generator], Tensor]  # x [B, *shape], generator -> x' [B, *shape]


@dataclass
class DataSplits:
    """A dataset split once, by `split_seed`; every stage of an unlearning experiment uses these same sets.

    Datasets yield (x: float Tensor [*input_shape], y: int64 scalar Tensor) without augmentation; `augment`
    is applied batch-wise by the trainers. `split_seed` is None when the caller supplied the split."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    augment: Augment | None
    split_seed: int | None

    def __repr__(self) -> str:
        return (f"DataSplits(name={self.name!r}, train={len(self.train)}, val={len(self.val)}, "
                f"test={len(self.test)}, num_classes={self.num_classes}, input_shape={self.input_shape}, "
                f"augment={self.augment!r}, split_seed={self.split_seed})")


class RandomTranslate:
    """Shift every image of a batch by an independent random (dy, dx) in [-max_shift, max_shift]^2 with zero
    padding, optionally followed by a random horizontal flip.

    RandomTranslate(1) on 8x8 digits is the analogue of CIFAR's RandomCrop(32, padding=4);
    RandomTranslate(4, flip=True) is exactly the CIFAR recipe (spec §1.1). Shifts are drawn on the CPU from
    `generator`, so a seeded generator gives the same augmentation on every device."""

    def __init__(self, max_shift: int = 1, flip: bool = False):
        if not isinstance(max_shift, int) or isinstance(max_shift, bool) or max_shift < 0:
            raise ValueError(f"max_shift must be an int >= 0, got {max_shift!r}")
        self.max_shift = max_shift
        self.flip = bool(flip)

    def __repr__(self) -> str:
        return f"RandomTranslate(max_shift={self.max_shift}, flip={self.flip})"

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"x must be a batch of images [B, C, H, W], got shape {tuple(x.shape)}")
        B, _, H, W = x.shape
        s = self.max_shift
        out = x
        if s > 0 and B > 0:
            offsets = torch.randint(0, 2 * s + 1, (2, B), generator=generator).to(x.device)  # [2, B]
            padded = torch.nn.functional.pad(x, (s, s, s, s))  # [B, C, H+2s, W+2s], zeros outside
            rows = offsets[0][:, None] + torch.arange(H, device=x.device)  # [B, H]
            cols = offsets[1][:, None] + torch.arange(W, device=x.device)  # [B, W]
            b = torch.arange(B, device=x.device)[:, None, None]  # [B, 1, 1]
            # advanced indices on dims 0, 2, 3 around a slice: result is [B, H, W, C]
            out = padded[b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
        if self.flip and B > 0:
            flip = (torch.rand(B, generator=generator) < 0.5).to(x.device)  # [B]
            out = torch.where(flip[:, None, None, None], out.flip(-1), out)
        return out


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1 to leave a train set, "
                         f"got {val_fraction} + {test_fraction}")


def stratified_split(y: Tensor, *, seed: int, val_fraction: float, test_fraction: float
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class seeded split of range(len(y)) into (train, val, test) index tensors, each sorted ascending.

    Every class gives round(fraction * n_c) samples to val and to test (the per-class 10 % of spec §1.1) and
    keeps at least one in train. Depends only on (y, seed, fractions)."""
    _check_fractions(val_fraction, test_fraction)
    g = torch.Generator().manual_seed(int(seed))
    parts: tuple[list, list, list] = ([], [], [])
    for c in torch.unique(y).tolist():  # ascending class order: the draw sequence is fixed
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = min(round(test_fraction * len(idx)), len(idx) - 1)
        n_val = min(round(val_fraction * len(idx)), len(idx) - 1 - n_test)
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val:n_val + n_test])
        parts[0].append(idx[n_val + n_test:])
    train, val, test = (torch.cat(p).sort().values if p else torch.empty(0, dtype=torch.int64) for p in parts)
    return train, val, test


def _labels_tensor(y, name: str = "y") -> Tensor:
    y = torch.as_tensor(y)
    if y.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of class ids, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        if y.is_floating_point() and torch.equal(y, y.round()):
            return y.to(torch.int64)
        raise TypeError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    return y.to(torch.int64)


def _num_classes(y: Tensor, num_classes: int | None) -> int:
    if len(y) and int(y.min()) < 0:
        raise ValueError(f"labels must be >= 0, got a label {int(y.min())}")
    top = int(y.max()) + 1 if len(y) else 0
    if num_classes is None:
        return top
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if top > num_classes:
        raise ValueError(f"labels must be < num_classes={num_classes}, got a label {top - 1}")
    return num_classes


def from_tensors(X, y, *, name: str = "custom", split_seed: int = 0, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, num_classes: int | None = None,
                 augment: Augment | None = None) -> DataSplits:
    """Split in-memory tensors X [N, *shape] (float; integers are converted) and y [N] with a stratified
    seeded split (see `stratified_split`) into TensorDatasets."""
    X = torch.as_tensor(X)
    if X.dim() < 2:
        raise ValueError(f"X must be [N, *input_shape] with at least 2 dims, got shape {tuple(X.shape)}")
    if not X.is_floating_point():
        X = X.to(torch.get_default_dtype())
    y = _labels_tensor(y)
    if len(X) != len(y):
        raise ValueError(f"X and y must have the same length, got {len(X)} and {len(y)}")
    if len(y) == 0:
        raise ValueError("X and y must not be empty")
    k = _num_classes(y, num_classes)
    tr, va, te = stratified_split(y, seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction)
    sets = [TensorDataset(X[i], y[i]) for i in (tr, va, te)]
    return DataSplits(name=name, train=sets[0], val=sets[1], test=sets[2], num_classes=k,
                      input_shape=tuple(X.shape[1:]), augment=augment, split_seed=int(split_seed))


def load_digits(split_seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> DataSplits:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes; no download) as images [1, 8, 8] in [0, 1]
    (pixel / 16), split per class and seeded: with the defaults 1259 train / 179 val / 359 test.

    augment = RandomTranslate(1): a random +-1 pixel shift with zero padding, the 8x8 analogue of CIFAR's
    RandomCrop(padding=4); no flips (digits are not mirror-symmetric)."""
    from sklearn.datasets import load_digits as _sk_load_digits

    d = _sk_load_digits()
    X = torch.as_tensor(d.images, dtype=torch.float32).div_(16.0).unsqueeze(1)  # [1797, 1, 8, 8]
    y = torch.as_tensor(d.target, dtype=torch.int64)  # [1797]
    return from_tensors(X, y, name="digits", split_seed=split_seed, val_fraction=val_fraction,
                        test_fraction=test_fraction, num_classes=10, augment=RandomTranslate(1))


def from_datasets(train: Dataset, test: Dataset, *, val: Dataset | None = None,
                  num_classes: int | None = None, name: str = "custom",
                  augment: Augment | None = None) -> DataSplits:
    """Wrap a split the caller already made (e.g. torchvision CIFAR-10 with ToTensor only). Without `val` the
    validation set is empty. num_classes defaults to 1 + the largest train/test label; split_seed is None."""
    for arg, ds in (("train", train), ("test", test), ("val", val)):
        if ds is not None and not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
            raise TypeError(f"{arg} must be a map-style dataset of (x, y), got {type(ds).__name__}")
    if len(train) == 0:
        raise ValueError("train must not be empty")
    if val is None:
        val = Subset(train, [])
    ys = [labels_of(ds) for ds in (train, val, test)]
    k = _num_classes(torch.cat(ys), num_classes)
    x0 = train[0][0]
    if not isinstance(x0, Tensor):
        raise TypeError(f"train must yield (Tensor, label) pairs, got x of type {type(x0).__name__}")
    return DataSplits(name=name, train=train, val=val, test=test, num_classes=k, input_shape=tuple(x0.shape),
                      augment=augment, split_seed=None)

