"""A tiny Llama for offline LLM-unlearning tests and demos (spec §6.1), its seeded fine-tune loop and greedy
answering.

    model = tiny_llama(tok, seed=0)                           # ~100k parameters, built from LlamaConfig, no download
    record = finetune(model, QADataset(rows, tok), epochs=40, lr=3e-3, batch_size=16, seed=0)
    preds = greedy_answers(model, tok, [r["question"] for r in rows])
"""

from __future__ import annotations

import torch

from pyunlearn.data.tofu import format_prompt

__all__ = ["finetune", "greedy_answers", "tiny_llama"]


def tiny_llama(tokenizer, *, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0,
               max_positions: int = 256):
    """LlamaForCausalLM from a LlamaConfig sized to the tokenizer; initialised under `torch.manual_seed(seed)` in a
    forked RNG, so the result depends only on the arguments and the global RNG is left untouched."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model.eval()


def finetune(model, dataset, *, epochs: int, lr: float, batch_size: int = 16, seed: int = 0,
             weight_decay: float = 0.0, max_grad_norm: float = 1.0, progress: bool = True) -> dict:
    """Plain AdamW fine-tune on the HF token-mean loss (ℓ_HF, answer tokens only), constant LR, grad-norm clip.

    Shuffling uses its own torch.Generator(seed), so the same model/dataset/seed gives the same weights. Returns
    {"epoch_loss": [mean ℓ_HF per epoch], "steps": optimizer steps}; the model is left in eval mode."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen,
                                         collate_fn=dataset.collate)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.config.use_cache = False
    model.train()
    epoch_loss, steps = [], 0
    bar = tqdm(range(epochs), desc="finetune", disable=not progress)
    for _ in bar:
        total, n = 0.0, 0
        for batch in loader:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            total += out.loss.item()
            n += 1
            steps += 1
        epoch_loss.append(total / max(n, 1))
        bar.set_postfix(loss=f"{epoch_loss[-1]:.4f}")
    model.config.use_cache = True
    model.eval()
    return {"epoch_loss": epoch_loss, "steps": steps}


@torch.no_grad()
def greedy_answers(model, tokenizer, questions: list[str], *, max_new_tokens: int = 48,
                   batch_size: int = 32) -> list[str]:
    """Greedy (do_sample=False) answers to the QA prompt template, left-padded batches, cut at EOS, stripped."""
    out = []
    for start in range(0, len(questions), batch_size):
        prompts = [tokenizer(format_prompt(q))["input_ids"] for q in questions[start:start + batch_size]]
        T = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), T), tokenizer.pad_token_id, dtype=torch.long)  # [B, T]
        mask = torch.zeros((len(prompts), T), dtype=torch.long)  # [B, T]
        for b, p in enumerate(prompts):
            ids[b, T - len(p):] = torch.tensor(p)
            mask[b, T - len(p):] = 1
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        out.extend(s.strip() for s in tokenizer.batch_decode(gen[:, T:], skip_special_tokens=True))
    return out
