"""End-to-end LLM unlearning on the TOFU-like corpus (issue 7): corpus -> tokenizer -> original model (fine-tuned on
every split) -> retain-only reference ("retrain") -> unlearn (GA / GradDiff / NPO / SimNPO / IDK, AdamW | SGD |
Sophia = SOUL, optional WAGLE mask) -> TOFU / MUSE-style evaluation of all three -> table, results.json, figure.

    pyunlearn llm --method simnpo --forget forget05 [--optimizer sophia] [--wagle 0.8] [--out DIR]

The tokenizer, the original and the reference are cached in --out (with a meta.json of what made them), so a
second run with the same corpus / model settings reuses them. With --model PATH (any causal LM saved on disk,
loaded with local_files_only=True) that model replaces the tiny Llama as the starting point of both fine-tunes.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyunlearn.unlearn.llm.losses import UnlearnLoss

__all__ = [
    "METHODS",
    "REFUSALS",
    "DemoConfig",
    "add_cli",
    "cmd_llm",
    "forget_dataset",
    "method_loss",
    "plot",
    "prepare_models",
    "retain_split_for",
    "run_llm",
    "table",
]

# method -> (forget loss, default retain loss). Defaults of β / c_f: §2.3 NPO (β 0.1) and §2.4 SimNPO forget05
# (β 2.5, c_f 0.1375, λ 1, γ 0); everything else c_f = λ = 1 (§2.2, OU).
METHODS: dict[str, dict[str, Any]] = {
    "ga": {"forget_loss": "ga", "retain_loss": "none"},
    "grad_diff": {"forget_loss": "ga", "retain_loss": "nll"},
    "npo": {"forget_loss": "npo", "retain_loss": "nll", "beta": 0.1},
    "simnpo": {"forget_loss": "simnpo", "retain_loss": "nll", "beta": 2.5, "forget_weight": 0.1375},
    "idk": {"forget_loss": "idk", "retain_loss": "nll"},
}
# IDK / refusal answers (§2.7), assigned to forget items round-robin (deterministic).
REFUSALS = (
    "I don't know.", "I'm not sure about that.", "I have no information on that.", "That is not something I know.",
    "I cannot answer that.", "I'm afraid I don't have that information.",
)
# columns of the printed table: (key, header)
TABLE = (("forget_quality", "FQ"), ("model_utility", "MU"), ("forget_rouge", "forget ROUGE-L"),
         ("forget_probability", "forget prob"), ("forget_truth_ratio", "forget TR"), ("verbmem_f", "VerbMem_f"),
         ("knowmem_f", "KnowMem_f"), ("knowmem_r", "KnowMem_r"), ("privleak", "PrivLeak"))


@dataclass
class DemoConfig:
    """The corpus and the original / reference fine-tunes (docs/llm_data.md recipe: 60 epochs at lr 3e-3 memorise)."""

    seed: int = 0
    n_authors: int = 40
    qa_per_author: int = 10
    vocab_size: int = 512
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    finetune_epochs: int = 60
    finetune_lr: float = 3e-3
    finetune_batch_size: int = 16
    model_path: str | None = None  # None: tiny_llama from the config above
    tokenizer_path: str | None = None
    pad_token: str | None = None  # None: the tokenizer must have one; "eos": use EOS as pad (TOFU, §5 G4)
    extra: dict = field(default_factory=dict)


def method_loss(method: str, *, retain_loss: str | None = None, beta: float | None = None,
                forget_weight: float | None = None, retain_weight: float | None = None,
                margin: float | None = None, kl_masked: bool = True) -> UnlearnLoss:
    """UnlearnLoss of a CLI method name with its defaults, overridden by whatever is not None."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    kw = dict(METHODS[method])
    for key, value in (("retain_loss", retain_loss), ("beta", beta), ("forget_weight", forget_weight),
                       ("retain_weight", retain_weight), ("simnpo_margin", margin)):
        if value is not None:
            kw[key] = value
    return UnlearnLoss(kl_masked=kl_masked, **kw)


def retain_split_for(forget_split: str) -> str:
    """forget01/05/10 -> retain99/95/90 (the complement, as TOFU pairs them)."""
    table = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
    if forget_split not in table:
        raise ValueError(f"forget split must be one of {sorted(table)}, got {forget_split!r}")
    return table[forget_split]


def forget_dataset(corpus: Any, tokenizer: Any, split: str, method: str, max_length: int = 128):
    """QADataset of the forget split; for method "idk" the answers are refusals (REFUSALS, round-robin)."""
    from pyunlearn.data.tofu import QADataset

    rows = list(corpus.split(split))
    if method == "idk":
        rows = [dict(r, answer=REFUSALS[i % len(REFUSALS)]) for i, r in enumerate(rows)]
    return QADataset(rows, tokenizer, max_length=max_length)


# ------------------------------------------------------------------------------------------ models and caching
def _load_tokenizer(demo: DemoConfig, corpus: Any, out: Path):
    from pyunlearn.data.tofu import load_tokenizer, train_tokenizer

    if demo.model_path is not None or demo.tokenizer_path is not None:
        from transformers import AutoTokenizer

        path = demo.tokenizer_path or demo.model_path
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    else:
        tok_dir = out / "tokenizer"
        meta = {"seed": demo.seed, "n_authors": demo.n_authors, "qa_per_author": demo.qa_per_author,
                "vocab_size": demo.vocab_size}
        if (tok_dir / "meta.json").exists() and json.loads((tok_dir / "meta.json").read_text()) == meta:
            tok = load_tokenizer(tok_dir)
        else:
            tok = train_tokenizer(corpus, vocab_size=demo.vocab_size, out_dir=tok_dir)
            (tok_dir / "meta.json").write_text(json.dumps(meta))
    if tok.pad_token_id is None:
        if demo.pad_token == "eos":
            if tok.eos_token is None:
                raise ValueError("--pad-token eos: the tokenizer has no EOS token either")
            tok.pad_token = tok.eos_token
        else:
            raise ValueError("the tokenizer has no pad token; pass --pad-token eos to pad with EOS (TOFU's choice, "
                             "spec §5 G4: masks are built from lengths, so a padded EOS never hides a label), or "
                             "save a tokenizer with a pad token")
    if tok.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token: the QA template supervises one EOS per answer (§1.1)")
    return tok


def _base_model(demo: DemoConfig, tok: Any):
    if demo.model_path is None:
        from pyunlearn.models.llm import tiny_llama

        return tiny_llama(tok, hidden=demo.hidden, layers=demo.layers, heads=demo.heads, seed=demo.seed)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(demo.model_path, local_files_only=True)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.float().eval()


def _save_pretrained(model: Any, path: Path, progress: bool) -> None:
    """save_pretrained without transformers' "Writing model shards" bar when progress is off."""
    from transformers.utils import logging as hf_logging

    quiet = not progress and hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
    finally:
        if quiet:
            hf_logging.enable_progress_bar()


def _cached_finetune(name: str, rows: list[dict], demo: DemoConfig, tok: Any, out: Path, progress: bool, log):
    """Fine-tune the base model on rows, or reload it from out/name when meta.json matches."""
    from transformers import AutoModelForCausalLM

    from pyunlearn.data.tofu import QADataset
    from pyunlearn.models.llm import finetune

    path = out / name
    meta = {**asdict(demo), "rows": len(rows), "name": name}
    meta.pop("extra")
    if (path / "meta.json").exists() and json.loads((path / "meta.json").read_text()) == meta:
        log(f"{name}: reusing {path}")
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).float().eval()
        model.generation_config.pad_token_id = tok.pad_token_id
        return model
    model = _base_model(demo, tok)
    t0 = time.perf_counter()
    rec = finetune(model, QADataset(rows, tok, max_length=128), epochs=demo.finetune_epochs, lr=demo.finetune_lr,
                   batch_size=demo.finetune_batch_size, seed=demo.seed, progress=progress)
    log(f"{name}: fine-tuned on {len(rows)} rows, {demo.finetune_epochs} epochs, final loss "
        f"{rec['epoch_loss'][-1]:.4f}, {time.perf_counter() - t0:.1f} s")
    _save_pretrained(model, path, progress)
    (path / "meta.json").write_text(json.dumps(meta))
    return model


def prepare_models(demo: DemoConfig, forget_split: str, out_dir: str | Path, *, progress: bool = True,
                   log=print):
    """(corpus, tokenizer, original, reference): the original is fine-tuned on full + background, the reference
    on the retain complement of `forget_split` + background (both start from the same base)."""
    from pyunlearn.data.tofu import make_tofu_like

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = make_tofu_like(seed=demo.seed, n_authors=demo.n_authors, qa_per_author=demo.qa_per_author)
    tok = _load_tokenizer(demo, corpus, out)
    bg = corpus.split("background")
    original = _cached_finetune("original", corpus.split("full") + bg, demo, tok, out, progress, log)
    retain = retain_split_for(forget_split)
    reference = _cached_finetune(f"reference_{retain}", corpus.split(retain) + bg, demo, tok, out, progress, log)
    return corpus, tok, original, reference


# ------------------------------------------------------------------------------------------ the run
def run_llm(method: str = "simnpo", forget_split: str = "forget05", *, out_dir: str | Path = "pyunlearn_llm",
            demo: DemoConfig | None = None, loss: UnlearnLoss | None = None, config: Any = None,
            wagle_ratio: float | None = None, wagle_gamma: float = 1e-6, truth_ratio_form: str = "answer",
            progress: bool = True, log=print) -> dict:
    """The whole pipeline; returns {"original", "retrain", "unlearned": metric dicts, "unlearn": trainer record,
    "config": ...} and writes results.json (+ results.png) to out_dir."""
    from pyunlearn.data.tofu import QADataset
    from pyunlearn.eval.llm import evaluate_tofu
    from pyunlearn.unlearn.llm.trainer import UnlearnConfig, unlearn_llm
    from pyunlearn.unlearn.llm.wagle import wagle_masks, wagle_scores

    demo = DemoConfig() if demo is None else demo
    loss = method_loss(method) if loss is None else loss
    config = UnlearnConfig(lr=1e-3, epochs=10, progress=progress) if config is None else config
    out = Path(out_dir)
    corpus, tok, original, reference = prepare_models(demo, forget_split, out, progress=progress, log=log)
    retain = retain_split_for(forget_split)

    ev = {"truth_ratio_form": truth_ratio_form}
    t0 = time.perf_counter()
    res_ref = evaluate_tofu(reference, tok, corpus, forget_split, **ev)
    res_ref = evaluate_tofu(reference, tok, corpus, forget_split, reference=res_ref, **ev)  # FQ 1, PrivLeak 0
    res_orig = evaluate_tofu(original, tok, corpus, forget_split, reference=res_ref, **ev)
    log(f"evaluated original and retrain in {time.perf_counter() - t0:.1f} s")

    model = copy.deepcopy(original)
    forget_ds = forget_dataset(corpus, tok, forget_split, method)
    retain_ds = QADataset(corpus.split(retain), tok, max_length=128)
    masks, mask_info = None, None
    if wagle_ratio is not None:
        t0 = time.perf_counter()
        # WAGLE scores with the forget *answers* (not refusals) and batch size 1 (§2.6)
        f_scores = forget_dataset(corpus, tok, forget_split, "ga")
        scores = wagle_scores(model, f_scores, retain_ds, gamma=wagle_gamma, seed=config.seed, progress=progress)
        masks = wagle_masks(scores, wagle_ratio)
        n_on = sum(int(m.sum()) for m in masks.values())
        n_all = sum(m.numel() for m in masks.values())
        mask_info = {"ratio": wagle_ratio, "gamma": wagle_gamma, "selected": n_on, "total": n_all,
                     "seconds": time.perf_counter() - t0}
        log(f"WAGLE mask: {n_on}/{n_all} weights may move (ratio {wagle_ratio})")
    record = unlearn_llm(model, forget_ds, retain_ds, loss=loss, config=config, masks=masks,
                         ref_model=copy.deepcopy(original) if loss.needs_reference else None,
                         out_dir=out / _run_name(method, forget_split, loss, config, mask_info))
    log(f"unlearned ({method}, {config.optimizer}): {record['steps']} steps in {record['wall_s']:.1f} s")
    res_unl = evaluate_tofu(model, tok, corpus, forget_split, reference=res_ref, **ev)
    record.pop("log")
    results = {"method": method, "forget_split": forget_split, "optimizer": config.optimizer,
               "truth_ratio_form": truth_ratio_form, "demo": asdict(demo), "unlearn": record, "wagle": mask_info,
               "original": res_orig, "retrain": res_ref, "unlearned": res_unl}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    try:
        plot(results, out / "results.png")
    except ImportError:  # matplotlib is optional
        pass
    return results


def _run_name(method: str, forget_split: str, loss: UnlearnLoss, config: Any, mask_info: dict | None) -> str:
    """run_<method>_<split>_<optimizer>_<hash of every setting>: the same settings resume (or reuse) their
    checkpoint, different ones get their own folder."""
    import hashlib

    cfg = {k: v for k, v in asdict(config).items() if k not in ("progress", "checkpoint_every")}
    wagle = None if mask_info is None else (mask_info["ratio"], mask_info["gamma"])
    key = json.dumps([asdict(loss), cfg, wagle], sort_keys=True, default=str)
    return f"run_{method}_{forget_split}_{config.optimizer}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def table(results: dict) -> str:
    """Plain-text table: one row per model (original, retrain, unlearned), one column per metric."""
    heads = ["model"] + [h for _, h in TABLE]
    rows = [heads]
    for name in ("original", "retrain", "unlearned"):
        r = results[name]
        cells = [name]
        for key, _ in TABLE:
            v = r.get(key)
            cells.append("-" if v is None else (f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}")
                         if key != "privleak" else f"{v:.1f}")
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(heads))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def plot(results: dict, path: str | Path) -> None:
    """Grouped bars of the [0, 1] metrics for original / retrain / unlearned (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [(k, h) for k, h in TABLE if k != "privleak"]
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    names = ("original", "retrain", "unlearned")
    colors = {"original": "#C44E52", "retrain": "#55A868", "unlearned": "#4C72B0"}
    for i, name in enumerate(names):
        vals = [results[name].get(k) or 0.0 for k, _ in keys]
        ax.bar([j + (i - 1) * 0.27 for j in range(len(keys))], vals, 0.25, label=name, color=colors[name])
    ax.set_xticks(range(len(keys)), [h for _, h in keys], fontsize=8)
    ax.set_ylim(0, 1.22)
    ax.legend(fontsize=8, ncols=3, loc="upper center")
    wagle = "" if not results.get("wagle") else f", WAGLE {results['wagle']['ratio']}"
    ax.set_title(f"{results['method']} ({results['optimizer']}{wagle}) on {results['forget_split']}", fontsize=10)
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------------------------ CLI
def add_cli(subparsers) -> None:
    """Add `pyunlearn llm` to an argparse subparsers object."""
    p = subparsers.add_parser("llm", help="LLM unlearning on the TOFU-like corpus: fine-tune, unlearn, evaluate "
                              "(forget quality, model utility, VerbMem/KnowMem/PrivLeak)")
    p.add_argument("--method", default="simnpo", choices=sorted(METHODS))
    p.add_argument("--forget", default="forget05", choices=("forget01", "forget05", "forget10"))
    p.add_argument("--optimizer", default="adamw", choices=("adamw", "sophia", "sgd"),
                   help="sophia = SOUL (§2.5) (default %(default)s)")
    p.add_argument("--sophia-hessian", default="sqgrad", choices=("sqgrad", "gnb"),
                   help="sqgrad: SOUL's code, h from the step's g² every step; gnb: SophiaG's sampled-label "
                   "Gauss-Newton-Bartlett estimate every --hessian-every steps (default %(default)s)")
    p.add_argument("--hessian-every", type=int, default=10, help="gnb refresh period k (default %(default)s)")
    p.add_argument("--wagle", type=float, default=None, metavar="RATIO",
                   help="update only the top RATIO fraction of weights by WAGLE score (§2.6), e.g. 0.8")
    p.add_argument("--wagle-gamma", type=float, default=1e-6, help="WAGLE γ (`mu`; default %(default)s)")
    p.add_argument("--epochs", type=float, default=10.0, help="passes over the forget set (default %(default)s)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3, help="default %(default)s (tiny model; 1e-5 for a 7B)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--checkpoint-every", type=int, default=0, help="optimizer steps between checkpoints in the "
                   "run folder (default: only the final one); rerunning the same command resumes")
    p.add_argument("--weight-decay", type=float, default=None, help="default 0.01 (adamw/sgd), 0.1 (sophia)")
    p.add_argument("--retain-loss", default=None, choices=("none", "nll", "kl"), help="override the method's")
    p.add_argument("--beta", type=float, default=None, help="NPO / SimNPO β")
    p.add_argument("--forget-weight", type=float, default=None, help="c_f")
    p.add_argument("--retain-weight", type=float, default=None, help="λ")
    p.add_argument("--margin", type=float, default=None, help="SimNPO γ (enters as β·γ)")
    p.add_argument("--truth-ratio", default="answer", choices=("answer", "tofu"),
                   help="truth-ratio form for FQ / utility (default %(default)s; see docs/llm_unlearning.md)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on CPU too (always on for CUDA with bf16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finetune-epochs", type=int, default=60)
    p.add_argument("--n-authors", type=int, default=40)
    p.add_argument("--qa-per-author", type=int, default=10)
    p.add_argument("--model", default=None, help="a causal LM saved on disk (save_pretrained folder) to start from")
    p.add_argument("--tokenizer", default=None, help="its tokenizer folder (default: --model)")
    p.add_argument("--pad-token", default=None, choices=("eos",),
                   help="for a tokenizer without a pad token: pad with EOS")
    p.add_argument("--out", default="pyunlearn_llm", help="cache and results folder (default %(default)s)")
    p.add_argument("--strategy", default="none", choices=("none", "ddp", "fsdp2"),
                   help="multi-process unlearning under torchrun (docs/distributed.md): ddp replicates, fsdp2 "
                   "shards parameters / optimizer state / masks / reference (default %(default)s: one process)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_llm)


def cmd_llm(args: argparse.Namespace) -> int:
    from pyunlearn.unlearn.llm.trainer import UnlearnConfig

    try:
        loss = method_loss(args.method, retain_loss=args.retain_loss, beta=args.beta,
                           forget_weight=args.forget_weight, retain_weight=args.retain_weight, margin=args.margin)
        config = UnlearnConfig(optimizer=args.optimizer, lr=args.lr, epochs=args.epochs, max_steps=args.max_steps,
                               batch_size=args.batch_size, grad_accum=args.grad_accum,
                               weight_decay=args.weight_decay, seed=args.seed, bf16=True if args.bf16 else None,
                               checkpoint_every=args.checkpoint_every, sophia_hessian=args.sophia_hessian,
                               hessian_every=args.hessian_every,
                               progress=not args.no_progress)
        if args.wagle is not None and not 0 < args.wagle <= 1:
            raise ValueError(f"--wagle must be a fraction in (0, 1], got {args.wagle}")
        if args.tokenizer is not None and args.model is None:
            raise ValueError("--tokenizer needs --model (the tiny model uses the corpus tokenizer)")
        demo = DemoConfig(seed=args.seed, n_authors=args.n_authors, qa_per_author=args.qa_per_author,
                          finetune_epochs=args.finetune_epochs, model_path=args.model, tokenizer_path=args.tokenizer,
                          pad_token=args.pad_token)
    except (ValueError, TypeError) as e:
        print(f"pyunlearn llm: {e}", file=sys.stderr)
        return 2
    strategy = getattr(args, "strategy", "none")
    if strategy != "none":
        return _cmd_llm_distributed(args, strategy, demo, loss, config)
    try:
        results = run_llm(args.method, args.forget, out_dir=args.out, demo=demo, loss=loss, config=config,
                          wagle_ratio=args.wagle, wagle_gamma=args.wagle_gamma, truth_ratio_form=args.truth_ratio,
                          progress=not args.no_progress)
    except (ValueError, OSError) as e:
        print(f"pyunlearn llm: {e}", file=sys.stderr)
        return 2
    print()
    print(table(results))
    print(f"\nwritten: {args.out}/results.json, {args.out}/results.png")
    return 0


def _cmd_llm_distributed(args: argparse.Namespace, strategy: str, demo: DemoConfig, loss: UnlearnLoss,
                         config: Any) -> int:
    """`pyunlearn llm --strategy ddp|fsdp2` under torchrun: every rank unlearns, rank 0 prints the table."""
    import torch.distributed as dist

    from pyunlearn.distributed.llm import init_distributed
    from pyunlearn.distributed.pipeline import run_llm_distributed

    try:
        if args.sophia_hessian == "gnb":
            raise ValueError("--sophia-hessian gnb is not supported with --strategy (use sqgrad)")
        device = init_distributed()
    except (ValueError, RuntimeError) as e:
        print(f"pyunlearn llm: {e}", file=sys.stderr)
        return 2
    try:
        results = run_llm_distributed(args.method, args.forget, strategy=strategy, out_dir=args.out, demo=demo,
                                      loss=loss, config=config, wagle_ratio=args.wagle,
                                      wagle_gamma=args.wagle_gamma, truth_ratio_form=args.truth_ratio,
                                      progress=not args.no_progress, device=device)
    except (ValueError, OSError) as e:
        print(f"pyunlearn llm (rank {dist.get_rank()}): {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if results is not None:
        print()
        print(table(results))
        print(f"\nwritten: {args.out}/results.json, {args.out}/results.png ({strategy} x {results['world_size']})")
    return 0
