"""Forget-set selection: which training samples to unlearn, always as a subset of splits.train (spec §1.1)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from pyunlearn.data._loaders import labels_of
from pyunlearn.data._splits import DataSplits

_KINDS = ("class", "random", "indices")


@dataclass(frozen=True)
class ForgetSpec:
    """A parsed forget-set spec: kind "class" (value: class id), "random" (value: fraction of train in (0, 1))
    or "indices" (value: tuple of train indices). `str(spec)` is the canonical spec string."""

    kind: str
    value: int | float | tuple

    @classmethod
    def parse(cls, text: str) -> ForgetSpec:
        """"class:3" | "random:0.1" | "indices:1,5,9" | "indices:@path" (ints split by commas/whitespace,
        '#' starts a comment)."""
        if not isinstance(text, str):
            raise TypeError(f"spec must be a str or ForgetSpec, got {type(text).__name__}")
        kind, sep, arg = text.strip().partition(":")
        kind, arg = kind.strip(), arg.strip()
        if not sep or kind not in _KINDS or not arg:
            raise ValueError(f"spec must look like 'class:3', 'random:0.1', 'indices:1,5,9' or "
                             f"'indices:@file.txt', got {text!r}")
        if kind == "class":
            if not re.fullmatch(r"[+-]?\d+", arg):
                raise ValueError(f"spec 'class:<id>' needs an integer class id, got {text!r}")
            return cls("class", int(arg))
        if kind == "random":
            try:
                frac = float(arg)
            except ValueError:
                raise ValueError(f"spec 'random:<fraction>' needs a number, got {text!r}") from None
            return cls("random", frac)
        if arg.startswith("@"):
            path = Path(arg[1:]).expanduser()
            if not path.is_file():
                raise ValueError(f"spec {text!r}: index file {str(path)!r} does not exist")
            body = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
            source = f"file {str(path)!r}"
        else:
            body, source = arg, "spec"
        tokens = [t for t in re.split(r"[,\s]+", body) if t]
        bad = [t for t in tokens if not re.fullmatch(r"[+-]?\d+", t)]
        if bad:
            raise ValueError(f"spec {text!r}: indices must be integers, got {bad[:5]} in the {source}")
        return cls("indices", tuple(int(t) for t in tokens))

    def __str__(self) -> str:
        if self.kind == "indices":
            return "indices:" + ",".join(str(i) for i in self.value)
        return f"{self.kind}:{self.value}"


@dataclass
class ForgetSet:
    """D_f and D_r: complementary Subsets of splits.train (no augmentation), both in train order."""

    kind: str  # "class" | "random" | "indices"
    forget: Dataset  # Subset of splits.train
    retain: Dataset  # Subset of splits.train: the complement, in train order
    forget_indices: Tensor  # [n_f] int64, sorted, into splits.train
    forget_class: int | None  # the class for kind == "class" (the whole class), else None
    seed: int
    spec: str = ""  # the spec as given (ForgetSpec: its canonical string), for records

    def __repr__(self) -> str:
        return (f"ForgetSet(kind={self.kind!r}, spec={self.spec!r}, forget={len(self.forget)}, "
                f"retain={len(self.retain)}, forget_class={self.forget_class}, seed={self.seed})")


def select_forget(splits: DataSplits, spec: str | ForgetSpec, *, seed: int = 1) -> ForgetSet:
    """Choose the forget set inside splits.train.

    "class:c": every train sample of class c. "random:f": round(f * |train|) samples drawn without replacement
    by torch.Generator(seed) (the forget seed, separate from split and init seeds, spec §6.1).
    "indices:...": the given train indices (no duplicates). The forget set and the retain set must both be
    non-empty."""
    if not isinstance(splits, DataSplits):
        raise TypeError(f"splits must be a DataSplits, got {type(splits).__name__}")
    if isinstance(spec, str):
        text, spec = spec.strip(), ForgetSpec.parse(spec)
    elif isinstance(spec, ForgetSpec):
        text = str(spec)
    else:
        raise TypeError(f"spec must be a str or ForgetSpec, got {type(spec).__name__}")
    short = text if len(text) <= 60 else text[:57] + "..."
    n = len(splits.train)
    forget_class = None
    if spec.kind == "class":
        c = spec.value
        if not 0 <= c < splits.num_classes:
            raise ValueError(f"spec {short!r}: class id must be in [0, {splits.num_classes}), got {c}")
        idx = (labels_of(splits.train) == c).nonzero().flatten()
        if len(idx) == 0:
            raise ValueError(f"spec {short!r}: class {c} has no samples in the train set")
        forget_class = c
    elif spec.kind == "random":
        frac = spec.value
        if not (isinstance(frac, (int, float)) and math.isfinite(frac) and 0.0 < frac < 1.0):
            raise ValueError(f"spec {short!r}: fraction must be in (0, 1), got {frac!r}")
        k = round(frac * n)
        if k == 0:
            raise ValueError(f"spec {short!r} selects no sample of a train set of {n}: empty forget set")
        g = torch.Generator().manual_seed(int(seed))
        idx = torch.randperm(n, generator=g)[:k]
    elif spec.kind == "indices":
        idx = torch.as_tensor(spec.value, dtype=torch.int64).reshape(-1)
        if len(idx) == 0:
            raise ValueError(f"spec {short!r}: empty forget set")
        out = idx[(idx < 0) | (idx >= n)]
        if len(out):
            raise IndexError(f"spec {short!r}: indices must be in [0, {n}) (the train set), "
                             f"got {out[:5].tolist()}")
        uniq, counts = torch.unique(idx, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"spec {short!r}: indices must not repeat, got duplicates "
                             f"{uniq[counts > 1][:5].tolist()}")
    else:
        raise ValueError(f"spec kind must be one of {_KINDS}, got {spec.kind!r}")
    idx = idx.sort().values
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    rest = (~mask).nonzero().flatten()
    if len(rest) == 0:
        raise ValueError(f"spec {short!r} selects the whole train set: the retain set would be empty")
    return ForgetSet(kind=spec.kind, forget=Subset(splits.train, idx.tolist()),
                     retain=Subset(splits.train, rest.tolist()), forget_indices=idx,
                     forget_class=forget_class, seed=int(seed), spec=text)
