"""Small models for fast CPU experiments (8x8 digits): a BatchNorm CNN and an MLP, plus the input
normalisation layer every model in this package starts with."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor, nn

Stats = Union[float, Sequence[float]]  # noqa: UP007 (runtime alias)


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the model's first layer: inputs stay in [0, 1] pixel space
    (spec §1.1), which is where input perturbations (forget vectors, FGSM) live."""

    def __init__(self, mean: Stats, std: Stats):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)  # [C] or [1]
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)  # [C] or [1]
        if mean_t.shape != std_t.shape:
            raise ValueError(f"mean and std must have the same length, got {len(mean_t)} and {len(std_t)}")
        if (std_t <= 0).any():
            raise ValueError(f"std must be > 0, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t[None, :, None, None])  # [1, C, 1, 1]
        self.register_buffer("std", std_t[None, :, None, None])  # [1, C, 1, 1]

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def normalize_layer(normalize: tuple | None, in_channels: int) -> nn.Module:
    """Normalize(mean, std) from a (mean, std) pair, nn.Identity() for None; the channel count must match."""
    if normalize is None:
        return nn.Identity()
    if not (isinstance(normalize, (tuple, list)) and len(normalize) == 2):
        raise ValueError(f"normalize must be a (mean, std) pair or None, got {normalize!r}")
    layer = Normalize(*normalize)
    c = layer.mean.shape[1]
    if c not in (1, in_channels):
        raise ValueError(f"normalize has statistics for {c} channels, "
                         f"the model has in_channels={in_channels}")
    return layer


def _check_pos_int(name: str, v) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")


class SmallCNN(nn.Module):
    """conv3x3-BN-ReLU (w0) -> conv3x3-BN-ReLU (w1) -> maxpool 2 -> conv3x3-BN-ReLU (w2) -> global avg pool ->
    linear. With the default widths (16, 32, 64): 24.0k parameters; any input size >= 2x2 works.

    Sized for digits [1, 8, 8]: one epoch of the 1259 training images takes ~0.1 s on one CPU core. BatchNorm
    is there on purpose: unlearning methods differ in train/eval mode handling (spec §6.3)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (16, 32, 64),
                 normalize: tuple | None = None):
        super().__init__()
        _check_pos_int("in_channels", in_channels)
        _check_pos_int("num_classes", num_classes)
        if len(widths) != 3:
            raise ValueError(f"widths must have 3 entries, got {tuple(widths)}")
        for w in widths:
            _check_pos_int("widths[i]", w)
        w0, w1, w2 = widths
        self.normalize = normalize_layer(normalize, in_channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True),
            nn.Conv2d(w0, w1, 3, padding=1, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w1, w2, 3, padding=1, bias=False), nn.BatchNorm2d(w2), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(w2, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # x: [B, C, H, W] -> logits [B, K]
        return self.fc(self.features(self.normalize(x)))


class MLP(nn.Module):
    """Flatten -> (Linear -> ReLU) per hidden width -> Linear. No BatchNorm: the contrast to SmallCNN."""

    def __init__(self, in_features: int = 64, num_classes: int = 10, hidden: Sequence[int] = (128, 64)):
        super().__init__()
        _check_pos_int("in_features", in_features)
        _check_pos_int("num_classes", num_classes)
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for h in hidden:
            _check_pos_int("hidden[i]", h)
            layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            prev = h
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(prev, num_classes)
        self.in_features = in_features

    def forward(self, x: Tensor) -> Tensor:  # x: [B, *shape] with prod(shape) == in_features -> logits [B, K]
        if x.dim() < 2 or math.prod(x.shape[1:]) != self.in_features:
            raise ValueError(f"MLP expects inputs of {self.in_features} features, "
                             f"got shape {tuple(x.shape[1:])}")
        return self.fc(self.body(x))
