"""LLM unlearning on N ranks with DDP or FSDP2 (issue 9): the loop of `pyunlearn.unlearn.llm.unlearn_llm`, with
each rank computing its slice of the same global batches.

    # torchrun --nproc-per-node 4 my_script.py
    init_distributed()                                   # process group + this rank's device
    model = AutoModelForCausalLM.from_pretrained(path)   # the same weights on every rank
    record = unlearn_llm_distributed(model, forget_ds, retain_ds, strategy="fsdp2", loss=UnlearnLoss("npo"),
                                     config=UnlearnConfig(optimizer="sophia"), out_dir="run/")
    state = full_state_dict(model)                       # the unlearned weights, on rank 0

Data (what makes a run equal the single-process one): every rank builds the same per-epoch plan as unlearn_llm
(a pure function of seed and epoch), collates the same *global* micro-batch (so the padded length is the same as
in one process) and keeps its contiguous slice of rows (`torch.tensor_split`, ranks may differ by one row). Each
loss term is a mean over the global batch: token means (GA, IDK, retain NLL, masked retain KL) are weighted by the
rank's share of the supervised tokens, row means (NPO, SimNPO, unmasked KL) by its share of the rows, so that the
average of the ranks' gradients (what DDP's all-reduce and FSDP2's reduce-scatter compute) is the gradient of the
global-batch loss. A rank without rows (batch smaller than the world) runs row 0 with weight 0 so the collectives
still match. Equality with the single-process run holds up to fp32 rounding: the all-reduce sums the ranks'
partial gradients in another order than one backward over the whole batch does.

Strategies: "ddp" (DistributedDataParallel; parameters, gradients, optimizer state and masks replicated) and
"fsdp2" (`torch.distributed.fsdp.fully_shard` per decoder layer and at the root: parameters, gradients, the
reference model, the optimizer state and the masks are DTensors sharded on dim 0; the masked optimizers run their
ops on the local shards, `pyunlearn.optim._masked`).

Checkpoints (out_dir): `checkpoint/` is a torch.distributed.checkpoint (DCP) folder holding the model, optimizer
and masks (sharded entries are resharded on load, so a run saved on 2 ranks resumes on 1 or 4, with either
strategy) plus meta.json (step, scheduler, log, config); `reference/` holds π_ref (DCP) for NPO / KL; `log.jsonl`
matches the checkpoint's step. Written atomically (a new folder renamed over the old one).

Not supported here: Sophia's "gnb" Hessian (its sampled labels depend on the batch layout; "sqgrad", SOUL's
default, is), bf16 autocast on CPU ranks is as in unlearn_llm (config.bf16).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pyunlearn.unlearn.llm.losses import IGNORE_INDEX, UnlearnLoss
from pyunlearn.unlearn.llm.trainer import (
    UnlearnConfig,
    _autocast_enabled,
    _check_data,
    _check_loss_config,
    _epoch_plan,
    _lr_lambda,
    _math_fields,
    _optimizer_step,
    _to,
    make_optimizer,
    schedule_sizes,
)

__all__ = ["STRATEGIES", "full_state_dict", "init_distributed", "prepare_model", "shard_masks",
           "unlearn_llm_distributed"]

STRATEGIES = ("ddp", "fsdp2")
CHECKPOINT = "checkpoint"
REFERENCE = "reference"
META = "meta.json"
LOG = "log.jsonl"
# losses whose term is a mean over supervised tokens (weighted by token share) vs over rows (row share)
_TOKEN_MEAN_FORGET = ("ga", "idk")


# --------------------------------------------------------------------------------------------------- setup
def _dist():
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("no default process group: launch with torchrun and call init_distributed() first "
                           "(or use pyunlearn.distributed.spawn for local CPU ranks)")
    return dist


def init_distributed(backend: str | None = None) -> torch.device:
    """Initialise the default process group from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...) if
    needed and return this rank's device: cuda:LOCAL_RANK (nccl) when CUDA is available, else cpu (gloo)."""
    import torch.distributed as dist

    if "RANK" not in os.environ and not dist.is_initialized():
        raise RuntimeError("RANK is not set: launch with torchrun (e.g. torchrun --nproc-per-node N -m "
                           "pyunlearn.distributed.llm ...)")
    cuda = torch.cuda.is_available() and backend != "gloo"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    return device


def _mesh(device: torch.device):
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (_dist().get_world_size(),))


def _layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated decoder blocks (HF causal LMs keep them in a ModuleList named `layers` or `h`)."""
    for name in ("layers", "h", "blocks"):
        for mod_name, mod in model.named_modules():
            if mod_name.endswith(name) and isinstance(mod, torch.nn.ModuleList):
                return list(mod)
    return []


def prepare_model(model: torch.nn.Module, strategy: str, *, frozen: bool = False,
                  reshard_after_forward: bool = True) -> torch.nn.Module:
    """Wrap (ddp) or shard in place (fsdp2) a model that holds the same weights on every rank.

    Returns the module to call in the forward pass: the DDP wrapper, or the model itself after `fully_shard`
    (each decoder layer, then the root). frozen=True (a reference model): no DDP wrapper (no gradients to
    reduce); under fsdp2 it is sharded like the trained model."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    _dist()
    device = next(model.parameters()).device
    if strategy == "ddp":
        if frozen:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    mesh = _mesh(device)
    for layer in _layers(model):
        fully_shard(layer, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return model


def _is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def shard_masks(model: torch.nn.Module, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Masks {parameter name: bool tensor} in the layout of the (possibly sharded) model's parameters: a full mask
    of a DTensor parameter becomes a DTensor with the parameter's placements (each rank keeps its rows, no
    communication); DTensor masks and masks of plain parameters are checked and kept."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict parameter name -> bool tensor, got {type(masks).__name__}")
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
        if isinstance(p, DTensor):
            if isinstance(m, DTensor):
                if m.placements != p.placements:
                    raise ValueError(f"masks[{name!r}] has placements {m.placements}, the parameter {p.placements}")
                out[name] = m
            else:
                out[name] = distribute_tensor(m.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
        else:
            if isinstance(m, DTensor):
                m = m.full_tensor()
            out[name] = m.to(p.device)
    return out


def full_state_dict(model: torch.nn.Module, *, all_ranks: bool = False) -> dict[str, Tensor]:
    """The full (unsharded) state dict on CPU: on rank 0 only (others get {}), or on every rank with
    all_ranks=True. Works for plain, DDP-wrapped and fully_shard-ed models (a collective: call on every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.tensor import DTensor

    if all_ranks:
        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu() for k, v in sd.items()}
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


# --------------------------------------------------------------------------------------------------- batches
def _rows_of(n_rows: int, rank: int, world: int) -> Tensor:
    return torch.tensor_split(torch.arange(n_rows), world)[rank]


def _n_supervised(labels: Tensor) -> Tensor:
    return (labels[:, 1:] != IGNORE_INDEX).sum(-1)  # [B]


def _local_slice(batch: Mapping[str, Tensor], rows: Tensor, token_mean: bool) -> tuple[dict[str, Tensor], float]:
    """(this rank's rows of a collated global batch, its weight = share of the global mean's denominator)."""
    counts = _n_supervised(batch["labels"]) if token_mean else torch.ones(batch["labels"].shape[0])
    if rows.numel() == 0:  # run row 0 for the collectives, with weight 0
        return {k: v[:1] for k, v in batch.items()}, 0.0
    local = {k: v[rows] for k, v in batch.items()}
    return local, float(counts[rows].sum()) / float(counts.sum())


def _weighted_loss(loss: UnlearnLoss, fwd_model: torch.nn.Module, f: Mapping[str, Tensor],
                   r: Mapping[str, Tensor] | None, ref_model: torch.nn.Module | None, wf: float, wr: float,
                   world: int) -> tuple[Tensor, Tensor]:
    """world·(c_f·wf·L_f + λ·wr·L_r) on this rank's rows (what the ranks' gradient average needs) and the
    weighted terms [wf·L_f, wr·L_r] (their sum over ranks is the global-batch value) for the log."""

    def fwd(m: torch.nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
        return m(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits

    def ref_fwd(batch: Mapping[str, Tensor]) -> Tensor:
        with torch.no_grad():
            return fwd(ref_model, batch)

    f_ref = ref_fwd(f) if loss.forget_loss == "npo" else None
    lf = loss.forget_term(fwd(fwd_model, f), f["labels"], f_ref)
    value = loss.forget_weight * wf * lf
    terms = [wf * float(lf.detach()), 0.0]
    if loss.retain_loss != "none":
        r_ref = ref_fwd(r) if loss.retain_loss == "kl" else None
        lr = loss.retain_term(fwd(fwd_model, r), r["labels"], r_ref)
        value = value + loss.retain_weight * wr * lr
        terms[1] = wr * float(lr.detach())
    return value * world, torch.tensor(terms, dtype=torch.float64, device=lf.device)


# --------------------------------------------------------------------------------------------------- checkpoints
def _dcp_save(state: dict, out: Path, name: str, meta: dict | None) -> None:
    """DCP-save state into out/name atomically: out/name.tmp, meta.json by rank 0, then rename."""
    import torch.distributed.checkpoint as dcp

    dist = _dist()
    tmp, final, old = out / f"{name}.tmp", out / name, out / f"{name}.old"
    if dist.get_rank() == 0 and tmp.exists():
        shutil.rmtree(tmp)
    dist.barrier()
    dcp.save(state, checkpoint_id=str(tmp))
    if dist.get_rank() == 0:
        if meta is not None:
            (tmp / META).write_text(json.dumps(meta))
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old)
    dist.barrier()


def _dcp_dir(out: Path, name: str) -> Path | None:
    """The checkpoint folder to resume from (the .old one if a save was interrupted mid-rename)."""
    for cand in (out / name, out / f"{name}.old"):
        if (cand / ".metadata").exists():
            return cand
    return None


def _mask_templates(model: torch.nn.Module, names: list[str]) -> dict[str, Tensor]:
    params = dict(model.named_parameters())
    return shard_masks(model, {n: torch.zeros(params[n].shape, dtype=torch.bool) for n in names})


def _optim_state(model: torch.nn.Module, opt: Any) -> dict:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    masks = opt._masks
    opt._masks = {}  # masks are saved by name beside the optimizer state (DCP keys optimizer state by FQN)
    try:
        return get_optimizer_state_dict(model, opt)
    finally:
        opt._masks = masks


# --------------------------------------------------------------------------------------------------- the loop
def unlearn_llm_distributed(model: torch.nn.Module, forget: Any, retain: Any = None, *, strategy: str = "ddp",
                            loss: UnlearnLoss | None = None, config: UnlearnConfig | None = None,
                            masks: Mapping[str, Tensor] | None = None, ref_model: torch.nn.Module | None = None,
                            out_dir: str | Path | None = None, resume: bool = True, stop_after: int | None = None,
                            forget_collate_fn: Callable | None = None, retain_collate_fn: Callable | None = None,
                            reshard_after_forward: bool = True) -> dict:
    """`unlearn_llm` on every rank of the default process group (call it on all ranks with the same arguments).

    model: the same weights on every rank, on this rank's device, not yet wrapped; it is trained in place
    (strategy "ddp": through a DistributedDataParallel wrapper; "fsdp2": it is `fully_shard`-ed in place —
    unless `prepare_model(model, "fsdp2")` already did — and stays sharded; `full_state_dict(model)` gathers it).
    forget / retain / loss / config / masks / stop_after: as in unlearn_llm (masks: full bool tensors by
    parameter name, or DTensors already sharded like the parameters, e.g. from `wagle_masks_distributed`).
    ref_model: the frozen π_ref (unwrapped, same weights on every rank); None = a copy of `model` taken before
    any update (sharded too under fsdp2). out_dir: DCP checkpoints (see the module docstring), written
    collectively; resume=True continues one, whatever world size or strategy wrote it.

    Returns unlearn_llm's record plus "world_size" and "strategy" (the log holds the global-batch loss terms)."""
    from tqdm.auto import tqdm

    dist = _dist()
    rank, world = dist.get_rank(), dist.get_world_size()
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    loss, config = _check_loss_config(loss, config)
    if config.optimizer == "sophia" and config.sophia_hessian == "gnb":
        raise ValueError("sophia_hessian='gnb' is not supported by unlearn_llm_distributed (its sampled labels "
                         "depend on the batch layout); use the default 'sqgrad' (SOUL)")
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        raise TypeError("model must be the plain (unwrapped) model; unlearn_llm_distributed wraps it")
    presharded = _is_sharded(model)  # fully_shard-ed already (e.g. for wagle_scores_distributed)
    if presharded and strategy != "fsdp2":
        raise ValueError(f"model is already sharded (DTensor parameters): use strategy='fsdp2', not {strategy!r}")
    if presharded and loss.needs_reference and ref_model is None:
        raise ValueError("model is already sharded: pass ref_model (an unsharded copy of the original weights) for "
                         f"forget_loss={loss.forget_loss!r} / retain_loss={loss.retain_loss!r}")
    use_retain, f_collate, r_collate = _check_data(forget, retain, loss, forget_collate_fn, retain_collate_fn)

    device = next(model.parameters()).device
    out = None if out_dir is None else Path(out_dir)
    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    ck_dir = _dcp_dir(out, CHECKPOINT) if out is not None and resume else None
    meta = json.loads((ck_dir / META).read_text()) if ck_dir is not None else None

    # π_ref (G5): copied before any update (and before sharding); resumed runs load the saved original
    if loss.needs_reference and ref_model is None:
        ref_model = copy.deepcopy(model)
        own_ref = True
    else:
        own_ref = False
    if ref_model is not None:
        ref_model.eval().requires_grad_(False)
        ref_model = prepare_model(ref_model, strategy, frozen=True, reshard_after_forward=reshard_after_forward)
    fwd_model = model if presharded else prepare_model(model, strategy, reshard_after_forward=reshard_after_forward)
    if own_ref and out is not None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        if ck_dir is not None:
            ref_dir = _dcp_dir(out, REFERENCE)
            if ref_dir is None:
                raise FileNotFoundError(f"{out / REFERENCE} is missing: cannot resume {loss.forget_loss!r}/"
                                        f"{loss.retain_loss!r} without the original reference model")
            sd = {"model": get_model_state_dict(ref_model)}
            dcp.load(sd, checkpoint_id=str(ref_dir))
            set_model_state_dict(ref_model, sd["model"])
        else:
            _dcp_save({"model": get_model_state_dict(ref_model)}, out, REFERENCE, None)

    n_f, n_r = len(forget), (len(retain) if use_retain else 0)
    mb_per_epoch, total, warmup = schedule_sizes(config, n_f)
    params = [p for p in model.parameters() if p.requires_grad]
    named_masks = None
    if masks is not None:
        by_name = shard_masks(model, masks)
        pmap = dict(model.named_parameters())
        named_masks = {pmap[n]: m for n, m in by_name.items()}
    opt = make_optimizer(params, config, named_masks)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, warmup, config.schedule))
    step, log = 0, []
    if ck_dir is not None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_state_dict

        if meta["total"] != total or _math_fields(meta["config"]) != _math_fields(asdict(config)):
            raise ValueError(f"{ck_dir} was written with a different config/step count; "
                             "use another out_dir or resume=False")
        state = {"model": get_model_state_dict(fwd_model), "optim": _optim_state(fwd_model, opt),
                 "masks": _mask_templates(model, meta["mask_names"])}
        dcp.load(state, checkpoint_id=str(ck_dir))
        set_state_dict(fwd_model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        if meta["mask_names"]:
            pmap = dict(model.named_parameters())
            opt.set_masks({pmap[n]: m for n, m in state["masks"].items()})
        sched.load_state_dict(meta["scheduler"])
        step, log = meta["step"], meta["log"]
    resumed_from = step

    def save() -> None:
        if out is None:
            return
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        names = {p: n for n, p in model.named_parameters()}
        mask_sd = {names[p]: m for p, m in opt.masks.items()}
        state = {"model": get_model_state_dict(fwd_model), "optim": _optim_state(fwd_model, opt), "masks": mask_sd}
        info = {"step": step, "total": total, "log": log, "config": asdict(config), "loss": asdict(loss),
                "scheduler": sched.state_dict(), "mask_names": sorted(mask_sd), "world_size": world,
                "strategy": strategy}
        _dcp_save(state, out, CHECKPOINT, info)
        if rank == 0:
            with open(out / (LOG + ".tmp"), "w") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in log)
            os.replace(out / (LOG + ".tmp"), out / LOG)
        dist.barrier()

    use_cache = getattr(model.config, "use_cache", None) if hasattr(model, "config") else None
    if use_cache is not None:
        model.config.use_cache = False
    amp = _autocast_enabled(config, device)
    plan_epoch, plan = -1, None
    fwd_model.train()
    t0 = time.perf_counter()
    end = total if stop_after is None else min(total, stop_after)
    token_f = loss.forget_loss in _TOKEN_MEAN_FORGET
    token_r = loss.retain_loss == "nll" or (loss.retain_loss == "kl" and loss.kl_masked)
    bar = tqdm(range(step, end), initial=step, total=total, disable=not config.progress or rank != 0,
               desc=f"unlearn {loss.forget_loss}/{config.optimizer} {strategy}x{world}")
    try:
        for step_i in bar:
            terms = torch.zeros(2, dtype=torch.float64, device=device)  # on the device: nccl reduces no CPU tensor
            for a in range(config.grad_accum):
                mb = step_i * config.grad_accum + a
                epoch, k = divmod(mb, mb_per_epoch)
                if epoch != plan_epoch:
                    plan, plan_epoch = _epoch_plan(n_f, n_r, config.seed, epoch), epoch
                idx = plan[0][k * config.batch_size:(k + 1) * config.batch_size]
                rows = _rows_of(len(idx), rank, world)
                f_batch, wf = _local_slice(f_collate([forget[int(i)] for i in idx]), rows, token_f)
                f_batch = _to(f_batch, device)
                r_batch, wr = None, 0.0
                if use_retain:
                    r_batch, wr = _local_slice(r_collate([retain[int(j)] for j in plan[1][idx]]), rows, token_r)
                    r_batch = _to(r_batch, device)
                sync = nullcontext()
                if strategy == "ddp" and a < config.grad_accum - 1:
                    sync = fwd_model.no_sync()  # one all-reduce per optimizer step
                with sync:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        value, t = _weighted_loss(loss, fwd_model, f_batch, r_batch, ref_model, wf, wr, world)
                    (value / config.grad_accum).backward()
                terms += t / config.grad_accum
            dist.all_reduce(terms)  # the global-batch terms, for the log (same on every rank)
            grad_norm, lr_now = _optimizer_step(opt, sched, params, config)
            step = step_i + 1
            parts = {"forget": float(terms[0])}
            total_v = loss.forget_weight * float(terms[0])
            if use_retain:
                parts["retain"] = float(terms[1])
                total_v += loss.retain_weight * float(terms[1])
            parts["total"] = total_v
            rec = {"step": step, "epoch": round(step * config.grad_accum / mb_per_epoch, 4), "lr": lr_now,
                   **{f"loss_{k}": v for k, v in parts.items()}, "grad_norm": grad_norm}
            log.append(rec)
            bar.set_postfix(loss=f"{total_v:.4f}")
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
            "resumed_from": resumed_from, "warmup_steps": warmup, "world_size": world, "strategy": strategy}


def main(argv: list[str] | None = None) -> int:
    """`torchrun --nproc-per-node N -m pyunlearn.distributed.llm [--strategy ddp|fsdp2] <pyunlearn llm flags>`:
    `pyunlearn llm` (fine-tune, unlearn, evaluate) with the unlearning on every rank; default strategy ddp."""
    import argparse
    import sys

    from pyunlearn.unlearn.llm.pipeline import add_cli

    parser = argparse.ArgumentParser(prog="python -m pyunlearn.distributed.llm")
    add_cli(parser.add_subparsers())
    args = parser.parse_args(["llm", *(sys.argv[1:] if argv is None else argv)])
    if args.strategy == "none":
        args.strategy = "ddp"
    return args.fn(args)


if __name__ == "__main__":
    import sys

    code = main()
    # leave without interpreter finalisation: a gloo rank of torch 2.13 occasionally aborts there ("terminate
    # called without an active exception") after all its work, which torchrun would report as a failed rank
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
