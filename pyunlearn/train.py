"""Supervised training for the unlearning harness: the original model, Retrain and anything else that trains a
classifier from scratch; plus eval-mode accuracy and softmax probabilities.

Determinism: every random draw comes from the seed. Shuffling uses make_loader(dataset, batch_size,
shuffle=True, seed=seed) (so a method can reproduce the batch order), augmentation its own generator and the
global RNG (dropout, if a model has any) is forked and seeded for the run, so the caller's RNG is untouched.
A checkpoint written after every epoch holds model, optimizer, schedule position and all three RNG states;
resuming from it ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from pyunlearn.data import DataSplits, make_loader
from pyunlearn.models import build_model

_SCHEDULES = ("cosine", "multistep", "constant")
_CKPT_VERSION = 1


@dataclass
class TrainConfig:
    """SGD recipe (spec §1.3: momentum 0.9, weight decay 5e-4) with defaults sized for digits + SmallCNN.

    Digits defaults: 30 epochs of batch 128 (10 steps of the 1259 train images per epoch) at lr 0.1, cosine,
    with the +-1 pixel shift augmentation. SmallCNN reaches 98.0-99.2 % test accuracy (mean 98.7 %, split
    seeds 0-4 x init seeds 1-2) in 4-6 s with torch.set_num_threads(1) on a loaded 2-core machine. 20 epochs
    are as accurate; 30 leave margin for Retrain on smaller retain sets. Tiny convolutions do not profit from
    intra-op threads: on a busy machine 2 threads were 10x slower than 1.
    The paper recipe for CIFAR-10/ResNet-18 is
    TrainConfig(epochs=182, batch_size=256, schedule="multistep", milestones=(0.5, 0.75)).

    schedule: "cosine" lr * (1 + cos(pi e / E)) / 2, "multistep" lr * gamma^(# milestones passed), "constant";
    the learning rate is set at the start of every epoch e (0-based) of E = epochs. milestones are fractions
    of `epochs` (0.5, 0.75 of 182 = epochs 91 and 136, spec §1.3). select: "last" returns the final weights,
    "best_val" those of the epoch with the best validation accuracy (the papers' SA_best checkpoint)."""

    epochs: int = 30
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    schedule: str = "cosine"
    milestones: tuple = (0.5, 0.75)
    gamma: float = 0.1
    select: str = "last"

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "epochs" else 1):
                low = 0 if name == "epochs" else 1
                raise ValueError(f"TrainConfig.{name} must be an int >= {low}, got {v!r}")
        for name in ("lr", "momentum", "weight_decay", "gamma"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {v!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        self.milestones = tuple(self.milestones)
        if any(not isinstance(m, (int, float)) or not 0 < m <= 1 for m in self.milestones):
            raise ValueError(f"TrainConfig.milestones must be fractions of epochs in (0, 1], "
                             f"got {self.milestones}")
        if self.select not in ("last", "best_val"):
            raise ValueError(f"TrainConfig.select must be 'last' or 'best_val', got {self.select!r}")

    def lr_at(self, epoch: int) -> float:
        """The learning rate of 0-based epoch `epoch`."""
        if self.schedule == "constant":
            return float(self.lr)
        if self.schedule == "cosine":
            return float(self.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(self.epochs, 1))))
        passed = sum(epoch >= round(m * self.epochs) for m in self.milestones)
        return float(self.lr * self.gamma**passed)


def _derived_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed for `stream` of run `seed` (SeedSequence mixing, not seed + k)."""
    hi, lo = np.random.SeedSequence([seed, stream]).generate_state(2, dtype=np.uint32)
    return (int(hi) << 31) ^ int(lo)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _cuda_indices(device: torch.device) -> list:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _check_dataset(name: str, ds) -> None:
    if not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
        raise TypeError(f"{name} must be a map-style dataset of (x, y), got {type(ds).__name__}")
    if len(ds) == 0:
        raise ValueError(f"{name} must not be empty")


def predict_proba(model: nn.Module, dataset: Dataset, *, batch_size: int = 512) -> Tensor:
    """softmax(model(x)) for every sample, in dataset order: float32 [N, K] on the CPU. Eval mode, no grad;
    the model's train/eval mode is restored afterwards."""
    _check_dataset("dataset", dataset)
    device = _device_of(model)
    out = []
    with _eval_mode(model):
        for x, _ in make_loader(dataset, batch_size, shuffle=False, seed=0):
            out.append(F.softmax(model(x.to(device)).float(), dim=1).cpu())
    return torch.cat(out)


def accuracy(model: nn.Module, dataset: Dataset, *, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent, eval mode, no grad; the model's mode is restored afterwards."""
    _check_dataset("dataset", dataset)
    device = _device_of(model)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with _eval_mode(model):
        for x, y in make_loader(dataset, batch_size, shuffle=False, seed=0):
            correct += (model(x.to(device)).argmax(1) == y.to(device)).sum()
    return 100.0 * int(correct) / len(dataset)


def _fingerprint(cfg: TrainConfig, seed: int, n: int, augment) -> dict:
    """What must match for a checkpoint to be resumed (epochs may grow: training then continues)."""
    d = dataclasses.asdict(cfg)
    d.pop("epochs")
    d["milestones"] = list(d["milestones"])
    return {"cfg": d, "seed": seed, "num_samples": n, "augment": augment is not None}


def _cpu_copy(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _save_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # readers see the old or the new checkpoint, never half a file


def _resume(path: Path, fp: dict, cfg: TrainConfig, model: nn.Module, opt: torch.optim.Optimizer,
            rngs: dict, cuda: list) -> tuple[int, list, dict | None]:
    """Load a train_model checkpoint into model, optimizer and every RNG; returns (epoch, history, best)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("version") != _CKPT_VERSION:
        raise ValueError(f"checkpoint {str(path)!r} has format version {state.get('version')}, "
                         f"expected {_CKPT_VERSION}")
    old = state["fingerprint"]
    if old != fp:
        was, now = {**old["cfg"], **old}, {**fp["cfg"], **fp}
        diff = {k: (was.get(k), now[k]) for k in now if k != "cfg" and was.get(k) != now[k]}
        raise ValueError(f"checkpoint {str(path)!r} was written by a different run; (checkpoint, this call) "
                         f"differ in {diff}")
    if state["epoch"] > cfg.epochs:
        raise ValueError(f"checkpoint {str(path)!r} is at epoch {state['epoch']}, "
                         f"past cfg.epochs={cfg.epochs}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    for key, g in rngs.items():
        g.set_state(state[key])
    torch.set_rng_state(state["torch_rng"])
    for i, s in zip(cuda, state["cuda_rng"]):
        torch.cuda.set_rng_state(s, i)
    return state["epoch"], state["history"], state["best"]


def _train_epoch(model: nn.Module, loader, opt: torch.optim.Optimizer, lr: float, augment, aug_gen,
                 device: torch.device) -> dict:
    """One pass of SGD steps over `loader` at learning rate `lr`, model in train mode; lr, loss, train_acc."""
    for group in opt.param_groups:
        group["lr"] = lr
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # x: [B, *shape], y: [B]
        if augment is not None:
            x = augment(x, aug_gen)
        logits = model(x)  # [B, K]
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        n += len(y)
    return {"lr": lr, "loss": float(loss_sum) / n, "train_acc": 100.0 * int(correct) / n}


def _postfix(stats: dict) -> str:
    text = f"lr={stats['lr']:.3g} loss={stats['loss']:.3f} acc={stats['train_acc']:.1f}"
    return text + (f" val={stats['val_acc']:.1f}" if "val_acc" in stats else "")


def train_model(model: nn.Module, dataset: Dataset, cfg: TrainConfig | None = None, *,
                augment: Callable | None = None, seed: int = 1, val: Dataset | None = None,
                checkpoint: str | os.PathLike | None = None, progress: bool = True, desc: str = "train",
                callback: Callable[[int, dict], None] | None = None,
                epoch_range: tuple[int, int] | None = None) -> nn.Module:
    """Train `model` in place with cross-entropy and SGD(lr, momentum, weight_decay) under cfg's schedule, and
    return it in eval mode.

    Batches come shuffled from make_loader(dataset, cfg.batch_size, shuffle=True, seed=seed); `augment(x, g)`
    is applied to every batch with a generator seeded from `seed`; the model is in train mode during updates.
    val: evaluated after every epoch (shown in the bar; needed for cfg.select == "best_val").
    checkpoint: a path, written atomically after every epoch; if it exists on entry, training resumes from it
    (the config, seed, dataset length and augment on/off must match; `epochs` may be larger) and ends
    bit-identical to an uninterrupted run. callback(epoch, stats) runs after each epoch's checkpoint; stats
    has epoch, lr, loss, train_acc (on augmented batches, train mode) and val_acc when val is given.
    epoch_range (first, stop): run only epochs [first, stop) of cfg's schedule (pruning's rewind-and-retrain);
    not combinable with checkpoint."""
    cfg = TrainConfig() if cfg is None else cfg
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    _check_dataset("dataset", dataset)
    if val is not None and len(val) == 0:
        val = None
    if cfg.select == "best_val" and val is None:
        raise ValueError("cfg.select='best_val' needs a non-empty val dataset, got none")
    first, stop = (0, cfg.epochs) if epoch_range is None else epoch_range
    if not 0 <= first <= stop <= cfg.epochs:
        raise ValueError(f"epoch_range must satisfy 0 <= first <= stop <= cfg.epochs ({cfg.epochs}), got "
                         f"{epoch_range}")
    if epoch_range is not None and checkpoint is not None:
        raise ValueError("epoch_range and checkpoint cannot be combined (a checkpoint resumes a whole schedule)")
    device = _device_of(model)
    loader = make_loader(dataset, cfg.batch_size, shuffle=True, seed=seed)
    aug_gen = torch.Generator().manual_seed(_derived_seed(seed, 1))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    path = Path(checkpoint) if checkpoint is not None else None
    fp = _fingerprint(cfg, seed, len(dataset), augment)
    cuda = _cuda_indices(device)
    start, history, best = 0, [], None
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(_derived_seed(seed, 2))
        rngs = {"shuffle_rng": loader.generator, "augment_rng": aug_gen}
        if path is not None and path.exists():
            start, history, best = _resume(path, fp, cfg, model, opt, rngs, cuda)
        start = max(start, first)
        bar = tqdm(total=stop, initial=start, desc=desc, unit="ep", leave=False,
                   disable=None if progress else True, dynamic_ncols=True)
        try:
            for epoch in range(start, stop):
                stats = _train_epoch(model, loader, opt, cfg.lr_at(epoch), augment, aug_gen, device)
                stats = {"epoch": epoch + 1, **stats}
                if val is not None:
                    stats["val_acc"] = accuracy(model, val)
                    if cfg.select == "best_val" and (best is None or stats["val_acc"] > best["val_acc"]):
                        best = {"epoch": epoch + 1, "val_acc": stats["val_acc"], "model": _cpu_copy(model)}
                history.append(stats)
                if path is not None:
                    _save_atomic({"version": _CKPT_VERSION, "fingerprint": fp, "epoch": epoch + 1,
                                  "model": model.state_dict(), "optimizer": opt.state_dict(),
                                  "schedule": {"name": cfg.schedule, "epoch": epoch + 1, "lr": stats["lr"]},
                                  **{k: g.get_state() for k, g in rngs.items()},
                                  "torch_rng": torch.get_rng_state(),
                                  "cuda_rng": [torch.cuda.get_rng_state(i) for i in cuda],
                                  "history": history, "best": best}, path)
                bar.set_postfix_str(_postfix(stats), refresh=False)
                bar.update(1)
                if callback is not None:
                    callback(epoch + 1, stats)
        finally:
            bar.close()
    if cfg.select == "best_val" and best is not None:
        model.load_state_dict(best["model"])
    return model.eval()


def train_original(splits: DataSplits, model_name: str = "cnn", cfg: TrainConfig | None = None, *,
                   seed: int = 1, checkpoint: str | os.PathLike | None = None, progress: bool = True,
                   train_seed: int | None = None, normalize: tuple | None = None, prune: str | None = None,
                   prune_rate: float = 0.95, rewind_epoch: int | None = None) -> nn.Module:
    """The original model θ_o: build_model(model_name, ..., seed=seed) trained on splits.train with
    splits.augment (validated on splits.val) under cfg (default TrainConfig(), the digits recipe).

    seed is the init seed (spec §1.1 train_seed; Retrain re-uses it); shuffling/augmentation use train_seed,
    which defaults to seed.
    prune: "omp" | "imp" | "synflow" trains the sparse original θ_o^s of Unlearn-Sparse instead
    (pyunlearn.unlearn.prune.sparse_original, Conv2d weights, rate prune_rate, rewinding to epoch rewind_epoch,
    default max(1, epochs // 20): 8 of 182 in the paper); the mask stays in the model, so every unlearning
    method and Retrain keep it. Not combinable with checkpoint."""
    if prune is not None:
        from pyunlearn.unlearn.prune import sparse_original

        if checkpoint is not None:
            raise ValueError("prune and checkpoint cannot be combined (pruning retrains in segments)")
        cfg = TrainConfig() if cfg is None else cfg
        model = build_model(model_name, splits.num_classes, splits.input_shape, seed=seed, normalize=normalize)
        tseed = seed if train_seed is None else train_seed

        def train_fn(m: nn.Module, first: int, stop: int) -> None:
            train_model(m, splits.train, cfg, augment=splits.augment, seed=tseed, val=splits.val,
                        progress=progress, desc=f"original {model_name} ({prune})", epoch_range=(first, stop))

        k = max(1, cfg.epochs // 20) if rewind_epoch is None else rewind_epoch
        sparse_original(model, train_fn, epochs=cfg.epochs, method=prune, rate=prune_rate, rewind_epoch=k,
                        input_shape=splits.input_shape)
        return model.eval()
    model = build_model(model_name, splits.num_classes, splits.input_shape, seed=seed, normalize=normalize)
    return train_model(model, splits.train, cfg, augment=splits.augment,
                       seed=seed if train_seed is None else train_seed, val=splits.val, checkpoint=checkpoint,
                       progress=progress, desc=f"original {model_name}")
