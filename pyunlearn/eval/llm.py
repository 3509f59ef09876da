"""LLM unlearning metrics (spec llm_mu.md §3.1 TOFU, §3.2 MUSE) as pure functions plus thin model helpers.

Model helpers work on tokenizer-free batches ``(input_ids [N, T], labels [N, T], attention_mask?)`` with
``-100`` labels on question / padding tokens; the metric functions take plain arrays / lists.

TOFU: `truth_ratio`, `tofu_probability`, `truth_ratio_forget_score`, `truth_ratio_utility_score`,
`forget_quality` (KS p-value), `rouge_l_recall`, `model_utility` (harmonic mean of 9 values).
MUSE: `verbmem`, `knowmem` (ROUGE-L F1), `min_k_percent_scores`, `mia_auc`, `privleak`.
Over a model and a TOFU-like corpus: `qa_logprobs`, `qa_answer_token_logprobs`, `evaluate_tofu` (all of the above).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyunlearn.unlearn.llm.losses import IGNORE_INDEX, sequence_logprob

__all__ = [
    "KNOWMEM_STOP",
    "MUSE_RETRAIN_AUC",
    "TRUTH_RATIO_FORMS",
    "answer_logprob",
    "evaluate_tofu",
    "forget_quality",
    "generate_answers",
    "knowmem",
    "mia_auc",
    "min_k_percent_scores",
    "model_utility",
    "privleak",
    "qa_answer_token_logprobs",
    "qa_logprobs",
    "rouge_l_f1",
    "rouge_l_recall",
    "tofu_probability",
    "token_logprobs",
    "truncate_knowmem_answer",
    "truth_ratio",
    "truth_ratio_forget_score",
    "truth_ratio_utility_score",
    "verbmem",
]

# §3.2: retrain-model Min-40% AUC (`forget_holdout_Min-40%`), MUSE orientation.
MUSE_RETRAIN_AUC = {"news": 0.4772, "books": 0.5393}
# §3.2 KnowMem: cut the generated answer at the first of these.
KNOWMEM_STOP = ("\n\n", "\nQuestion", "Question:")


def _np1d(x: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite values")
    return a


def _check_texts(xs: Sequence[str], name: str) -> list[str]:
    if isinstance(xs, str):
        raise TypeError(f"{name} must be a sequence of strings, not a single string")
    xs = list(xs)
    if not all(isinstance(s, str) for s in xs):
        raise TypeError(f"{name} must contain only strings")
    return xs


# ----------------------------------------------------------------------------------------------- model passes
def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def answer_logprob(model: torch.nn.Module, input_ids: Tensor, labels: Tensor, attention_mask: Tensor | None = None,
                   *, mean: bool = True, batch_size: int = 16) -> Tensor:
    """log π(y|x) of the answer tokens (labels ≠ −100) per row, [N] float32 on CPU, model in eval mode.
    mean=True gives −ℓ̄ (the log of TOFU's p̄, §3.1); mean=False gives −ℓ (sum)."""
    if input_ids.dim() != 2 or input_ids.shape != labels.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and labels {tuple(labels.shape)} must both be [N, T]")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}")
    if input_ids.shape[0] == 0:
        raise ValueError("input_ids is empty (N = 0)")
    was_training, dev = model.training, _device(model)
    model.eval()
    out = []
    try:
        for s in range(0, input_ids.shape[0], batch_size):
            ids, lab = input_ids[s:s + batch_size].to(dev), labels[s:s + batch_size].to(dev)
            am = None if attention_mask is None else attention_mask[s:s + batch_size].to(dev)
            logits = model(input_ids=ids, attention_mask=am).logits
            out.append(sequence_logprob(logits, lab, mean=mean).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def token_logprobs(model: torch.nn.Module, input_ids: Tensor, labels: Tensor | None = None,
                   attention_mask: Tensor | None = None, *, batch_size: int = 16) -> list[Tensor]:
    """Per-token log p of each row's supervised tokens after the shift (list of 1-D CPU tensors), for Min-K%.
    labels=None means labels = input_ids with padding (attention_mask 0) ignored — MUSE raw text (§3.2)."""
    if labels is None:
        labels = input_ids.clone()
        if attention_mask is not None:
            labels[attention_mask == 0] = IGNORE_INDEX
    if input_ids.dim() != 2 or input_ids.shape != labels.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and labels {tuple(labels.shape)} must both be [N, T]")
    was_training, dev = model.training, _device(model)
    model.eval()
    rows: list[Tensor] = []
    try:
        for s in range(0, input_ids.shape[0], batch_size):
            ids, lab = input_ids[s:s + batch_size].to(dev), labels[s:s + batch_size].to(dev)
            am = None if attention_mask is None else attention_mask[s:s + batch_size].to(dev)
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=am).logits[:, :-1].float(), -1)
            tgt = lab[:, 1:]
            mask = tgt != IGNORE_INDEX
            lp = logp.gather(-1, tgt.clamp_min(0).long().unsqueeze(-1)).squeeze(-1)  # [b, T-1]
            rows.extend(lp[i][mask[i]].cpu() for i in range(lp.shape[0]))
    finally:
        model.train(was_training)
    return rows


@torch.no_grad()
def generate_answers(model: torch.nn.Module, tokenizer: Any, questions: Sequence[str], max_new_tokens: int = 200,
                     *, batch_size: int = 8) -> list[str]:
    """Greedy (do_sample=False, §5 G6) continuations of each prompt through HF `generate`; returns only the new
    text, special tokens skipped. Prompts are left-padded so every row's continuation starts at the same column."""
    questions = _check_texts(questions, "questions")
    if not questions:
        raise ValueError("questions is empty")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    old_side, old_pad = getattr(tokenizer, "padding_side", "right"), tokenizer.pad_token
    if old_pad is None:  # Llama has no pad token (§5 G4); pad the prompts with EOS, attention_mask hides them
        tokenizer.pad_token = tokenizer.eos_token
    pad_id = tokenizer.pad_token_id
    was_training, dev = model.training, _device(model)
    model.eval()
    tokenizer.padding_side = "left"
    answers: list[str] = []
    try:
        for s in range(0, len(questions), batch_size):
            enc = tokenizer(questions[s:s + batch_size], return_tensors="pt", padding=True)
            ids, am = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
            out = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad_id)
            answers.extend(tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
        if old_pad is None:
            tokenizer.pad_token = None
        model.train(was_training)
    return [a.strip() for a in answers]


# ----------------------------------------------------------------------------------------------- TOFU (§3.1)
def truth_ratio(base_logp_mean: Any, perturbed_logp_mean: Any) -> np.ndarray:
    """TR_i = [Π_j p̄(ã_j|q)]^{1/J} / p̄(â|q) = exp((1/J)Σ_j log p̄(ã_j) − log p̄(â)) (§3.1), in log space.

    base_logp_mean [N]: length-normalised log-prob of â (paraphrased answer for forget/retain; the answer for real
    authors / world facts); perturbed_logp_mean [N, J]: the same for the J perturbed answers. TR < 1 = prefers truth.
    (Not SOUL/WAGLE's arithmetic mean.)"""
    base = _np1d(base_logp_mean, "base_logp_mean")
    pert = perturbed_logp_mean.detach().cpu().double().numpy() if isinstance(perturbed_logp_mean, Tensor) \
        else np.asarray(perturbed_logp_mean, dtype=np.float64)
    if pert.ndim != 2 or pert.shape[0] != base.shape[0] or pert.shape[1] == 0:
        raise ValueError(f"perturbed_logp_mean must be [N, J] with N = {base.shape[0]} and J >= 1, got {pert.shape}")
    if not np.all(np.isfinite(pert)):
        raise ValueError("perturbed_logp_mean has non-finite values")
    return np.exp(pert.mean(axis=1) - base)


def truth_ratio_forget_score(tr: Any) -> float:
    """Reported forget truth ratio (§3.1): mean_i min(TR_i, 1/TR_i) ∈ (0, 1]."""
    t = _np1d(tr, "tr")
    if np.any(t <= 0):
        raise ValueError("tr must be > 0")
    return float(np.minimum(t, 1.0 / t).mean())


def truth_ratio_utility_score(tr: Any) -> float:
    """Truth-ratio score on utility sets (§3.1): T = mean_i max(0, 1 − TR_i)."""
    return float(np.maximum(0.0, 1.0 - _np1d(tr, "tr")).mean())


def tofu_probability(answer_logp_mean: Any, perturbed_logp_mean: Any | None = None) -> np.ndarray:
    """Per-item TOFU probability (§3.1). forget/retain (perturbed=None): P_i = p̄(a|q).
    real authors / world facts: P_i = p̄(a) / (p̄(a) + Σ_j p̄(ã_j)), with length-normalised p̄ (issue #26)."""
    a = _np1d(answer_logp_mean, "answer_logp_mean")
    if perturbed_logp_mean is None:
        return np.exp(a)
    pert = perturbed_logp_mean.detach().cpu().double().numpy() if isinstance(perturbed_logp_mean, Tensor) \
        else np.asarray(perturbed_logp_mean, dtype=np.float64)
    if pert.ndim != 2 or pert.shape[0] != a.shape[0] or pert.shape[1] == 0:
        raise ValueError(f"perturbed_logp_mean must be [N, J] with N = {a.shape[0]} and J >= 1, got {pert.shape}")
    # softmax over [a, ã_1..ã_J] in log space = p̄(a)/(p̄(a)+Σ p̄(ã_j)) without underflow
    allp = np.concatenate([a[:, None], pert], axis=1)
    m = allp.max(axis=1, keepdims=True)
    return np.exp(a - (m[:, 0] + np.log(np.exp(allp - m).sum(axis=1))))


def forget_quality(truth_ratios_model: Any, truth_ratios_reference: Any) -> float:
    """FQ (§3.1): p-value of the two-sided two-sample KS test (`scipy.stats.ks_2samp`) between the unlearned model's
    forget-set truth ratios and the retain (reference) model's on the same items. FQ(reference vs itself) = 1."""
    from scipy.stats import ks_2samp

    a = _np1d(truth_ratios_model, "truth_ratios_model")
    b = _np1d(truth_ratios_reference, "truth_ratios_reference")
    return float(ks_2samp(a, b).pvalue)


def _rouge_l(predictions: Sequence[str], references: Sequence[str], field: str, use_stemmer: bool) -> np.ndarray:
    from rouge_score import rouge_scorer

    preds = _check_texts(predictions, "predictions")
    refs = _check_texts(references, "references")
    if len(preds) != len(refs):
        raise ValueError(f"predictions ({len(preds)}) and references ({len(refs)}) must have the same length")
    if not refs:
        raise ValueError("references is empty")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    # rouge_score's signature is score(target, prediction)
    return np.array([getattr(scorer.score(r, p)["rougeL"], field) for p, r in zip(preds, refs)], dtype=np.float64)


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = True) -> np.ndarray:
    """TOFU ROUGE (§3.1): per-item ROUGE-L **recall** (`rouge_score`, use_stemmer=True) of prediction vs reference."""
    return _rouge_l(predictions, references, "recall", use_stemmer)


def rouge_l_f1(predictions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = False) -> np.ndarray:
    """MUSE ROUGE (§3.2): per-item ROUGE-L F1 (use_stemmer=False)."""
    return _rouge_l(predictions, references, "fmeasure", use_stemmer)


def model_utility(values: Mapping[str, float] | Iterable[float]) -> float:
    """MU (§3.1) = harmonic mean of {P, R, T} × {retain, real_authors, world_facts} (9 values; any count accepted):
    HM = n / Σ 1/v_k, defined as 0 when any v_k = 0 (guarded explicitly; older `scipy.stats.hmean` raises)."""
    vals = list(values.values()) if isinstance(values, Mapping) else list(values)
    v = _np1d(vals, "values")
    if np.any(v < 0):
        raise ValueError(f"values must be >= 0, got {v.tolist()}")
    if np.any(v == 0):
        return 0.0
    return float(v.size / np.sum(1.0 / v))


# ----------------------------------------------------------------------------------------------- MUSE (§3.2)
def verbmem(predictions: Sequence[str], references: Sequence[str]) -> float:
    """VerbMem_f (§3.2): mean ROUGE-L F1 between greedy continuations and the gt continuations (the caller truncates
    gt to its first 128 tokens and generates with max_new_tokens=128). A fraction; MUSE tables show ×100."""
    return float(rouge_l_f1(predictions, references).mean())


def truncate_knowmem_answer(text: str) -> str:
    """Cut a KnowMem generation at the first of "\\n\\n", "\\nQuestion", "Question:" (§3.2)."""
    cut = min((i for i in (text.find(s) for s in KNOWMEM_STOP) if i >= 0), default=len(text))
    return text[:cut].strip()


def knowmem(predictions: Sequence[str], references: Sequence[str]) -> float:
    """KnowMem_f / KnowMem_r (§3.2): mean ROUGE-L F1 between truncated greedy answers and the reference answers."""
    preds = [truncate_knowmem_answer(p) for p in _check_texts(predictions, "predictions")]
    return float(rouge_l_f1(preds, references).mean())


def min_k_percent_scores(logprobs: Sequence[Any] | Tensor, k: float = 0.4, mask: Tensor | None = None) -> np.ndarray:
    """Min-K% Prob score (§3.2): s(x) = −mean of the lowest ⌊k·n⌋ token log-probs of x (at least one token, where
    upstream would average an empty slice to NaN). Higher s = less likely = more non-member-like.

    logprobs: a list of 1-D per-row log-probs (e.g. `token_logprobs`), or a [N, T] tensor with a bool mask [N, T]."""
    if not (isinstance(k, Real) and 0 < k <= 1):
        raise ValueError(f"k must be in (0, 1], got {k!r}")
    if isinstance(logprobs, Tensor) and logprobs.dim() == 2:
        if mask is not None and mask.shape != logprobs.shape:
            raise ValueError(f"mask {tuple(mask.shape)} must match logprobs {tuple(logprobs.shape)}")
        rows = [logprobs[i] if mask is None else logprobs[i][mask[i].bool()] for i in range(logprobs.shape[0])]
    else:
        if mask is not None:
            raise ValueError("mask is only accepted with a [N, T] logprobs tensor")
        rows = list(logprobs)
    if not rows:
        raise ValueError("logprobs is empty")
    out = np.empty(len(rows))
    for i, r in enumerate(rows):
        x = _np1d(r, f"logprobs[{i}]")
        n = max(1, int(x.size * k))
        out[i] = -np.sort(x)[:n].mean()
    return out


def mia_auc(scores_forget: Any, scores_holdout: Any) -> float:
    """MUSE-orientation Min-K% AUC (§3.2): roc_auc with forget labelled 0 and holdout labelled 1, scored by −s.
    Equals 1 − AUC_std(forget = member): ≈ 0 for a model that memorises forget, ≈ 0.5 for a retrained one."""
    from sklearn.metrics import roc_auc_score

    f = _np1d(scores_forget, "scores_forget")
    h = _np1d(scores_holdout, "scores_holdout")
    y = np.concatenate([np.zeros(f.size), np.ones(h.size)])
    return float(roc_auc_score(y, -np.concatenate([f, h])))


def privleak(auc_model: float, auc_retrain: float) -> float:
    """PrivLeak (§3.2) = (AUC(f_unl) − AUC(f_retrain)) / AUC(f_retrain) × 100, MUSE-orientation AUCs (`mia_auc`).
    ≈ 0 ideal; ≪ 0 under-unlearned (→ −100 when forget is memorised); ≫ 0 over-unlearned. Retrain constants:
    `MUSE_RETRAIN_AUC` (News 0.4772, Books 0.5393)."""
    for name, v in (("auc_model", auc_model), ("auc_retrain", auc_retrain)):
        if not isinstance(v, Real) or not math.isfinite(v) or not 0 <= v <= 1:
            raise ValueError(f"{name} must be an AUC in [0, 1], got {v!r}")
    if auc_retrain == 0:
        raise ValueError("auc_retrain must be > 0 (it is the denominator)")
    return float((auc_model - auc_retrain) / auc_retrain * 100.0)


# ----------------------------------------------------------------------------------------------- a model on a corpus
TRUTH_RATIO_FORMS = ("tofu", "answer")
UTILITY_SPLITS = ("retain", "real_authors", "world_facts")


def _require_pad(tokenizer: Any) -> None:
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise ValueError("tokenizer has no pad token (Llama tokenizers ship without one, spec §5 G4); set one "
                         "explicitly, e.g. tokenizer.pad_token = tokenizer.eos_token (TOFU's choice; masks are "
                         "built from lengths, never from ids == pad)")


@torch.no_grad()
def qa_logprobs(model: torch.nn.Module, tokenizer: Any, questions: Sequence[str], answers: Sequence[str], *,
                mean: bool = True, max_length: int = 128, batch_size: int = 16) -> Tensor:
    """log π(answer | prompt(question)) per pair under the QA template of `pyunlearn.data.tofu` (answer tokens + EOS
    supervised), [N] float32; mean=True gives log p̄ (TOFU, §3.1)."""
    from pyunlearn.data.tofu import collate_qa, encode_qa

    questions, answers = _check_texts(questions, "questions"), _check_texts(answers, "answers")
    if len(questions) != len(answers):
        raise ValueError(f"questions ({len(questions)}) and answers ({len(answers)}) must have the same length")
    if not questions:
        raise ValueError("questions is empty")
    _require_pad(tokenizer)
    items = [encode_qa(tokenizer, q, a, max_length) for q, a in zip(questions, answers)]
    out = []
    for s in range(0, len(items), batch_size):  # collate per chunk: padding to the chunk's longest row only
        b = collate_qa(items[s:s + batch_size], tokenizer.pad_token_id)
        out.append(answer_logprob(model, b["input_ids"], b["labels"], b["attention_mask"], mean=mean,
                                  batch_size=batch_size))
    return torch.cat(out)


@torch.no_grad()
def qa_answer_token_logprobs(model: torch.nn.Module, tokenizer: Any, rows: Sequence[Mapping[str, Any]], *,
                             max_length: int = 128, batch_size: int = 16) -> list[Tensor]:
    """Per-token log p of each row's answer tokens (QA template), for Min-K% membership scores."""
    from pyunlearn.data.tofu import collate_qa, encode_qa

    _require_pad(tokenizer)
    items = [encode_qa(tokenizer, r["question"], r["answer"], max_length) for r in rows]
    out: list[Tensor] = []
    for s in range(0, len(items), batch_size):
        b = collate_qa(items[s:s + batch_size], tokenizer.pad_token_id)
        out.extend(token_logprobs(model, b["input_ids"], b["labels"], b["attention_mask"], batch_size=batch_size))
    return out


def _truth_ratio_rows(model, tokenizer, rows, form: str, batch_size: int) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray]:
    """(TR [N], log p̄(answer) [N], log p̄(perturbed) [N, J]) for TOFU rows. Author rows: form "tofu" compares the
    paraphrased answer with `perturbed_answers` (§3.1); form "answer" compares the trained answer with
    `perturbed_original_answers`. Rows without a paraphrase split (background) always use answer vs perturbed."""
    qs = [r["question"] for r in rows]
    ans = qa_logprobs(model, tokenizer, qs, [r["answer"] for r in rows], batch_size=batch_size).numpy()
    author = all("perturbed_original_answers" in r for r in rows)
    if author and form == "answer":
        base, pert_key = ans, "perturbed_original_answers"
    else:
        base_key = "paraphrased_answer" if author else "answer"
        base = ans if base_key == "answer" else qa_logprobs(
            model, tokenizer, qs, [r[base_key] for r in rows], batch_size=batch_size).numpy()
        pert_key = "perturbed_answers"
    J = len(rows[0][pert_key])
    if any(len(r[pert_key]) != J for r in rows):
        raise ValueError(f"every row must have the same number of {pert_key}")
    flat_q = [r["question"] for r in rows for _ in range(J)]
    flat_a = [a for r in rows for a in r[pert_key]]
    pert = qa_logprobs(model, tokenizer, flat_q, flat_a, batch_size=batch_size).numpy().reshape(len(rows), J)
    return truth_ratio(base, pert), ans, pert


def _verbmem_prompts(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """MUSE VerbMem on QA rows: the prompt plus the first half of the answer's words; the gt is the rest."""
    from pyunlearn.data.tofu import format_prompt

    prompts, gts = [], []
    for r in rows:
        words = r["answer"].split()
        cut = max(1, len(words) // 2)
        prompts.append(format_prompt(r["question"]) + " " + " ".join(words[:cut]))
        gts.append(" ".join(words[cut:]) or words[-1])
    return prompts, gts


def evaluate_tofu(model: torch.nn.Module, tokenizer: Any, corpus: Any, forget_split: str = "forget05", *,
                  reference_model: torch.nn.Module | None = None, reference: Mapping[str, Any] | None = None,
                  retain_split: str = "retain_perturbed", holdout_split: str = "holdout",
                  truth_ratio_form: str = "tofu", max_new_tokens: int = 48, mink: float = 0.4,
                  batch_size: int = 16) -> dict[str, Any]:
    """TOFU (§3.1) and MUSE-style (§3.2) metrics of `model` on a TOFU-like corpus (`pyunlearn.data.tofu.TofuLike`,
    or anything with `.split(name) -> rows`).

    Forget quality = KS p-value between this model's forget-set truth ratios and the retain-only reference
    model's on the same items; PrivLeak = Min-K% AUC (forget vs holdout, MUSE orientation) relative to the
    reference's. The reference is `reference_model` (evaluated here) or `reference`, a previous result of this
    function for the reference model (its "forget_truth_ratios" and "mia_auc" are used). Without either, both are
    None.

    Model utility = harmonic mean of {probability, ROUGE-L recall, truth-ratio score} on the retain
    (`retain_split`), real-author and world-fact sets. Forget ROUGE / probability: greedy answers (HF generate)
    and p̄(a|q) on the forget split. VerbMem_f: ROUGE-L F1 of the continuation of the prompt + first half of each
    forget answer vs the second half; KnowMem_f / KnowMem_r: ROUGE-L F1 of the greedy answers on forget / retain
    (QA template, not MUSE's ICL prompt). Values are fractions.

    truth_ratio_form: "tofu" (paraphrased answer vs perturbed paraphrases, §3.1) or "answer" (trained answer vs
    the same wrong values in the trained template: `perturbed_original_answers`, sharper for a tiny model that
    never saw the paraphrase template, see docs/llm_data.md)."""
    from pyunlearn.data.tofu import format_prompt

    if truth_ratio_form not in TRUTH_RATIO_FORMS:
        raise ValueError(f"truth_ratio_form must be one of {TRUTH_RATIO_FORMS}, got {truth_ratio_form!r}")
    if reference_model is not None and reference is not None:
        raise ValueError("pass reference_model or reference (a previous evaluate_tofu result), not both")
    _require_pad(tokenizer)
    forget = list(corpus.split(forget_split))
    if not forget:
        raise ValueError(f"split {forget_split!r} is empty")
    sets = {"retain": list(corpus.split(retain_split)), "real_authors": list(corpus.split("real_authors")),
            "world_facts": list(corpus.split("world_facts"))}
    holdout = list(corpus.split(holdout_split))

    res: dict[str, Any] = {"forget_split": forget_split, "n_forget": len(forget), "truth_ratio_form": truth_ratio_form}
    # forget set: truth ratio, probability, generations (ROUGE recall and KnowMem F1 from the same answers)
    tr_f, logp_f, _ = _truth_ratio_rows(model, tokenizer, forget, truth_ratio_form, batch_size)
    gen_f = generate_answers(model, tokenizer, [format_prompt(r["question"]) for r in forget], max_new_tokens,
                             batch_size=batch_size)
    refs_f = [r["answer"] for r in forget]
    res["forget_truth_ratios"] = tr_f.tolist()
    res["forget_truth_ratio"] = truth_ratio_forget_score(tr_f)
    res["forget_probability"] = float(np.exp(logp_f).mean())
    res["forget_rouge"] = float(rouge_l_recall(gen_f, refs_f).mean())
    res["knowmem_f"] = knowmem(gen_f, refs_f)
    vp, vgt = _verbmem_prompts(forget)
    res["verbmem_f"] = verbmem(generate_answers(model, tokenizer, vp, max_new_tokens, batch_size=batch_size), vgt)

    # utility sets
    util: dict[str, float] = {}
    for name, rows in sets.items():
        if not rows:
            raise ValueError(f"utility split {name!r} is empty")
        tr, logp, pert = _truth_ratio_rows(model, tokenizer, rows, truth_ratio_form, batch_size)
        prob = tofu_probability(logp) if name == "retain" else tofu_probability(logp, pert)
        gen = generate_answers(model, tokenizer, [format_prompt(r["question"]) for r in rows], max_new_tokens,
                               batch_size=batch_size)
        refs = [r["answer"] for r in rows]
        util[f"{name}_probability"] = float(prob.mean())
        util[f"{name}_rouge"] = float(rouge_l_recall(gen, refs).mean())
        util[f"{name}_truth_ratio"] = truth_ratio_utility_score(tr)
        if name == "retain":
            res["knowmem_r"] = knowmem(gen, refs)
    res.update(util)
    res["model_utility"] = model_utility(util)

    # membership: Min-K% over answer tokens, forget (members) vs holdout (non-members)
    s_f = min_k_percent_scores(qa_answer_token_logprobs(model, tokenizer, forget, batch_size=batch_size), mink)
    s_h = min_k_percent_scores(qa_answer_token_logprobs(model, tokenizer, holdout, batch_size=batch_size), mink)
    res["mia_auc"] = mia_auc(s_f, s_h)

    if reference_model is not None:
        reference = evaluate_tofu(reference_model, tokenizer, corpus, forget_split, retain_split=retain_split,
                                  holdout_split=holdout_split, truth_ratio_form=truth_ratio_form,
                                  max_new_tokens=max_new_tokens, mink=mink, batch_size=batch_size)
    res["forget_quality"] = res["privleak"] = None
    if reference is not None:
        ref_tr = reference.get("forget_truth_ratios")
        if ref_tr is None or len(ref_tr) != len(tr_f):
            raise ValueError(f"reference must hold forget_truth_ratios for the same {len(tr_f)} forget items")
        if reference.get("truth_ratio_form", truth_ratio_form) != truth_ratio_form:
            raise ValueError(f"reference truth ratios use form {reference['truth_ratio_form']!r}, "
                             f"not {truth_ratio_form!r}")
        res["forget_quality"] = forget_quality(tr_f, ref_tr)
        if reference.get("mia_auc"):
            res["privleak"] = privleak(res["mia_auc"], float(reference["mia_auc"]))
    return res
