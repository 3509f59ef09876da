"""LLM unlearning losses (spec llm_mu.md §1.3, §2.1–2.4, §2.7) as pure functions over causal-LM logits.

Every function accepts either a logits tensor ``[B, T, V]`` or a HF ``CausalLMOutput`` (anything with a
``.logits`` attribute) plus ``labels [B, T]`` with ``-100`` on ignored (question / padding) positions.
The causal shift is applied here: ``logits[:, :-1]`` predicts ``labels[:, 1:]`` (§1.1 "Shift").

Reductions (§5 G1) are explicit and named:

* ``sequence_logprob(..., mean=False)`` = −ℓ, the per-sequence **sum** of log p over supervised tokens;
* ``sequence_logprob(..., mean=True)``  = −ℓ̄ = −ℓ/|y|, with |y| the number of *shifted* supervised tokens
  (upstream counts unshifted labels, which is off by one when labels[0] ≠ −100; §1.1 "|y| in code");
* ``token_mean_nll`` = ℓ_HF, supervised tokens pooled over the batch (§0).

Hyperparameter names avoid the ``gamma`` clash of §1.5: ``forget_weight`` (c_f), ``retain_weight`` (λ),
``npo_beta`` / ``simnpo_beta`` (β) and ``simnpo_margin`` (the SimNPO margin γ / OU ``delta``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from numbers import Real
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "REPO_CONFIG_NAMES",
    "UnlearnLoss",
    "ga_loss",
    "grad_diff_loss",
    "idk_loss",
    "npo_loss",
    "retain_kl",
    "retain_nll",
    "sequence_logprob",
    "simnpo_loss",
    "token_mean_nll",
]


# ----------------------------------------------------------------------------------------------- input checks
def _as_logits(x: Any, name: str) -> Tensor:
    logits = getattr(x, "logits", x)
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a Tensor [B, T, V] or an output with .logits, got {type(x).__name__}")
    if logits.dim() != 3:
        raise ValueError(f"{name} must have shape [B, T, V], got {tuple(logits.shape)}")
    if logits.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B = 0)")
    if logits.shape[1] < 2:
        raise ValueError(f"{name} needs T >= 2 for the causal shift, got T = {logits.shape[1]}")
    return logits


def _check_labels(labels: Tensor, logits: Tensor, name: str = "labels") -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a Tensor [B, T], got {type(labels).__name__}")
    if labels.dim() != 2 or tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"{name} must have shape {tuple(logits.shape[:2])} (= logits [B, T]), got {tuple(labels.shape)}"
        )
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be an integer tensor, got {labels.dtype}")
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= logits.shape[-1]))
    if bool(bad.any()):
        raise ValueError(f"{name} has ids outside [0, {logits.shape[-1]}) that are not {IGNORE_INDEX}")
    return labels


def _check_beta(beta: float, name: str) -> float:
    if not isinstance(beta, Real) or isinstance(beta, bool) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {beta!r}")
    return float(beta)


def _check_seq(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor [B], got {type(x).__name__}")
    if x.dim() != 1:
        raise ValueError(f"{name} must be a 1-D per-sequence tensor [B], got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (B = 0)")
    return x


def _shifted_token_logprobs(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token log p(label) after the causal shift. Returns (logp [B, T-1], mask [B, T-1]); masked logp = 0."""
    lg = logits[:, :-1].float()  # [B, T-1, V] fp32: log-softmax over a 32k vocab in bf16 loses ~3 digits
    tgt = labels[:, 1:]  # [B, T-1]
    mask = tgt != IGNORE_INDEX  # [B, T-1]
    logp = torch.log_softmax(lg, dim=-1).gather(-1, tgt.clamp_min(0).long().unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


# ----------------------------------------------------------------------------------------------- log-probs
def sequence_logprob(logits: Any, labels: Tensor, *, mean: bool = False) -> Tensor:
    """log π(y|x) per sequence, over non-masked label tokens with the causal shift (§0 ℓ, §1.1 Shift).

    mean=False: Σ_t log p(y_t | x, y_<t) = −ℓ.  mean=True: that sum / |y| = −ℓ̄ (|y| = shifted supervised count).
    Returns [B] float32. A row with no supervised tokens gives 0 (sum) and raises for mean=True."""
    lg = _as_logits(logits, "logits")
    _check_labels(labels, lg)
    logp, mask = _shifted_token_logprobs(lg, labels)
    total = logp.sum(-1)  # [B]
    if not mean:
        return total
    n = mask.sum(-1)  # [B]
    if bool((n == 0).any()):
        rows = torch.nonzero(n == 0).flatten().tolist()
        raise ValueError(f"labels: rows {rows} have no supervised (≠ {IGNORE_INDEX}) tokens after the shift; "
                         "a length-normalised log-prob is undefined")
    return total / n


def token_mean_nll(logits: Any, labels: Tensor) -> Tensor:
    """ℓ_HF (§0): CE summed over every supervised token of the batch / their total count (what HF `loss` is)."""
    lg = _as_logits(logits, "logits")
    _check_labels(labels, lg)
    logp, mask = _shifted_token_logprobs(lg, labels)
    n = mask.sum()
    if int(n) == 0:
        raise ValueError(f"labels: the batch has no supervised (≠ {IGNORE_INDEX}) tokens after the shift")
    return -logp.sum() / n


# ----------------------------------------------------------------------------------------------- forget losses
def ga_loss(logits: Any, labels: Tensor) -> Tensor:
    """Gradient ascent, §2.1: L_GA = −ℓ_HF(θ; B_f) (token mean over the answer tokens of the forget batch)."""
    return -token_mean_nll(logits, labels)


def npo_loss(policy_logp: Tensor, ref_logp: Tensor, *, beta: float) -> Tensor:
    """NPO, §2.3: L = (2/β)·E[log(1 + (π_θ/π_ref)^β)] = (2/β)·mean_b softplus(β·(log π_θ − log π_ref)).

    ``policy_logp`` / ``ref_logp`` [B] are **sequence-summed** log-probs (`sequence_logprob(mean=False)`, the
    TOFU/OU convention; pass mean=True values for the SOUL/WAGLE token-mean variant — β then differs, §2.3 (6)).
    Computed from log-probabilities, never raw logits (the MUSE-code bug, §2.3 (6)); ``ref_logp`` is detached.
    Equals (2/β)·ln 2 when the policy equals its reference; its gradient is −w·∇ℓ with w = 2σ(−βΔ)."""
    beta = _check_beta(beta, "beta")
    _check_seq(policy_logp, "policy_logp")
    _check_seq(ref_logp, "ref_logp")
    if policy_logp.shape != ref_logp.shape:
        raise ValueError(f"policy_logp {tuple(policy_logp.shape)} and ref_logp {tuple(ref_logp.shape)} must match")
    log_ratio = policy_logp.float() - ref_logp.detach().float()  # [B] = −Δ of §2.3
    return (2.0 / beta) * F.softplus(beta * log_ratio).mean()


def simnpo_loss(policy_logp_mean: Tensor, *, beta: float, margin: float = 0.0) -> Tensor:
    """SimNPO, §2.4 (code form, Unlearn-Simple TOFU / OU with δ ≡ margin):
    L_f = −(2/β)·mean_b log σ(β·(ℓ̄_b − γ)) = (2/β)·mean_b softplus(−β·(ℓ̄_b − γ)), ℓ̄_b = −policy_logp_mean_b.

    Reference-free and length-normalised: pass `sequence_logprob(..., mean=True)`. The margin enters as β·γ (the
    code convention; identical to the paper when γ = 0, the TOFU default)."""
    beta = _check_beta(beta, "beta")
    _check_seq(policy_logp_mean, "policy_logp_mean")
    if not isinstance(margin, Real) or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number, got {margin!r}")
    nll_mean = -policy_logp_mean.float()  # [B] ℓ̄
    return (2.0 / beta) * F.softplus(-beta * (nll_mean - float(margin))).mean()


def idk_loss(logits: Any, labels: Tensor) -> Tensor:
    """IDK / PO / "CL", §2.7: ordinary NLL (ℓ_HF) on forget questions paired with refusal answers (labels = refusal)."""
    return token_mean_nll(logits, labels)


# ----------------------------------------------------------------------------------------------- retain terms
def retain_nll(logits: Any, labels: Tensor) -> Tensor:
    """Retain NLL regulariser, §1.3: L_r = ℓ_HF on the retain micro-batch."""
    return token_mean_nll(logits, labels)


def retain_kl(policy_logits: Any, ref_logits: Any, labels: Tensor | None = None) -> Tensor:
    """Retain KL regulariser, §1.3: mean over positions of KL(p_ref(·|b,t) ‖ p_θ(·|b,t)).

    labels given: average over the positions that predict a supervised label (shifted, like the NLL).
    labels=None: the upstream form — no masking, average over all B·T positions (prompt and padding included).
    A true KL (not SOUL's cross-entropy H(p_θ, p_ref)); ``ref_logits`` is detached. 0 for identical models."""
    pl = _as_logits(policy_logits, "policy_logits")
    rl = _as_logits(ref_logits, "ref_logits")
    if pl.shape != rl.shape:
        raise ValueError(f"policy_logits {tuple(pl.shape)} and ref_logits {tuple(rl.shape)} must have the same shape")
    logp = torch.log_softmax(pl.float(), dim=-1)  # [B, T, V]
    logq = torch.log_softmax(rl.detach().float(), dim=-1)  # [B, T, V]
    kl = (logq.exp() * (logq - logp)).sum(-1)  # [B, T]
    if labels is None:
        return kl.mean()
    _check_labels(labels, pl)
    mask = labels[:, 1:] != IGNORE_INDEX  # [B, T-1]: position t predicts label t+1
    n = mask.sum()
    if int(n) == 0:
        raise ValueError(f"labels: the batch has no supervised (≠ {IGNORE_INDEX}) tokens after the shift")
    return (kl[:, :-1] * mask).sum() / n


def grad_diff_loss(forget: tuple[Any, Tensor], retain: tuple[Any, Tensor], *, retain_weight: float = 1.0,
                   forget_weight: float = 1.0) -> Tensor:
    """GradDiff, §2.2: L = c_f·(−ℓ_HF(θ; B_f)) + λ·ℓ_HF(θ; B_r). ``forget`` / ``retain`` are (logits, labels) pairs.
    For the KL variant combine `ga_loss` with `retain_kl` (or use `UnlearnLoss(retain_loss="kl")`)."""
    for name, pair in (("forget", forget), ("retain", retain)):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"{name} must be a (logits, labels) pair")
    _check_weight(retain_weight, "retain_weight")
    _check_weight(forget_weight, "forget_weight")
    return forget_weight * ga_loss(*forget) + retain_weight * retain_nll(*retain)


def _check_weight(w: float, name: str) -> float:
    if not isinstance(w, Real) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
    return float(w)


# ----------------------------------------------------------------------------------------------- combined config
ForgetLoss = Literal["ga", "npo", "simnpo", "idk"]
RetainLoss = Literal["none", "nll", "kl"]

# §1.5: each repo's config key -> our field. `gamma` is resolved per repo, never globally.
REPO_CONFIG_NAMES: dict[str, dict[str, str]] = {
    "unlearn_simple_tofu": {"npo_coeff": "forget_weight", "grad_diff_coeff": "retain_weight",
                            "KL_coeff": "retain_weight", "beta": "beta", "gamma": "simnpo_margin"},
    "unlearn_simple_muse": {"npo_coeff": "forget_weight", "coeff": "retain_weight", "beta": "beta",
                            "gamma": "simnpo_margin"},
    "soul_wagle_wmdp": {"gamma": "retain_weight", "beta": "beta"},
    "open_unlearning": {"gamma": "forget_weight", "alpha": "retain_weight", "beta": "beta",
                        "delta": "simnpo_margin"},
}


@dataclass
class UnlearnLoss:
    """c_f·L_forget + λ·L_retain (§2.2–2.4, §2.7). Defaults: OU's NPO row (§4.1: β 0.1, γ_f 1, α 1, NLL)."""

    forget_loss: ForgetLoss = "npo"
    retain_loss: RetainLoss = "nll"
    forget_weight: float = 1.0  # c_f: Unlearn-Simple `npo_coeff`, OU `gamma` (§1.5)
    retain_weight: float = 1.0  # λ: Unlearn-Simple `grad_diff_coeff`/`coeff`, OU `alpha`, WMDP/SOUL `gamma` (§1.5)
    beta: float = 0.1  # NPO / SimNPO inverse temperature (§2.3: NPO 0.1; §2.4: OU SimNPO 4.5)
    simnpo_margin: float = 0.0  # SimNPO γ (Unlearn-Simple `gamma`, OU `delta`), enters as β·γ (§2.4)
    kl_masked: bool = True  # retain KL over supervised positions only; False = upstream unmasked B·T mean (§1.3)

    def __post_init__(self) -> None:
        if self.forget_loss not in ("ga", "npo", "simnpo", "idk"):
            raise ValueError(f"forget_loss must be one of ga/npo/simnpo/idk, got {self.forget_loss!r}")
        if self.retain_loss not in ("none", "nll", "kl"):
            raise ValueError(f"retain_loss must be one of none/nll/kl, got {self.retain_loss!r}")
        _check_weight(self.forget_weight, "forget_weight")
        _check_weight(self.retain_weight, "retain_weight")
        if self.forget_loss in ("npo", "simnpo"):
            _check_beta(self.beta, "beta")

    @property
    def needs_reference(self) -> bool:
        return self.forget_loss == "npo" or self.retain_loss == "kl"

    @classmethod
    def from_repo_config(cls, repo: str, config: Mapping[str, Any], **overrides: Any) -> UnlearnLoss:
        """Translate one repo's hyperparameter names (§1.5 table, keys of REPO_CONFIG_NAMES) into this dataclass."""
        if repo not in REPO_CONFIG_NAMES:
            raise ValueError(f"repo must be one of {sorted(REPO_CONFIG_NAMES)}, got {repo!r}")
        table, kw = REPO_CONFIG_NAMES[repo], {}
        for key, value in config.items():
            if key not in table:
                raise ValueError(f"config key {key!r} is not a known {repo} hyperparameter ({sorted(table)})")
            kw[table[key]] = value
        kw.update(overrides)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in kw.items() if k in known})

    def forget_term(self, logits: Any, labels: Tensor, ref_logits: Any | None = None) -> Tensor:
        if self.forget_loss == "ga":
            return ga_loss(logits, labels)
        if self.forget_loss == "idk":
            return idk_loss(logits, labels)
        if self.forget_loss == "simnpo":
            return simnpo_loss(sequence_logprob(logits, labels, mean=True), beta=self.beta, margin=self.simnpo_margin)
        if ref_logits is None:
            raise ValueError("ref_logits is required for forget_loss='npo'")
        return npo_loss(sequence_logprob(logits, labels), sequence_logprob(ref_logits, labels), beta=self.beta)

    def retain_term(self, logits: Any, labels: Tensor, ref_logits: Any | None = None) -> Tensor:
        if self.retain_loss == "nll":
            return retain_nll(logits, labels)
        if ref_logits is None:
            raise ValueError("ref_logits is required for retain_loss='kl'")
        return retain_kl(logits, ref_logits, labels if self.kl_masked else None)

    def __call__(self, model: torch.nn.Module, forget: Mapping[str, Tensor], retain: Mapping[str, Tensor] | None = None,
                 ref_model: torch.nn.Module | None = None) -> tuple[Tensor, dict[str, float]]:
        """One step's loss from batches ``{input_ids, attention_mask?, labels}``; returns (loss, logged parts).
        For forget_loss='idk' the forget batch's labels are the refusal answers."""
        if self.needs_reference and ref_model is None:
            raise ValueError(
                f"ref_model is required for forget_loss={self.forget_loss!r}, retain_loss={self.retain_loss!r}"
            )

        def fwd(m: torch.nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
            return m(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits

        def ref_fwd(batch: Mapping[str, Tensor]) -> Tensor:
            with torch.no_grad():  # §5 G5: frozen reference
                return fwd(ref_model, batch)

        f_ref = ref_fwd(forget) if self.forget_loss == "npo" else None
        lf = self.forget_term(fwd(model, forget), forget["labels"], f_ref)
        loss, parts = self.forget_weight * lf, {"forget": float(lf.detach())}
        if self.retain_loss != "none":
            if retain is None:
                raise ValueError(f"retain batch is required for retain_loss={self.retain_loss!r}")
            r_ref = ref_fwd(retain) if self.retain_loss == "kl" else None
            lr = self.retain_term(fwd(model, retain), retain["labels"], r_ref)
            loss = loss + self.retain_weight * lr
            parts["retain"] = float(lr.detach())
        parts["total"] = float(loss.detach())
        return loss, parts
