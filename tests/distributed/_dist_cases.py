"""Shared pieces of the distributed tests: the tiny world (saved to disk once, loaded by every rank), the run cases,
and the rank function the tests spawn. Imported by the spawned ranks by module name (tests/distributed is on
sys.path through pytest's rootdir insertion, which spawn passes to its children)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from pyunlearn.unlearn.llm import UnlearnConfig, UnlearnLoss

# fp32 tolerance of "equal to the single-process run": the ranks' partial gradients are summed by the all-reduce
# (DDP) / reduce-scatter (FSDP2) in another order than one backward over the whole batch, so the gradients differ
# in the last bits (~1e-7 relative) and a few optimizer steps carry that on; bit-exactness cannot hold.
ATOL, RTOL = 2e-6, 1e-4


class ListQA(torch.utils.data.Dataset):
    """Materialised QA items (picklable, no tokenizer) with a collate that pads with the tokenizer's pad id."""

    def __init__(self, items: list[dict], pad_token_id: int) -> None:
        self.items = items
        from pyunlearn.data.tofu import collate_qa

        self.collate = functools.partial(collate_qa, pad_token_id=pad_token_id)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def build_world(path: Path) -> None:
    """Corpus (10 authors x 6 QA; forget10 = the last author, 6 rows), tokenizer, a random tiny Llama (hidden 32):
    unlearning starts from random weights, which is all the equality tests need."""
    from pyunlearn.data.tofu import QADataset, make_tofu_like, train_tokenizer
    from pyunlearn.models.llm import tiny_llama
    from pyunlearn.unlearn.llm.pipeline import forget_dataset

    corpus = make_tofu_like(seed=0, n_authors=10, qa_per_author=6)
    tok = train_tokenizer(corpus, vocab_size=300)
    model = tiny_llama(tok, hidden=32, layers=2, heads=2, seed=0)
    model.save_pretrained(path / "model")
    data = {}
    for name, ds in (("forget", QADataset(corpus.split("forget10"), tok, max_length=64)),
                     ("retain", QADataset(corpus.split("retain90"), tok, max_length=64)),
                     ("idk", forget_dataset(corpus, tok, "forget10", "idk", max_length=64))):
        data[name] = [ds[i] for i in range(len(ds))]
    torch.save({"data": data, "pad": tok.pad_token_id}, path / "data.pt")


def load_world(path: Path) -> tuple[torch.nn.Module, dict[str, ListQA]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path / "model", local_files_only=True).float()
    blob = torch.load(path / "data.pt", weights_only=False)
    return model, {k: ListQA(v, blob["pad"]) for k, v in blob["data"].items()}


def fixed_masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A deterministic ~60 % mask on every matrix (vectors unmasked)."""
    g = torch.Generator().manual_seed(5)
    return {n: torch.rand(p.shape, generator=g) < 0.6 for n, p in model.named_parameters() if p.dim() == 2}


# name -> (strategy, loss kwargs, config kwargs, masked, forget set)
CASES: dict[str, tuple] = {
    "ddp_npo_adamw": ("ddp", {"forget_loss": "npo", "retain_loss": "nll"},
                      {"optimizer": "adamw", "batch_size": 3, "grad_accum": 2}, False, "forget"),
    "ddp_simnpo_sophia_mask": ("ddp", {"forget_loss": "simnpo", "retain_loss": "nll", "beta": 2.5},
                               {"optimizer": "sophia", "batch_size": 4}, True, "forget"),
    "fsdp2_npo_kl_adamw_mask": ("fsdp2", {"forget_loss": "npo", "retain_loss": "kl"},
                                {"optimizer": "adamw", "batch_size": 3}, True, "forget"),
    "fsdp2_ga_sgd": ("fsdp2", {"forget_loss": "ga", "retain_loss": "none"},
                     {"optimizer": "sgd", "momentum": 0.9, "batch_size": 1, "lr": 1e-2}, False, "forget"),
    "fsdp2_idk_sophia_mask": ("fsdp2", {"forget_loss": "idk", "retain_loss": "nll"},
                              {"optimizer": "sophia", "batch_size": 4, "grad_accum": 2}, True, "idk"),
    "fsdp2_graddiff_adamw": ("fsdp2", {"forget_loss": "ga", "retain_loss": "nll"},
                             {"optimizer": "adamw", "batch_size": 5}, False, "forget"),
}
STEPS = 4


def case_args(name: str, model: torch.nn.Module, data: dict) -> tuple[str, dict]:
    strategy, lkw, ckw, masked, fset = CASES[name]
    cfg = UnlearnConfig(**{"lr": 1e-3, "max_steps": STEPS, "progress": False, **ckw})
    kw = {"loss": UnlearnLoss(**lkw), "config": cfg, "masks": fixed_masks(model) if masked else None}
    return strategy, {"forget": data[fset], "retain": data["retain"], **kw}


def rank_main(rank: int, world: int, path: str, jobs: list[dict]) -> None:
    """Run jobs in order; each writes its full final state dict (+ log) to path/<out>.pt from rank 0.

    job: {"kind": "case", "name"} | {"kind": "resume", "name", "strategy", "dir", "stop_after"|None, "out"} |
    {"kind": "wagle", "strategy": "fsdp2"|"ddp", "out"}."""
    from pyunlearn.distributed import (
        full_state_dict,
        prepare_model,
        unlearn_llm_distributed,
        wagle_masks_distributed,
        wagle_scores_distributed,
    )

    torch.set_num_threads(1)
    path = Path(path)
    for job in jobs:
        model, data = load_world(path)
        if job["kind"] == "wagle":
            sharded = job.get("strategy", "fsdp2") == "fsdp2"
            if sharded:
                prepare_model(model, "fsdp2")  # else: replicated weights, gradient sums all-reduced
            scores = wagle_scores_distributed(model, data["forget"], data["retain"], gamma=1e-3, seed=1)
            masks = wagle_masks_distributed(scores, 0.37)
            full = {n: s.full_tensor() if sharded else s for n, s in scores.items()}
            mfull = {n: m.full_tensor() if sharded else m for n, m in masks.items()}
            if rank == 0:
                torch.save({"scores": full, "masks": mfull}, path / f"{job['out']}.pt")
            continue
        strategy, kw = case_args(job["name"], model, data)
        if job["kind"] == "resume":
            strategy = job["strategy"]
            kw["out_dir"] = path / job["dir"]
            kw["config"].checkpoint_every = 2
        rec = unlearn_llm_distributed(model, strategy=strategy, stop_after=job.get("stop_after"), **kw)
        sd = full_state_dict(model)
        if rank == 0:
            torch.save({"state": sd, "log": rec["log"], "resumed_from": rec["resumed_from"]},
                       path / f"{job.get('out', job['name'])}.pt")
            (path / f"{job.get('out', job['name'])}.json").write_text(json.dumps(rec["log"]))
