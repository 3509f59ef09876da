"""Datasets for classifier unlearning: one seeded split (DataSplits) shared by the original model, the
forget/retain selection and Retrain; forget-set specs; seeded loaders.

    splits = load_digits(split_seed=0)               # 1259 / 179 / 359 images [1, 8, 8] in [0, 1]
    fs = select_forget(splits, "random:0.1", seed=1)  # fs.forget, fs.retain: Subsets of splits.train
"""

from __future__ import annotations

from pyunlearn.data._forget import ForgetSet, ForgetSpec, select_forget
from pyunlearn.data._loaders import labels_of, make_loader
from pyunlearn.data._splits import (
    DataSplits,
    RandomTranslate,
    from_datasets,
    from_tensors,
    load_digits,
    stratified_split,
)

__all__ = [
    "DataSplits",
    "ForgetSet",
    "ForgetSpec",
    "RandomTranslate",
    "from_datasets",
    "from_tensors",
    "labels_of",
    "load_digits",
    "make_loader",
    "select_forget",
    "stratified_split",
]
