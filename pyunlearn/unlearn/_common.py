"""The method registry and `unlearn()`: every method is fn(model, forget, retain, cfg, ctx) -> model, with its
spec defaults as a dataclass config."""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn


@dataclass
class Context:
    """What every method gets besides its config."""

    num_classes: int
    augment: Optional[Callable] = None  # batch-wise train augmentation (x [B, ...], generator) -> x
    seed: int = 0  # shuffling, random labels, noise
    init_seed: int = 1  # Retrain's initialisation (the original model's)
    progress: bool = True
    extra: dict = field(default_factory=dict)  # method-specific facts for the Record (mask sizes, ...)


@dataclass
class Record:
    """What a method did: its full config, wall-clock seconds of the whole call (RTE), method-specific extras."""

    method: str
    config: dict
    seconds: float
    extra: dict = field(default_factory=dict)


METHODS: dict[str, tuple[type, Callable]] = {}


def register(name: str, config_cls: type):
    """Decorator: register fn(model, forget, retain, cfg, ctx) -> model under `name` with its config dataclass."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls of method {name!r} must be a dataclass, got {config_cls!r}")

    def wrap(fn: Callable) -> Callable:
        METHODS[name] = (config_cls, fn)
        return fn

    return wrap


def make_config(method: str, **config):
    """The method's config dataclass with `config` applied; unknown methods or keys raise naming the choices."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    cls = METHODS[method][0]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - names)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for method {method!r}; it takes {sorted(names)}")
    return cls(**config)


def unlearn(model: nn.Module, forget, retain, method: str, *, num_classes: Optional[int] = None, augment=None,
            seed: int = 0, init_seed: int = 1, progress: bool = True, **config) -> tuple[nn.Module, Record]:
    """Unlearn `forget` from a copy of `model` (the caller's model is never modified) with `method`.

    forget, retain: datasets of (x, y). num_classes defaults to the model's output width. Returns the unlearned
    model and a Record whose `seconds` (RTE) covers the whole method call, pre-computation included."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, ds in (("forget", forget), ("retain", retain)):
        if not hasattr(ds, "__len__") or not hasattr(ds, "__getitem__"):
            raise TypeError(f"{name} must be a map-style dataset of (x, y), got {type(ds).__name__}")
    if len(forget) == 0:
        raise ValueError("forget must not be empty, got a dataset of length 0")
    cfg = make_config(method, **config)
    if num_classes is None:
        num_classes = _output_width(model, forget)
    ctx = Context(num_classes=num_classes, augment=augment, seed=seed, init_seed=init_seed, progress=progress)
    fn = METHODS[method][1]
    work = copy.deepcopy(model)
    start = time.perf_counter()
    out = fn(work, forget, retain, cfg, ctx)
    seconds = time.perf_counter() - start
    return out, Record(method=method, config=dataclasses.asdict(cfg), seconds=seconds, extra=ctx.extra)


def _output_width(model: nn.Module, dataset) -> int:
    p = next(model.parameters(), None)
    x = dataset[0][0].to(p.device if p is not None else "cpu")
    was = model.training
    model.eval()
    with torch.no_grad():
        width = int(model(x.unsqueeze(0)).shape[-1])
    model.train(was)
    return width
