"""`pyunlearn llm` on N ranks: the pipeline of `pyunlearn.unlearn.llm.pipeline.run_llm` with the unlearning (and
WAGLE) under DDP or FSDP2. Rank 0 fine-tunes / caches the original and reference models, evaluates, and writes
results.json; every rank unlearns its slice of each global batch.

    torchrun --nproc-per-node 2 -m pyunlearn.distributed.llm --strategy fsdp2 --method npo --forget forget05
    torchrun --nproc-per-node 2 -m pyunlearn.cli llm --strategy ddp --method simnpo     # the same, via the CLI
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pyunlearn.unlearn.llm.losses import UnlearnLoss

__all__ = ["run_llm_distributed"]


def _count_true(masks: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(selected, total) over masks that may be DTensors (local sums + one all-reduce, no gather)."""
    from torch.distributed.tensor import DTensor

    from pyunlearn.distributed.llm import _dist

    dist = _dist()
    first = next(iter(masks.values()))
    dev = (first.to_local() if isinstance(first, DTensor) else first).device  # nccl reduces CUDA tensors only
    sharded = torch.zeros(1, dtype=torch.int64, device=dev)
    replicated = 0
    for m in masks.values():
        if isinstance(m, DTensor):
            sharded += int(m.to_local().sum())
        else:
            replicated += int(m.sum())
    dist.all_reduce(sharded)
    return int(sharded) + replicated, sum(m.numel() for m in masks.values())


def run_llm_distributed(method: str = "simnpo", forget_split: str = "forget05", *, strategy: str = "ddp",
                        out_dir: str | Path = "pyunlearn_llm", demo: Any = None, loss: UnlearnLoss | None = None,
                        config: Any = None, wagle_ratio: float | None = None, wagle_gamma: float = 1e-6,
                        truth_ratio_form: str = "answer", progress: bool = True, log=print,
                        device: torch.device | None = None) -> dict | None:
    """run_llm on every rank of the default process group; returns the results dict on rank 0, None elsewhere."""
    from pyunlearn.data.tofu import QADataset
    from pyunlearn.distributed.llm import _dist, full_state_dict, prepare_model, unlearn_llm_distributed
    from pyunlearn.distributed.wagle import wagle_masks_distributed, wagle_scores_distributed
    from pyunlearn.eval.llm import evaluate_tofu
    from pyunlearn.unlearn.llm.pipeline import (
        DemoConfig,
        _run_name,
        forget_dataset,
        method_loss,
        plot,
        prepare_models,
        retain_split_for,
    )
    from pyunlearn.unlearn.llm.trainer import UnlearnConfig

    dist = _dist()
    rank, world = dist.get_rank(), dist.get_world_size()
    demo = DemoConfig() if demo is None else demo
    loss = method_loss(method) if loss is None else loss
    config = UnlearnConfig(lr=1e-3, epochs=10, progress=progress) if config is None else config
    device = torch.device("cpu") if device is None else device
    out = Path(out_dir)
    say = log if rank == 0 else (lambda *a, **k: None)
    if rank == 0:  # fine-tune and cache first, then the other ranks reload the cache
        corpus, tok, original, reference = prepare_models(demo, forget_split, out, progress=progress, log=log)
    dist.barrier()
    if rank != 0:
        corpus, tok, original, reference = prepare_models(demo, forget_split, out, progress=False, log=say)
    retain = retain_split_for(forget_split)
    ev = {"truth_ratio_form": truth_ratio_form}
    res_ref = res_orig = None
    if rank == 0:
        t0 = time.perf_counter()
        res_ref = evaluate_tofu(reference, tok, corpus, forget_split, **ev)
        res_ref = evaluate_tofu(reference, tok, corpus, forget_split, reference=res_ref, **ev)
        res_orig = evaluate_tofu(original, tok, corpus, forget_split, reference=res_ref, **ev)
        say(f"evaluated original and retrain in {time.perf_counter() - t0:.1f} s")

    model = copy.deepcopy(original).to(device)
    forget_ds = forget_dataset(corpus, tok, forget_split, method)
    retain_ds = QADataset(corpus.split(retain), tok, max_length=128)
    ref_model = copy.deepcopy(original).to(device) if loss.needs_reference else None
    masks, mask_info = None, None
    if wagle_ratio is not None:
        t0 = time.perf_counter()
        if strategy == "fsdp2":
            prepare_model(model, "fsdp2")  # scores from sharded gradients; unlearning keeps this sharding
        f_scores = forget_dataset(corpus, tok, forget_split, "ga")
        scores = wagle_scores_distributed(model, f_scores, retain_ds, gamma=wagle_gamma, seed=config.seed,
                                          progress=progress)
        masks = wagle_masks_distributed(scores, wagle_ratio)
        n_on, n_all = _count_true(masks)
        mask_info = {"ratio": wagle_ratio, "gamma": wagle_gamma, "selected": n_on, "total": n_all,
                     "seconds": time.perf_counter() - t0}
        say(f"WAGLE mask: {n_on}/{n_all} weights may move (ratio {wagle_ratio})")
    run_dir = out / f"{_run_name(method, forget_split, loss, config, mask_info)}_dist"
    record = unlearn_llm_distributed(model, forget_ds, retain_ds, strategy=strategy, loss=loss, config=config,
                                     masks=masks, ref_model=ref_model, out_dir=run_dir)
    say(f"unlearned ({method}, {config.optimizer}, {strategy} x {world}): {record['steps']} steps in "
        f"{record['wall_s']:.1f} s")
    state = full_state_dict(model)
    if rank != 0:
        return None
    unlearned = copy.deepcopy(original)
    unlearned.load_state_dict(state)
    res_unl = evaluate_tofu(unlearned, tok, corpus, forget_split, reference=res_ref, **ev)
    record.pop("log")
    results = {"method": method, "forget_split": forget_split, "optimizer": config.optimizer,
               "strategy": strategy, "world_size": world, "truth_ratio_form": truth_ratio_form,
               "demo": asdict(demo), "unlearn": record, "wagle": mask_info, "original": res_orig,
               "retrain": res_ref, "unlearned": res_unl}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    try:
        plot(results, out / "results.png")
    except ImportError:
        pass
    return results
