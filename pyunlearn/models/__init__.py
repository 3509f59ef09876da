"""Classifiers for unlearning experiments; every one starts with its input normalisation layer (identity by
default) and is created through build_model / init_weights so that the original model and Retrain share their
initialisation for the same seed."""

from __future__ import annotations

from pyunlearn.models._build import MODEL_NAMES, build_model, init_weights
from pyunlearn.models._resnet import CIFAR10_NORMALIZE, BasicBlock, ResNet, resnet18, resnet20
from pyunlearn.models._small import MLP, Normalize, SmallCNN

__all__ = [
    "CIFAR10_NORMALIZE",
    "MLP",
    "MODEL_NAMES",
    "BasicBlock",
    "Normalize",
    "ResNet",
    "SmallCNN",
    "build_model",
    "init_weights",
    "resnet18",
    "resnet20",
]
