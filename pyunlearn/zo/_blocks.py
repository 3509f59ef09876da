"""Pieces shared by the batched RGE forward (_batched.py) and CGE with feature reuse (_reuse.py).

A model is evaluated for P "copies" at once (P directions, or P perturbed coordinates, plus one clean copy):
activations carry a leading copy dimension, [P, N, ...]. Modules that treat every sample alone (activations,
pooling, Flatten) run on the copies folded into the batch; BatchNorm computes its statistics per copy, as P
separate forwards would; losses are reduced per copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Elementwise modules: a change of one unit/channel stays in that unit/channel.
ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
               nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign, nn.Tanhshrink,
               nn.LogSigmoid, nn.Identity)
# Per-sample, per-channel modules: a change of one channel stays in that channel.
CHANNEL_LOCAL = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


def is_elementwise(m: nn.Module) -> bool:
    if isinstance(m, nn.Dropout):
        return not m.training or m.p == 0.0  # identity then; an active dropout is random: never batched
    return isinstance(m, ELEMENTWISE)


def is_per_sample(m: nn.Module) -> bool:
    """Parameter-free modules whose output for a sample depends on that sample only (safe to fold copies into
    the batch dimension)."""
    if is_elementwise(m) or isinstance(m, CHANNEL_LOCAL):
        return True
    if isinstance(m, nn.Flatten):
        return m.start_dim != 0
    if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
        return m.dim is not None and m.dim != 0
    return False


def fold(m: nn.Module, h: Tensor) -> Tensor:
    """m over h [P, N, ...] with the copies folded into the batch: -> [P, N, ...out]."""
    p, n = h.shape[0], h.shape[1]
    out = m(h.reshape(p * n, *h.shape[2:]))
    return out.view(p, n, *out.shape[1:])


def conv_padding(m: nn.Conv2d) -> tuple[int, int] | None:
    """The (ph, pw) zero padding of a Conv2d, or None when it is not plain zero padding given as numbers."""
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        return None
    return (int(m.padding[0]), int(m.padding[1]))


def batch_norm_copies(m: nn.Module, h: Tensor, weight: Tensor | None = None,
                      bias: Tensor | None = None, channels: Tensor | None = None) -> Tensor:
    """BatchNorm over h [P, N, C, *spatial] with statistics per copy (train mode, or no running stats) or the
    running statistics (eval mode), never updating the running statistics.

    weight / bias: per-copy affine parameters [P, C] (default: the module's [C]). channels [P, C]: which channels
    of the module h holds per copy (a slice of a one-channel change, see _reuse.py); default all of them."""
    dims = (1,) + tuple(range(3, h.dim()))
    if m.training or m.running_mean is None:
        mean = h.mean(dim=dims, keepdim=True)
        var = (h - mean).square().mean(dim=dims, keepdim=True)
    else:
        rm, rv = m.running_mean, m.running_var
        if channels is not None:
            rm, rv = rm[channels], rv[channels]  # [P, C]
        shape = (h.shape[0] if channels is not None else 1, 1, h.shape[2]) + (1,) * (h.dim() - 3)
        mean, var = rm.view(shape), rv.view(shape)
    out = (h - mean) * torch.rsqrt(var + m.eps)
    if weight is None and m.weight is not None:
        weight = m.weight[channels] if channels is not None else m.weight
    if bias is None and m.bias is not None:
        bias = m.bias[channels] if channels is not None else m.bias
    for t, op in ((weight, "mul"), (bias, "add")):
        if t is None:
            continue
        shape = (t.shape[0] if t.dim() == 2 else 1, 1, h.shape[2]) + (1,) * (h.dim() - 3)
        out = out * t.view(shape) if op == "mul" else out + t.view(shape)
    return out


def dense_forward(modules: list[nn.Module], h: Tensor) -> Tensor:
    """Run unperturbed modules over h [P, N, ...]: shared weights, so Linear/Conv2d fold the copies into the
    batch (one GEMM/conv over P*N rows); BatchNorm per copy; other modules copy by copy (exact, slow)."""
    for m in modules:
        if isinstance(m, nn.Linear):
            h = F.linear(h, m.weight, m.bias)
        elif isinstance(m, BATCHNORM):
            h = batch_norm_copies(m, h)
        elif isinstance(m, nn.ReLU):
            h = torch.relu_(h) if h._base is None else torch.relu(h)  # the copies are ours: no new buffer
        elif isinstance(m, nn.Conv2d) or is_per_sample(m):
            h = fold(m, h)
        else:
            h = torch.stack([m(h[k]) for k in range(h.shape[0])])
    return h


def _cross_entropy_spec(loss_fn) -> int | None:
    """ignore_index when loss_fn is a plain mean cross-entropy we can reduce ourselves in float64, else None."""
    if loss_fn is F.cross_entropy:
        return -100
    if (type(loss_fn) is nn.CrossEntropyLoss and loss_fn.weight is None and loss_fn.reduction == "mean"
            and loss_fn.label_smoothing == 0.0):
        return loss_fn.ignore_index
    return None


def _is_mse(loss_fn) -> bool:
    return loss_fn is F.mse_loss or (type(loss_fn) is nn.MSELoss and loss_fn.reduction == "mean")


def copy_losses(loss_fn: Callable, out: Tensor, y: Tensor) -> Tensor:
    """Per-copy losses [P] in float64 of out [P, N, ...] against y.

    Mean cross-entropy on [N, C] logits and mean squared error are reduced here in float64 (the finite
    differences are ~1e-5 of the loss, below float32's rounding of a mean over the batch); any other loss_fn is
    called copy by copy and its value cast to float64."""
    fp64 = out.device.type != "mps"
    ignore = _cross_entropy_spec(loss_fn)
    if ignore is not None and out.dim() == 3 and y.dim() == 1 and not y.is_floating_point():
        o = out.double() if fp64 else out
        valid = y != ignore
        picked = o.gather(-1, torch.where(valid, y, 0).view(1, -1, 1).expand(out.shape[0], -1, 1))[..., 0]
        nll = torch.logsumexp(o, dim=-1) - picked  # (logsumexp: ~3x faster than log_softmax over few classes)
        return (nll * valid).sum(1) / valid.sum()
    if _is_mse(loss_fn) and y.shape == out.shape[1:]:
        diff = (out.double() if fp64 else out) - y
        return diff.square().flatten(1).mean(1)
    return torch.stack([loss_fn(out[k], y).detach().reshape(()) for k in range(out.shape[0])]).double()


def sample_terms(loss_fn: Callable, out: Tensor, y: Tensor) -> Tensor | None:
    """Float64 per-row terms [M] of a mean loss over rows out [M, ...] with targets y [M, ...]: the loss of N rows
    is their sum / loss_denominator. None when loss_fn is not a mean cross-entropy/MSE we reduce ourselves."""
    if out.device.type == "mps":
        return None
    ignore = _cross_entropy_spec(loss_fn)
    if ignore is not None and out.dim() == 2 and y.dim() == 1 and not y.is_floating_point():
        o, valid = out.double(), y != ignore
        picked = o.gather(1, torch.where(valid, y, 0)[:, None])[:, 0]
        return (torch.logsumexp(o, dim=1) - picked) * valid
    if _is_mse(loss_fn) and y.shape == out.shape:
        return (out.double() - y).square().flatten(1).sum(1)
    return None


def loss_denominator(loss_fn: Callable, y: Tensor) -> Tensor | int:
    ignore = _cross_entropy_spec(loss_fn)
    return (y != ignore).sum() if ignore is not None else y.numel()


def model_loss(loss_fn: Callable, out: Tensor, y: Tensor) -> Tensor:
    """The loss of one forward, reduced exactly as copy_losses reduces each copy (0-d, float64)."""
    return copy_losses(loss_fn, out.unsqueeze(0), y)[0]


def blocks_of(model: nn.Module) -> list[nn.Module] | None:
    """The blocks whose composition is model's forward: an nn.Sequential's children (nested Sequentials
    flattened), or what the model declares with a `zo_blocks` attribute/method; None otherwise."""
    declared = getattr(model, "zo_blocks", None)
    if declared is not None:
        blocks = list(declared() if callable(declared) else declared)
    elif isinstance(model, nn.Sequential):
        blocks = list(model)
    else:
        return None
    flat: list[nn.Module] = []
    for b in blocks:
        if not isinstance(b, nn.Module):
            raise TypeError(f"zo_blocks of {type(model).__name__} must be nn.Modules, got {type(b).__name__}")
        flat.extend(blocks_of(b) if isinstance(b, nn.Sequential) else [b])
    return flat


@contextlib.contextmanager
def keep_buffers(model: nn.Module) -> Iterator[None]:
    """Give the model's buffers (BatchNorm running statistics) back as they were: the perturbed forwards of an
    estimator must not move them."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)
