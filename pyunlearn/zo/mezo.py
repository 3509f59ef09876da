"""MeZO fine-tuning (spec A2): memory-efficient zeroth-order SGD for causal language models.

Each step (ZOSGD with q = 1, central differences, momentum 0):
    seed_t <- derive_seed(seed, t)
    θ += μz; ℓ+ <- loss; θ −= 2μz; ℓ− <- loss; θ += μz      z regenerated in-kernel from seed_t, never stored
    θ <- θ(1 − ηλ) − η (ℓ+ − ℓ−)/(2μ) z                      one pass; λ skipped for bias / norm parameters
The model runs in eval mode (dropout off) under no_grad, as MeZO does: memory = inference + O(1) scalars.
Differences from the MeZO repository: the direction stream is the library's counter-based generator (not
torch.normal under a reseeded global RNG, so values differ bit-for-bit), the projected gradient stays on the
device (no .item()), and l(θ) is evaluated once per step for logging (3 forwards instead of 2; spsa_projections'
contract).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass
class MeZOConfig:
    """MeZO hyper-parameters. Paper grid for OPT-13B full-parameter: lr 1e-6/1e-7, μ 1e-3, batch 16,
    constant lr (A2.2). The defaults here are sized for the tiny offline Llama of `demo` (~150k parameters),
    where a much larger lr is stable."""

    steps: int = 300
    lr: float = 1e-3  # tiny Llama: steady over 300 steps; 3e-3 falls faster then diverges after ~100 (measured)
    mu: float = 1e-3  # A2.2
    batch_size: int = 16  # A2.2
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "seed"):
            v = getattr(self, name)
            low = 1 if name == "batch_size" else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"MeZOConfig.{name} must be an int >= {low}, got {v!r}")
        for name in ("lr", "mu", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"MeZOConfig.{name} must be a finite number, got {v!r}")
            if name == "mu" and not v > 0:
                raise ValueError(f"MeZOConfig.mu must be > 0, got {v!r}")
            if v < 0:
                raise ValueError(f"MeZOConfig.{name} must be a finite number >= 0, got {v!r}")


def lm_loss(model, batch: dict) -> torch.Tensor:
    """The causal-LM loss of a collated batch (input_ids, attention_mask, labels)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 labels=batch["labels"]).loss


@torch.no_grad()
def dataset_loss(model, dataset, *, batch_size: int = 64) -> float:
    """Mean of the per-batch LM loss over `dataset` in order (eval mode)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=dataset.collate)
    was = model.training
    model.eval()
    try:
        losses = [float(lm_loss(model, b)) * len(b["input_ids"]) for b in loader]
    finally:
        model.train(was)
    return sum(losses) / len(dataset)


def mezo_finetune(model, dataset, cfg: MeZOConfig | None = None, *, progress: bool = True) -> dict:
    """MeZO on `dataset` (items collated by dataset.collate, e.g. pyunlearn.data.tofu.QADataset) for cfg.steps
    steps of batch cfg.batch_size, reshuffled each pass with its own generator (seeded cfg.seed).

    Returns {"step_loss": [l(θ_t) of every step's batch], "optimizer": the ZOSGD state_dict}; the model is left
    in eval mode."""
    from pyunlearn.optim.zo import ZOSGD

    cfg = MeZOConfig() if cfg is None else cfg
    if not isinstance(cfg, MeZOConfig):
        raise TypeError(f"cfg must be a MeZOConfig, got {type(cfg).__name__}")
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                                         collate_fn=dataset.collate)
    opt = ZOSGD([(n, p) for n, p in model.named_parameters() if p.requires_grad], lr=cfg.lr,
                weight_decay=cfg.weight_decay, q=1, mu=cfg.mu, central=True, seed=cfg.seed)
    model.eval()  # dropout off, as MeZO
    losses = []
    it = iter(loader)
    bar = tqdm(range(cfg.steps), desc="mezo", disable=None if progress else True, leave=False)
    for _ in bar:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        losses.append(opt.step(lambda b=batch: lm_loss(model, b)))
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{float(losses[-1]):.3f}")
    return {"step_loss": [float(v) for v in losses], "optimizer": opt.state_dict()}


def demo(cfg: MeZOConfig | None = None, *, n_authors: int = 10, progress: bool = True) -> dict:
    """MeZO on the synthetic TOFU-like QA set with a tokenizer trained on it and a tiny Llama from config
    (offline). Returns the dataset loss before and after, the step losses and the parameter count."""
    import time

    from pyunlearn.data.tofu import QADataset, make_tofu_like, train_tokenizer
    from pyunlearn.models.llm import tiny_llama

    cfg = MeZOConfig() if cfg is None else cfg
    corpus = make_tofu_like(seed=0, n_authors=n_authors, qa_per_author=10)
    tok = train_tokenizer(corpus, vocab_size=512)
    data = QADataset(corpus.split("full"), tok, max_length=64)
    model = tiny_llama(tok, seed=cfg.seed)
    before = dataset_loss(model, data)
    t0 = time.perf_counter()
    rec = mezo_finetune(model, data, cfg, progress=progress)
    seconds = time.perf_counter() - t0
    return {"loss_before": before, "loss_after": dataset_loss(model, data), "seconds": seconds,
            "params": sum(p.numel() for p in model.parameters()), "step_loss": rec["step_loss"],
            "config": vars(cfg).copy()}


__all__ = ["MeZOConfig", "dataset_loss", "demo", "lm_loss", "mezo_finetune"]
