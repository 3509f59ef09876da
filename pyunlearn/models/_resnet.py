"""CIFAR ResNets: ResNet-18 with the CIFAR stem of the unlearning papers (spec §1.2) and the classic ResNet-20
(He et al. 2016, §4.2), both with the input normalisation as their first layer."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from pyunlearn.models._small import _check_pos_int, normalize_layer

# spec §1.1: per-channel CIFAR-10 statistics, applied inside the model (inputs stay in [0, 1])
CIFAR10_NORMALIZE = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


class BasicBlock(nn.Module):
    """Two conv3x3-BN, ReLU between and after the residual sum. Shortcut when the shape changes: "B" = 1x1
    conv + BN (ResNet-18), "A" = stride-2 subsampling with zero-padded channels, no parameters (ResNet-20)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "B":
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(planes))
            else:
                self.shortcut = _PadShortcut(planes - in_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _PadShortcut(nn.Module):
    """Option-A shortcut: x[:, :, ::s, ::s] with `extra` zero channels split evenly before and after."""

    def __init__(self, extra: int, stride: int):
        super().__init__()
        self.extra, self.stride = extra, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class ResNet(nn.Module):
    """normalize -> stem -> stages of BasicBlocks -> global avg pool -> fc.

    stem "cifar": conv3x3 stride 1 + BN + ReLU, no max-pool (spec §1.2); "imagenet": conv7x7/2 + BN + ReLU +
    maxpool 3x3/2 (the repos' --imagenet_arch)."""

    def __init__(self, blocks: Sequence[int], widths: Sequence[int], *, num_classes: int = 10,
                 in_channels: int = 3, normalize: tuple | None = None, shortcut: str = "B",
                 stem: str = "cifar"):
        super().__init__()
        _check_pos_int("num_classes", num_classes)
        _check_pos_int("in_channels", in_channels)
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        self.normalize = normalize_layer(normalize, in_channels)
        w0 = widths[0]
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, w0, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, w0, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(w0)
        stages = []
        in_planes = w0
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layers = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(in_planes, w, stride=stride, shortcut=shortcut))
                in_planes = w
            stages.append(nn.Sequential(*layers))
        self.layers = nn.ModuleList(stages)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # x: [B, C, H, W] in pixel space -> logits [B, K]
        out = self.maxpool(F.relu(self.bn1(self.conv1(self.normalize(x)))))
        for stage in self.layers:
            out = stage(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # [B, widths[-1]]
        return self.fc(out)


def resnet18(num_classes: int = 10, in_channels: int = 3, normalize: tuple | None = None,
             stem: str = "cifar") -> ResNet:
    """ResNet-18 (BasicBlock [2, 2, 2, 2], widths 64-512, 1x1-conv shortcuts; 11.2M parameters for 10 classes)
    with the CIFAR stem. For CIFAR-10 pass normalize=CIFAR10_NORMALIZE (spec §1.1); None: no normalisation."""
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes=num_classes, in_channels=in_channels,
                  normalize=normalize, shortcut="B", stem=stem)


def resnet20(num_classes: int = 10, in_channels: int = 3, normalize: tuple | None = None) -> ResNet:
    """The classic CIFAR ResNet-20: conv3x3(16) + 3 stages x 3 BasicBlocks (16, 32, 64 channels), option-A
    (zero-padding) shortcuts; 0.27M parameters for 10 classes."""
    return ResNet([3, 3, 3], [16, 32, 64], num_classes=num_classes, in_channels=in_channels,
                  normalize=normalize, shortcut="A", stem="cifar")
