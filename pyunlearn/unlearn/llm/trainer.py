"""The LLM unlearning loop (spec llm_mu.md §1.2, §1.4, §2.5, §5): any `UnlearnLoss` with AdamW, SGD or Sophia
(SOUL), optional WAGLE masks, gradient accumulation, warm-up + linear decay, bf16 autocast over fp32 weights,
checkpoint / bit-identical resume, tqdm and a JSON-lines log of the loss terms per optimizer step.

    record = unlearn_llm(model, forget_ds, retain_ds, loss=UnlearnLoss("simnpo", "nll", beta=2.5),
                         config=UnlearnConfig(optimizer="sophia", lr=1e-3, epochs=5), out_dir="run/")

Pairing (§1.2): one epoch is one pass over the forget set (anchor = forget). Epoch e visits the forget items in
the order of a permutation drawn from ``torch.Generator().manual_seed(seed·1_000_003 + e)`` and pairs item i with
a retain item drawn uniformly from the same generator (OU's fresh-draw pairing, but a pure function of (seed,
epoch), so a resumed run replays exactly the batches an uninterrupted one sees and the global RNG is untouched).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from pyunlearn.unlearn.llm.losses import IGNORE_INDEX, UnlearnLoss

__all__ = ["OPTIMIZERS", "UnlearnConfig", "check_supervised", "make_optimizer", "unlearn_llm"]

OPTIMIZERS = ("adamw", "sophia", "sgd")
CHECKPOINT = "checkpoint.pt"
REFERENCE = "reference.pt"
LOG = "log.jsonl"


@dataclass
class UnlearnConfig:
    """Loop hyperparameters. Defaults: the TOFU harness of §1.4 (AdamW lr 1e-5, wd 0.01, clip 1.0, warm-up one
    epoch then linear decay) and, for optimizer="sophia", SOUL's Sophia (§2.5: betas (0.9, 0.95), rho 0.04, wd 0.1,
    bs 5120, h from the step's squared gradient every step, warm-up 10 % of the steps)."""

    optimizer: Literal["adamw", "sophia", "sgd"] = "adamw"
    lr: float = 1e-5  # §1.4 (a 7B model); the tiny demo model needs ~1e-3
    epochs: float = 10.0  # passes over the forget set (§2.4 SimNPO TOFU: 10)
    max_steps: int | None = None  # optimizer steps; overrides epochs when given (§2.6 WAGLE NPO: 400)
    batch_size: int = 4  # forget (and retain) micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    weight_decay: float | None = None  # None: 0.01 (adamw / sgd, §1.4), 0.1 (sophia, §2.5)
    max_grad_norm: float | None = 1.0  # §1.4 / G3: clip the global (unmasked) norm before the step
    warmup_steps: int | None = None  # None: one epoch (§1.4); sophia: 10 % of the steps (§2.5)
    schedule: Literal["linear", "constant"] = "linear"  # after warm-up: linear decay to 0, or constant (MUSE)
    betas: tuple[float, float] | None = None  # None: (0.9, 0.999) adamw, (0.9, 0.95) sophia (SOUL)
    rho: float = 0.04  # Sophia ρ (SOUL configs)
    sophia_bs: float = 5120.0  # Sophia bs (SOUL's fixed default `step()` argument)
    sophia_hessian: Literal["sqgrad", "gnb"] = "sqgrad"  # SOUL code: g² of the step, every step; "gnb": SophiaG
    hessian_every: int = 10  # "gnb" only: refresh h every k optimizer steps (official SophiaG k = 10, §2.5)
    momentum: float = 0.0  # SGD momentum
    seed: int = 0  # pairing / order (see the module docstring)
    bf16: bool | None = None  # autocast to bf16 over fp32 weights (G2); None = on for CUDA with bf16, off on CPU
    checkpoint_every: int = 0  # optimizer steps between checkpoints in out_dir (0: only the final one)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("lr", "epochs", "rho", "sophia_bs", "momentum"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.sophia_hessian not in ("sqgrad", "gnb"):
            raise ValueError(f"sophia_hessian must be 'sqgrad' or 'gnb', got {self.sophia_hessian!r}")
        for name in ("batch_size", "grad_accum", "hessian_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("max_steps", "warmup_steps"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (1 if name == "max_steps"
                                                                                          else 0)):
                raise ValueError(f"{name} must be None or an int >= {1 if name == 'max_steps' else 0}, got {v!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be an int >= 0, got {self.checkpoint_every!r}")
        if self.schedule not in ("linear", "constant"):
            raise ValueError(f"schedule must be 'linear' or 'constant', got {self.schedule!r}")
        if self.max_steps is None and self.epochs <= 0:
            raise ValueError("epochs must be > 0 when max_steps is not given")

    @property
    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return 0.1 if self.optimizer == "sophia" else 0.01

    @property
    def resolved_betas(self) -> tuple[float, float]:
        if self.betas is not None:
            return tuple(self.betas)
        return (0.9, 0.95) if self.optimizer == "sophia" else (0.9, 0.999)


# --------------------------------------------------------------------------------------------------- checks
def check_supervised(dataset: Any, name: str) -> None:
    """Every item must have >= 1 supervised label after the causal shift (labels[1:] ≠ −100): a row without answer
    tokens has no defined loss (and OU silently keeps such 'tokenization mismatch' rows, §1.1)."""
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"{name} set is empty: unlearning needs at least one {name} item")
    bad = []
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, Mapping) or "labels" not in item or "input_ids" not in item:
            raise TypeError(f"{name}[{i}] must be a dict with input_ids and labels (e.g. a QADataset item)")
        lab = item["labels"]
        if not bool((lab.reshape(-1)[1:] != IGNORE_INDEX).any()):
            bad.append(i)
    if bad:
        raise ValueError(f"{name} items {bad[:10]}{' ...' if len(bad) > 10 else ''} have no answer tokens "
                         f"(every label is {IGNORE_INDEX} after the shift); check the template / max_length")


def _collate_of(dataset: Any, collate_fn: Callable | None, name: str) -> Callable:
    if collate_fn is not None:
        return collate_fn
    fn = getattr(dataset, "collate", None)
    if fn is None:
        raise TypeError(f"{name} has no .collate method; pass {name}_collate_fn (e.g. functools.partial("
                        "pyunlearn.data.tofu.collate_qa, pad_token_id=...))")
    return fn


# --------------------------------------------------------------------------------------------------- pieces
def make_optimizer(params: list[Tensor], config: UnlearnConfig, masks: Mapping[Tensor, Tensor] | None = None):
    """The pyunlearn.optim masked optimizer named by config.optimizer, with config's hyperparameters."""
    from pyunlearn.optim import MaskedAdamW, MaskedSGD, Sophia

    wd = config.resolved_weight_decay
    if config.optimizer == "adamw":
        return MaskedAdamW(params, lr=config.lr, betas=config.resolved_betas, weight_decay=wd, masks=masks)
    if config.optimizer == "sgd":
        return MaskedSGD(params, lr=config.lr, momentum=config.momentum, weight_decay=wd, masks=masks)
    return Sophia(params, lr=config.lr, betas=config.resolved_betas, rho=config.rho, weight_decay=wd,
                  bs=config.sophia_bs, hessian="sqgrad" if config.sophia_hessian == "sqgrad" else "external",
                  masks=masks)


def _gnb_hessian(model: torch.nn.Module, opt: Any, batches: list[Mapping[str, Tensor]], params: list[Tensor],
                 generator: torch.Generator, amp: bool) -> None:
    """SophiaG's Gauss-Newton-Bartlett estimate (§2.5): sample ŷ ~ softmax(logits) at every supervised position,
    L̂ = mean CE(logits, ŷ), ĥ = B·(∇L̂)²; h ← β2·h + (1−β2)·ĥ where masks are on. The labels of the data are not
    used, only which positions are supervised; the forget and retain micro-batches are averaged."""
    opt.zero_grad(set_to_none=True)
    n_rows = 0
    for batch in batches:
        with torch.autocast(batch["input_ids"].device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        lg = logits[:, :-1].float()  # [B, T-1, V]
        mask = batch["labels"][:, 1:] != IGNORE_INDEX  # [B, T-1]
        probs = torch.softmax(lg[mask].detach(), dim=-1)  # [n, V]
        y_hat = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # [n]
        (torch.nn.functional.cross_entropy(lg[mask], y_hat) / len(batches)).backward()
        n_rows += batch["input_ids"].shape[0]
    scale = math.sqrt(n_rows / len(batches))  # ĥ = B·g² = (√B·g)²
    for p in params:
        if p.grad is not None:
            p.grad.mul_(scale)
    opt.update_hessian()
    opt.zero_grad(set_to_none=True)


def _lr_lambda(total: int, warmup: int, schedule: str) -> Callable[[int], float]:
    def f(step: int) -> float:  # step = optimizer steps taken so far (HF's get_linear_schedule_with_warmup)
        if step < warmup:
            return (step + 1) / (warmup + 1)  # never 0 at step 0, so the first step moves (HF's gives lr 0 there)
        if schedule == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def schedule_sizes(config: UnlearnConfig, n_forget: int) -> tuple[int, int, int]:
    """(micro-batches per epoch, total optimizer steps, warm-up steps) of a run over n_forget forget items."""
    mb_per_epoch = math.ceil(n_forget / config.batch_size)
    if config.max_steps is not None:
        total = config.max_steps
    else:
        total = max(1, math.floor(config.epochs * mb_per_epoch / config.grad_accum))
    steps_per_epoch = max(1, mb_per_epoch // config.grad_accum)
    if config.warmup_steps is not None:
        warmup = config.warmup_steps
    elif config.optimizer == "sophia":
        warmup = int(0.1 * total)
    else:
        warmup = min(steps_per_epoch, total // 2)
    return mb_per_epoch, total, warmup


def _epoch_plan(n_forget: int, n_retain: int, seed: int, epoch: int) -> tuple[Tensor, Tensor | None]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_forget, generator=g)  # [n_forget]
    partner = torch.randint(n_retain, (n_forget,), generator=g) if n_retain else None  # [n_forget]
    return order, partner


def _to(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in batch.items() if isinstance(v, Tensor)}


def _autocast_enabled(config: UnlearnConfig, device: torch.device) -> bool:
    if config.bf16 is not None:
        return bool(config.bf16)
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def _math_fields(cfg: dict) -> dict:
    """The config fields that change the numbers (progress bars and checkpoint cadence do not)."""
    return {k: v for k, v in cfg.items() if k not in ("progress", "checkpoint_every")}


def _check_loss_config(loss: UnlearnLoss | None, config: UnlearnConfig | None) -> tuple[UnlearnLoss, UnlearnConfig]:
    loss = UnlearnLoss() if loss is None else loss
    config = UnlearnConfig() if config is None else config
    if not isinstance(loss, UnlearnLoss):
        raise TypeError(f"loss must be an UnlearnLoss, got {type(loss).__name__}")
    if not isinstance(config, UnlearnConfig):
        raise TypeError(f"config must be an UnlearnConfig, got {type(config).__name__}")
    return loss, config


def _check_data(forget: Any, retain: Any, loss: UnlearnLoss, forget_collate_fn: Callable | None,
                retain_collate_fn: Callable | None) -> tuple[bool, Callable, Callable | None]:
    """(use_retain, forget collate, retain collate) after checking both sets."""
    check_supervised(forget, "forget")
    use_retain = loss.retain_loss != "none"
    if use_retain:
        if retain is None:
            raise ValueError(f"retain set is required for retain_loss={loss.retain_loss!r}")
        check_supervised(retain, "retain")
    f_collate = _collate_of(forget, forget_collate_fn, "forget")
    r_collate = _collate_of(retain, retain_collate_fn, "retain") if use_retain else None
    return use_retain, f_collate, r_collate


def _optimizer_step(opt: torch.optim.Optimizer, sched: Any, params: list[Tensor],
                    config: UnlearnConfig) -> tuple[float | None, float]:
    """Clip, step, advance the schedule, clear the gradients: (grad norm before clipping or None, lr used)."""
    grad_norm = None
    if config.max_grad_norm:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
    lr_now = sched.get_last_lr()[0]
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return grad_norm, lr_now


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _named_masks(model: torch.nn.Module, masks: Mapping[str, Tensor] | None) -> dict[Tensor, Tensor] | None:
    if masks is None:
        return None
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be None or a dict parameter name -> bool tensor, got {type(masks).__name__}")
    params = dict(model.named_parameters())
    unknown = [k for k in masks if k not in params]
    if unknown:
        raise ValueError(f"masks has names that are not parameters of the model: {unknown[:5]}")
    out = {}
    for name, m in masks.items():
        p = params[name]
        if not isinstance(m, Tensor) or m.dtype != torch.bool or m.shape != p.shape:
            raise ValueError(f"masks[{name!r}] must be a bool tensor of shape {tuple(p.shape)}, got "
                             f"{getattr(m, 'dtype', type(m).__name__)} {tuple(getattr(m, 'shape', ()))}")
        out[p] = m.to(p.device)
    return out


# --------------------------------------------------------------------------------------------------- the loop
def unlearn_llm(model: torch.nn.Module, forget: Any, retain: Any = None, *, loss: UnlearnLoss | None = None,
                config: UnlearnConfig | None = None, masks: Mapping[str, Tensor] | None = None,
                ref_model: torch.nn.Module | None = None, out_dir: str | Path | None = None, resume: bool = True,
                stop_after: int | None = None, forget_collate_fn: Callable | None = None,
                retain_collate_fn: Callable | None = None) -> dict:
    """Unlearn `forget` from `model` in place with `loss` (default: OU's NPO + retain NLL) under `config`.

    forget / retain: datasets of unpadded items {input_ids, attention_mask, labels} (e.g. `QADataset`; for
    forget_loss="idk" the forget labels are the refusal answers) with a `.collate` method or an explicit
    collate_fn. retain may be None only when loss.retain_loss == "none".
    masks: None, or {parameter name: bool tensor} (e.g. `wagle_masks`): False entries never move (masked
    optimizer: no update, no weight decay, no state change), so they stay bit-identical. Parameters missing from
    the dict are updated everywhere (give an all-False mask to freeze one).
    ref_model: the frozen π_ref for NPO / KL; None = a deep copy of `model` taken here (G5: eval mode, no grad).
    out_dir: checkpoint.pt every `checkpoint_every` steps and at the end, reference.pt (π_ref, so a resumed run
    keeps the original reference) and log.jsonl (one JSON object per optimizer step). With resume=True an
    existing checkpoint is continued; the result equals an uninterrupted run bit for bit.
    stop_after: return after this many optimizer steps in total (simulates an interruption; a checkpoint is
    written there when out_dir is given).

    Returns {"steps", "epochs", "log" (per-step dicts), "config", "loss", "wall_s", "resumed_from"}; the model is
    left in eval mode with its original use_cache setting."""
    from tqdm.auto import tqdm

    loss, config = _check_loss_config(loss, config)
    use_retain, f_collate, r_collate = _check_data(forget, retain, loss, forget_collate_fn, retain_collate_fn)

    device = next(model.parameters()).device
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    ckpt = None
    if out is not None and resume and (out / CHECKPOINT).exists():
        ckpt = torch.load(out / CHECKPOINT, map_location=device, weights_only=False)

    # π_ref (§5 G5): taken before any update; saved so that a resumed run compares against the same weights
    if loss.needs_reference and ref_model is None:
        ref_model = copy.deepcopy(model)
        if ckpt is not None:
            if not (out / REFERENCE).exists():
                raise FileNotFoundError(f"{out / REFERENCE} is missing: cannot resume {loss.forget_loss!r}/"
                                        f"{loss.retain_loss!r} without the original reference model")
            ref_model.load_state_dict(torch.load(out / REFERENCE, map_location=device, weights_only=True))
        elif out is not None:
            _atomic_save(ref_model.state_dict(), out / REFERENCE)
    if ref_model is not None:
        ref_model.eval().requires_grad_(False)

    n_f, n_r = len(forget), (len(retain) if use_retain else 0)
    mb_per_epoch, total, warmup = schedule_sizes(config, n_f)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, config, _named_masks(model, masks))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, warmup, config.schedule))
    step, log = 0, []
    if ckpt is not None:
        if ckpt["total"] != total or _math_fields(ckpt["config"]) != _math_fields(asdict(config)):
            raise ValueError(f"{out / CHECKPOINT} was written with a different config/step count; "
                             "use another out_dir or resume=False")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        step, log = ckpt["step"], ckpt["log"]
        torch.set_rng_state(ckpt["rng"])
    resumed_from = step

    def save() -> None:
        if out is None:
            return
        _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                      "step": step, "total": total, "log": log, "config": asdict(config),
                      "rng": torch.get_rng_state()}, out / CHECKPOINT)
        with open(out / (LOG + ".tmp"), "w") as fh:  # the log always matches the checkpoint's step
            fh.writelines(json.dumps(r) + "\n" for r in log)
        os.replace(out / (LOG + ".tmp"), out / LOG)

    use_cache = getattr(model.config, "use_cache", None)
    if use_cache is not None:
        model.config.use_cache = False  # G3
    amp = _autocast_enabled(config, device)
    plan_epoch, plan = -1, None
    model.train()
    t0 = time.perf_counter()
    end = total if stop_after is None else min(total, stop_after)
    bar = tqdm(range(step, end), initial=step, total=total, desc=f"unlearn {loss.forget_loss}/{config.optimizer}",
               disable=not config.progress)
    try:
        for step_i in bar:
            parts_sum: dict[str, float] = {}
            for a in range(config.grad_accum):
                mb = step_i * config.grad_accum + a  # global micro-batch index: a pure function of the step
                epoch, k = divmod(mb, mb_per_epoch)
                if epoch != plan_epoch:
                    plan, plan_epoch = _epoch_plan(n_f, n_r, config.seed, epoch), epoch
                idx = plan[0][k * config.batch_size:(k + 1) * config.batch_size]
                f_batch = _to(f_collate([forget[int(i)] for i in idx]), device)
                r_batch = None
                if use_retain:
                    r_batch = _to(r_collate([retain[int(j)] for j in plan[1][idx]]), device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    value, parts = loss(model, f_batch, r_batch, ref_model)
                (value / config.grad_accum).backward()
                for key, v in parts.items():
                    parts_sum[key] = parts_sum.get(key, 0.0) + v / config.grad_accum
            grad_norm, lr_now = _optimizer_step(opt, sched, params, config)
            step = step_i + 1
            if config.optimizer == "sophia" and config.sophia_hessian == "gnb" and step % config.hessian_every == 0:
                gen = torch.Generator(device).manual_seed(config.seed * 7919 + step)  # resumable: f(seed, step)
                _gnb_hessian(model, opt, [b for b in (f_batch, r_batch) if b is not None], params, gen, amp)
            rec = {"step": step, "epoch": round(step * config.grad_accum / mb_per_epoch, 4), "lr": lr_now,
                   **{f"loss_{k}": v for k, v in parts_sum.items()}, "grad_norm": grad_norm}
            log.append(rec)
            bar.set_postfix(loss=f"{parts_sum['total']:.4f}")
            if out is not None and (config.checkpoint_every and step % config.checkpoint_every == 0):
                save()
        if out is not None and (not config.checkpoint_every or step % config.checkpoint_every):
            save()
    finally:
        if use_cache is not None:
            model.config.use_cache = use_cache
        model.eval()
    return {"steps": step, "total_steps": total, "epochs": step * config.grad_accum / mb_per_epoch, "log": log,
            "config": asdict(config), "loss": asdict(loss), "wall_s": time.perf_counter() - t0,
            "resumed_from": resumed_from, "warmup_steps": warmup}
