"""build_model and init_weights: the one way models are created, so the original model and Retrain start from
bit-identical parameters for the same init seed (spec §2.4, §6.1)."""

from __future__ import annotations

import math

import torch
from torch import nn

from pyunlearn.models._resnet import resnet18, resnet20
from pyunlearn.models._small import MLP, SmallCNN

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _draw(shape: torch.Size) -> torch.Tensor:
    """Values are drawn on the CPU in float32, then copied into the parameter: the same on every device."""
    return torch.empty(shape, dtype=torch.float32)


@torch.no_grad()
def init_weights(model: nn.Module, seed: int) -> nn.Module:
    """Re-initialise every parameter of `model` in place from `seed` alone and return the model.

    Walks modules in `named_modules()` order with one CPU torch.Generator(seed); the global RNG is untouched.
    Conv: He normal, fan_out, ReLU gain (torchvision ResNet); bias 0. Linear: PyTorch's default
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias. BatchNorm/GroupNorm/LayerNorm: weight 1, bias 0,
    running statistics reset. Any other module that owns parameters is reset with its own
    `reset_parameters()` under a forked RNG seeded from the generator (deterministic on one device).
    Same architecture + same seed -> bit-identical parameters (and buffers), on any device."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    g = torch.Generator().manual_seed(seed)
    for name, m in model.named_modules():
        own = list(m.parameters(recurse=False))
        if isinstance(m, nn.modules.conv._ConvNd):
            m.weight.copy_(nn.init.kaiming_normal_(_draw(m.weight.shape), mode="fan_out", nonlinearity="relu",
                                                   generator=g))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features) if m.in_features > 0 else 0.0
            m.weight.copy_(_draw(m.weight.shape).uniform_(-bound, bound, generator=g))
            if m.bias is not None:
                m.bias.copy_(_draw(m.bias.shape).uniform_(-bound, bound, generator=g))
        elif isinstance(m, _NORMS):
            if getattr(m, "weight", None) is not None:
                m.weight.fill_(1.0)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
            if isinstance(m, nn.modules.batchnorm._NormBase):
                m.reset_running_stats()
        elif own:
            if not hasattr(m, "reset_parameters"):
                raise TypeError(f"init_weights cannot initialise module {name!r} ({type(m).__name__}): "
                                f"it owns parameters but has no reset_parameters()")
            sub_seed = int(torch.randint(0, 2**62, (), generator=g))
            devices = [p.device for p in own if p.device.type == "cuda"]
            with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})):
                torch.manual_seed(sub_seed)
                m.reset_parameters()
    return model


MODEL_NAMES = ("cnn", "mlp", "resnet18", "resnet20")


def build_model(name: str, num_classes: int, input_shape: tuple, *, seed: int = 1,
                normalize: tuple | None = None) -> nn.Module:
    """A model for inputs of `input_shape` ([C, H, W]; any shape for "mlp"), initialised by
    init_weights(model, seed); the global RNG is left untouched.

    name: "cnn" (SmallCNN), "mlp" (MLP, hidden (128, 64)), "resnet18" (CIFAR stem), "resnet20".
    normalize: (mean, std) for the model's first layer, e.g. models.CIFAR10_NORMALIZE; None = identity."""
    if name not in MODEL_NAMES:
        raise ValueError(f"name must be one of {list(MODEL_NAMES)}, got {name!r}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 0 or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive sizes, got {tuple(input_shape)}")
    if name == "mlp" and normalize is not None:
        raise ValueError("normalize is not supported for name='mlp'; normalise the data instead")
    if name != "mlp" and len(shape) != 3:
        raise ValueError(f"input_shape must be [C, H, W] for name={name!r}, got {shape}")
    # the constructors' default init draws from the global RNG: fork it, init_weights overwrites it all
    with torch.random.fork_rng(devices=[]):
        if name == "mlp":
            model: nn.Module = MLP(in_features=math.prod(shape), num_classes=num_classes)
        elif name == "cnn":
            model = SmallCNN(in_channels=shape[0], num_classes=num_classes, normalize=normalize)
        elif name == "resnet18":
            model = resnet18(num_classes=num_classes, in_channels=shape[0], normalize=normalize)
        else:
            model = resnet20(num_classes=num_classes, in_channels=shape[0], normalize=normalize)
    return init_weights(model, seed)
