"""Inputs for the masked-optimizer op tests: shapes, mask forms and one argument builder per op."""

from __future__ import annotations

import torch

from pyunlearn.ops._checks import state_dtype

SHAPES = {"one": (1,), "odd": (7,), "2d": (33, 65), "noncontig": (65, 33), "empty": (0,)}
MASKS = ["none", "bool", "uint8", "idx32", "idx64", "all_off", "all_on", "empty_idx"]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def tensor(shape_id: str, dtype: torch.dtype, device: str, kind: str = "normal") -> torch.Tensor:
    shape = SHAPES[shape_id]
    t = torch.randn(shape, device=device, dtype=torch.float64)
    if kind == "positive":
        t = t.abs() + 0.1
    elif kind == "small":
        t = t * 1e-2
    t = t.to(dtype)
    # non-contiguous: a transposed view (strides (1, 65)) with the logical shape (33, 65)
    return t.t() if shape_id == "noncontig" else t


def mask(form: str, like: torch.Tensor) -> torch.Tensor | None:
    n, dev = like.numel(), like.device
    if form == "none":
        return None
    if form in ("bool", "uint8"):
        m = torch.rand(like.shape, device=dev) < 0.5
        return m if form == "bool" else m.to(torch.uint8)
    if form == "all_off":
        return torch.zeros(like.shape, dtype=torch.bool, device=dev)
    if form == "all_on":
        return torch.ones(like.shape, dtype=torch.bool, device=dev)
    if form == "empty_idx":
        return torch.empty(0, dtype=torch.int64, device=dev)
    idx = torch.randperm(n, device=dev)[: max(1, n // 3)] if n else torch.empty(0, dtype=torch.int64, device=dev)
    return idx.to(torch.int32 if form == "idx32" else torch.int64)


def on_mask(m: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Dense bool 'this entry steps' of like's shape."""
    if m is None:
        return torch.ones(like.shape, dtype=torch.bool, device=like.device)
    if m.dtype in (torch.bool, torch.uint8):
        return m != 0
    flat = torch.zeros(like.numel(), dtype=torch.bool, device=like.device)
    flat[m.long()] = True
    return flat.view(like.shape)


# Each builder returns (tensor lists in schema order, names of the mutated lists, scalar args), for two params.
def sgd_args(shape_id, dtype, device, form, momentum=0.9, nesterov=True, first_step=False):
    s = state_dtype(dtype)
    ps = [tensor(shape_id, dtype, device), tensor("odd", dtype, device)]
    gs = [tensor(shape_id, dtype, device), tensor("odd", dtype, device)]
    bufs = [tensor(shape_id, s, device), tensor("odd", s, device)] if momentum else []
    masks = [mask(form, ps[0]), mask(form, ps[1])]
    return dict(params=ps, grads=gs, momentum_buffers=bufs, masks=masks), (
        0.1, momentum, 0.0, 0.01, nesterov, False, first_step)


def adamw_args(shape_id, dtype, device, form, amsgrad=True, maximize=False):
    s = state_dtype(dtype)
    ps = [tensor(shape_id, dtype, device), tensor("odd", dtype, device)]
    gs = [tensor(shape_id, dtype, device), tensor("odd", dtype, device)]
    ms = [tensor(shape_id, s, device, "small"), tensor("odd", s, device, "small")]
    vs = [tensor(shape_id, s, device, "positive"), tensor("odd", s, device, "positive")]
    xs = [v * 1.5 if i == 0 else v * 0.5 for i, v in enumerate(vs)] if amsgrad else []
    masks = [mask(form, ps[0]), mask(form, ps[1])]
    return dict(params=ps, grads=gs, exp_avgs=ms, exp_avg_sqs=vs, max_exp_avg_sqs=xs, masks=masks), (
        1e-2, 0.9, 0.999, 0.01, 1e-8, 3.0, amsgrad, maximize)


def sophia_args(shape_id, dtype, device, form, update_hessian=True, maximize=False):
    s = state_dtype(dtype)
    ps = [tensor(shape_id, dtype, device), tensor("odd", dtype, device)]
    gs = [tensor(shape_id, dtype, device), tensor("odd", dtype, device)]
    ms = [tensor(shape_id, s, device, "small"), tensor("odd", s, device, "small")]
    # h: mixed signs (a Hutchinson estimate can be negative) and small magnitudes, so some entries clip, some not
    hs = [tensor(shape_id, s, device, "small"), tensor("odd", s, device, "small")]
    masks = [mask(form, ps[0]), mask(form, ps[1])]
    return dict(params=ps, grads=gs, exp_avgs=ms, hessians=hs, masks=masks), (
        1e-2, 0.9, 0.95, 0.04, 10.0, 0.1, 1e-15, update_hessian, maximize)


def clone_args(d: dict) -> dict:
    return {k: [None if t is None else t.clone() if k != "masks" else t for t in v] for k, v in d.items()}
