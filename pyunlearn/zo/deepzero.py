"""DeepZero training (spec A1.1, A1.4, A1.8): ZO-GraSP layer-wise sparsity once, then sparse CGE with random
per-layer coordinate masks redrawn every K epochs, the gradient written into .grad and a plain torch SGD step.

    ratios <- zo_grasp(model, class-balanced probe)                      once; {layer: fraction NOT queried}
    every K epochs: S_l <- random (1 - r_l) |θ_l| coordinates of each Conv2d/Linear weight, plus ALL
                    coordinates of every other parameter (BatchNorm γ/β, biases)
    every batch:    g <- cge(model, loss, batch, coords=S, mu)          zero outside S ("sparse gradient,
                    p.grad <- g; SGD(momentum 0.9, wd 5e-4).step()        dense model")
                    lr: linear warm-up then cosine, per iteration (A1.4)

The model is in train mode during the queries (BatchNorm uses the statistics of each perturbed forward, as
DeepZero's workers do); BatchNorm running statistics are updated by one clean forward per batch only (the
queries leave them untouched). A first-order twin (`mode="fo"`) runs the identical loop with autograd's
gradient of all coordinates: it is the baseline of the "ZO reaches X % of FO accuracy" comparison.

Determinism: the masks of redraw r come from derive_seed(seed, 1000 + r), the batch order from
make_loader(seed); a checkpoint written after every epoch (model, optimizer, loader RNG, history, ratios) lets
an interrupted run continue bit-identically.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from pyunlearn.data import DataSplits, make_loader
from pyunlearn.optim.zo import derive_seed
from pyunlearn.zo.grasp import balanced_probe, prunable_layers, zo_grasp

_CKPT_VERSION = 1
_MODES = ("zo", "fo")


@dataclass
class DeepZeroConfig:
    """DeepZero's recipe (A1.4) with defaults sized for digits and `digits_cnn` (see docs/zo_training.md).

    Paper/CIFAR-10 values: batch 256, 50 epochs, lr 0.1, momentum 0.9, wd 5e-4, warm-up 3 epochs, μ 5e-3,
    sparsity 0.9, masks redrawn every 5 epochs, ZO-GraSP q 192 / μ 5e-3 on 25 images per class."""

    epochs: int = 30
    batch_size: int = 128  # digits: 1259 train images -> 10 steps per epoch
    lr: float = 0.1  # A1.4: SGD lr 0.1
    momentum: float = 0.9  # A1.4
    weight_decay: float = 5e-4  # A1.4
    warmup_epochs: int = 2  # A1.4 uses 3 of 50
    mu: float = 5e-3  # A1.4: zoo step size
    sparsity: float = 0.9  # A1.3: fraction of Conv2d/Linear weight coordinates NOT queried (paper default)
    mask_interval: int = 5  # A1.1: mask_shuffle_interval
    grasp_q: int = 192  # A1.3
    grasp_mu: float = 5e-3  # A1.3
    probe_per_class: int = 25  # A1.3
    seed: int = 0
    chunk: int | None = None  # coordinates per batched CGE evaluation (None: the estimator's default)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "warmup_epochs", "mask_interval", "grasp_q", "probe_per_class",
                     "seed"):
            v = getattr(self, name)
            low = 1 if name in ("batch_size", "mask_interval", "grasp_q", "probe_per_class") else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"DeepZeroConfig.{name} must be an int >= {low}, got {v!r}")
        for name in ("lr", "momentum", "weight_decay", "mu", "grasp_mu", "sparsity"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"DeepZeroConfig.{name} must be a finite number, got {v!r}")
            if name in ("mu", "grasp_mu") and not v > 0:
                raise ValueError(f"DeepZeroConfig.{name} must be > 0, got {v!r}")
            if v < 0:
                raise ValueError(f"DeepZeroConfig.{name} must be a finite number >= 0, got {v!r}")
        if not self.sparsity < 1:
            raise ValueError(f"DeepZeroConfig.sparsity must be in [0, 1), got {self.sparsity!r}")
        if self.chunk is not None and (isinstance(self.chunk, bool) or not isinstance(self.chunk, int)
                                       or self.chunk < 1):
            raise ValueError(f"DeepZeroConfig.chunk must be None or an int >= 1, got {self.chunk!r}")

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate of 0-based iteration `step`: linear warm-up lr (step+1)/W over W = warmup_epochs
        epochs, then cosine annealing to 0 over the remaining iterations."""
        warm = self.warmup_epochs * steps_per_epoch
        total = self.epochs * steps_per_epoch
        if step < warm:
            return self.lr * (step + 1) / warm
        rest = max(total - warm, 1)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * (step - warm) / rest))


def digits_cnn(widths: tuple[int, int] = (8, 16), num_classes: int = 10, *, seed: int = 0) -> nn.Sequential:
    """A BatchNorm CNN for 8x8 digits, small enough for CGE on one CPU thread, as an nn.Sequential (CGE's
    feature reuse works block by block): conv3x3-BN-ReLU-maxpool2 -> conv3x3-BN-ReLU-maxpool2 -> flatten ->
    linear. widths (8, 16): 1,922 parameters (1,864 Conv/Linear weights)."""
    if len(widths) != 2 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be two positive ints, got {widths!r}")
    w0, w1 = widths
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w0, w1, 3, padding=1, bias=False), nn.BatchNorm2d(w1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(w1 * 4, num_classes),
        )


def draw_coords(model: nn.Module, ratios: dict[str, float], seed: int) -> dict[str, Tensor]:
    """Sparse-CGE coordinates: for every Conv2d/Linear weight in `ratios`, a sorted random subset of
    round((1 - ratio) * numel) flat indices (generator seeded with `seed`); every other trainable parameter
    (BatchNorm, biases) gets all its coordinates."""
    layers = prunable_layers(model)
    unknown = sorted(set(ratios) - set(layers))
    if unknown:
        raise ValueError(f"ratios name layers that are not Conv2d/Linear layers of the model: {unknown}")
    g = torch.Generator().manual_seed(int(seed))
    weights = {f"{n}.weight" if n else "weight": n for n in layers}
    coords = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in weights and weights[name] in ratios:
            k = round((1.0 - ratios[weights[name]]) * p.numel())
            coords[name] = torch.randperm(p.numel(), generator=g)[:k].sort().values
        else:
            coords[name] = torch.arange(p.numel())
    return coords


@dataclass
class DeepZeroResult:
    """What a run did: history rows (one per epoch: epoch, lr, loss, train_acc, test_acc, seconds, queries),
    the layer ratios, the final test accuracy and the training time in seconds (both summed over resumes)."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    test_acc: float = float("nan")
    seconds: float = 0.0


def _bn_buffers(model: nn.Module) -> list[Tensor]:
    return [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for b in m.buffers()]


def _save_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _fingerprint(cfg: DeepZeroConfig, mode: str, n: int) -> dict:
    return {"cfg": dataclasses.asdict(cfg), "mode": mode, "num_samples": n}


def _zo_grad(model: nn.Module, x: Tensor, y: Tensor, coords: dict, cfg: DeepZeroConfig, group) -> dict:
    if group is not None:
        from pyunlearn.zo.distributed import distributed_cge

        return distributed_cge(model, F.cross_entropy, (x, y), coords=coords, mu=cfg.mu, chunk=cfg.chunk,
                               group=group)
    from pyunlearn.zo.estimators import cge

    return cge(model, F.cross_entropy, (x, y), coords=coords, mu=cfg.mu, chunk=cfg.chunk)


def _step(model: nn.Module, x: Tensor, y: Tensor, coords: dict | None, cfg: DeepZeroConfig, group
          ) -> tuple[Tensor, Tensor]:
    """Fill .grad (ZO: sparse CGE with BN buffers untouched by the queries; FO: autograd) and return the clean
    train-mode (loss, logits) — the one forward that updates BatchNorm running statistics."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if coords is None:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        for _, p in named:
            p.grad = None
        loss.backward()
        return loss.detach(), logits.detach()
    saved = [b.clone() for b in _bn_buffers(model)]
    grads = _zo_grad(model, x, y, coords, cfg, group)
    for b, s in zip(_bn_buffers(model), saved):
        b.copy_(s)
    for n, p in named:
        p.grad = grads[n].to(p.dtype)
    with torch.no_grad():
        logits = model(x)
        return F.cross_entropy(logits, y), logits


def train_deepzero(model: nn.Module, splits: DataSplits, cfg: DeepZeroConfig | None = None, *,
                   mode: str = "zo", out_dir: str | os.PathLike | None = None, progress: bool = True,
                   stop_epoch: int | None = None, ratios: dict[str, float] | None = None,
                   process_group=None, callback: Callable[[dict], None] | None = None) -> DeepZeroResult:
    """Train `model` in place on splits.train with DeepZero's recipe (mode "zo") or its first-order twin
    (mode "fo": same loop, autograd gradient of every coordinate). Returns a DeepZeroResult (model in eval
    mode).

    out_dir: checkpoint.pt written atomically after every epoch and log.jsonl (one JSON line per epoch); a
    checkpoint found there is resumed (the config, mode and dataset size must match) and the run ends
    bit-identical to an uninterrupted one. stop_epoch: return after that epoch (an interruption on purpose).
    ratios: skip ZO-GraSP and use these layer sparsities. process_group: split the CGE coordinates over the
    ranks of a torch.distributed group (pyunlearn.zo.distributed.distributed_cge)."""
    cfg = DeepZeroConfig() if cfg is None else cfg
    if not isinstance(cfg, DeepZeroConfig):
        raise TypeError(f"cfg must be a DeepZeroConfig, got {type(cfg).__name__}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    stop = cfg.epochs if stop_epoch is None else stop_epoch
    if not isinstance(stop, int) or not 0 <= stop <= cfg.epochs:
        raise ValueError(f"stop_epoch must be an int in [0, cfg.epochs={cfg.epochs}], got {stop_epoch!r}")
    from pyunlearn.train import accuracy

    device = next(model.parameters()).device
    loader = make_loader(splits.train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    steps_per_epoch = len(loader)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                          momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / "checkpoint.pt" if out is not None else None
    fp = _fingerprint(cfg, mode, len(splits.train))
    start, history, seconds = 0, [], 0.0
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state.get("version") != _CKPT_VERSION or state.get("fingerprint") != fp:
            raise ValueError(f"checkpoint {str(ckpt)!r} was written by a different run (config, mode or data); "
                             f"use another out_dir or delete it")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        loader.generator.set_state(state["loader_rng"])
        start, history, seconds, ratios = state["epoch"], state["history"], state["seconds"], state["ratios"]
    if mode == "zo" and ratios is None:
        t0 = time.perf_counter()
        probe = balanced_probe(splits.train, cfg.probe_per_class, seed=cfg.seed)
        model.train()
        ratios = zo_grasp(model, (probe[0].to(device), probe[1].to(device)), sparsity=cfg.sparsity,
                          q=cfg.grasp_q, mu=cfg.grasp_mu, seed=derive_seed(cfg.seed, 999)).ratios
        seconds += time.perf_counter() - t0
    ratios = dict(ratios or {})
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "log.jsonl", "w") as f:  # on resume: exactly the checkpoint's epochs
            f.writelines(json.dumps(h) + "\n" for h in history)
    bar = tqdm(total=stop, initial=min(start, stop), desc=f"deepzero {mode}", unit="ep", leave=False,
               disable=None if progress else True, dynamic_ncols=True)
    coords = None
    try:
        for epoch in range(start, stop):
            t0 = time.perf_counter()
            if mode == "zo" and (coords is None or epoch % cfg.mask_interval == 0):
                coords = draw_coords(model, ratios, derive_seed(cfg.seed, 1000 + epoch // cfg.mask_interval))
            model.train()
            loss_sum = torch.zeros((), dtype=torch.float64)
            correct, n = 0, 0
            for i, (x, y) in enumerate(loader):
                x, y = x.to(device), y.to(device)
                lr = cfg.lr_at(epoch * steps_per_epoch + i, steps_per_epoch)
                for g in opt.param_groups:
                    g["lr"] = lr
                loss, logits = _step(model, x, y, coords, cfg, process_group)
                opt.step()
                loss_sum += float(loss) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                n += len(y)
            seconds += time.perf_counter() - t0
            queries = 0 if coords is None else sum(int(c.numel()) for c in coords.values())
            row = {"epoch": epoch + 1, "lr": lr, "loss": float(loss_sum) / n, "train_acc": 100.0 * correct / n,
                   "test_acc": accuracy(model, splits.test), "seconds": seconds, "queries_per_step": queries}
            history.append(row)
            if out is not None:
                _save_atomic({"version": _CKPT_VERSION, "fingerprint": fp, "epoch": epoch + 1,
                              "model": model.state_dict(), "optimizer": opt.state_dict(),
                              "loader_rng": loader.generator.get_state(), "history": history,
                              "seconds": seconds, "ratios": ratios}, ckpt)
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
            bar.set_postfix_str(f"loss={row['loss']:.3f} test={row['test_acc']:.1f}", refresh=False)
            bar.update(1)
            if callback is not None:
                callback(row)
    finally:
        bar.close()
    model.eval()
    test_acc = history[-1]["test_acc"] if history else accuracy(model, splits.test)
    return DeepZeroResult(model=model, history=history, ratios=ratios, test_acc=test_acc, seconds=seconds)


def compare_digits(cfg: DeepZeroConfig | None = None, *, widths: tuple[int, int] = (8, 16),
                   out_dir: str | os.PathLike | None = None, progress: bool = True, split_seed: int = 0) -> dict:
    """The issue's real run: the same digits_cnn (same init) trained by DeepZero (ZO) and by its first-order
    twin with the same epochs/optimizer/schedule on load_digits(split_seed). Returns a dict with both test
    accuracies, their ratio, both times and both histories; with out_dir, results.json and curves.png there
    (and each run's checkpoints in out_dir/zo and out_dir/fo)."""
    from pyunlearn.data import load_digits

    cfg = DeepZeroConfig() if cfg is None else cfg
    splits = load_digits(split_seed=split_seed)
    out = Path(out_dir) if out_dir is not None else None
    runs = {}
    for mode in ("fo", "zo"):
        model = digits_cnn(widths, splits.num_classes, seed=cfg.seed)
        runs[mode] = train_deepzero(model, splits, cfg, mode=mode, progress=progress,
                                    out_dir=None if out is None else out / mode)
    res = {"config": dataclasses.asdict(cfg), "widths": list(widths),
           "params": sum(p.numel() for p in digits_cnn(widths).parameters()),
           "fo_test_acc": runs["fo"].test_acc, "zo_test_acc": runs["zo"].test_acc,
           "ratio": runs["zo"].test_acc / max(runs["fo"].test_acc, 1e-12),
           "fo_seconds": runs["fo"].seconds, "zo_seconds": runs["zo"].seconds,
           "layer_sparsity": runs["zo"].ratios,
           "history": {m: r.history for m, r in runs.items()}}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(res, indent=2))
        plot_curves(res["history"], out / "curves.png")
    return res


def plot_curves(history: dict[str, list[dict]], path: str | os.PathLike) -> None:
    """Training loss and test accuracy per epoch of each run in `history` ({label: rows}) -> a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for label, rows in history.items():
        ep = [r["epoch"] for r in rows]
        a.plot(ep, [r["loss"] for r in rows], label=label)
        b.plot(ep, [r["test_acc"] for r in rows], label=label)
    a.set(xlabel="epoch", ylabel="train loss", yscale="log")
    b.set(xlabel="epoch", ylabel="test accuracy (%)")
    a.legend()
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["DeepZeroConfig", "DeepZeroResult", "compare_digits", "digits_cnn", "draw_coords", "plot_curves",
           "train_deepzero"]
