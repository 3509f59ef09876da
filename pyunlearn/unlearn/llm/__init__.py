"""LLM unlearning (spec llm_mu.md §2): losses for GA, GradDiff, NPO, SimNPO and IDK with NLL / KL retain terms."""

from pyunlearn.unlearn.llm.losses import (
    IGNORE_INDEX,
    REPO_CONFIG_NAMES,
    UnlearnLoss,
    ga_loss,
    grad_diff_loss,
    idk_loss,
    npo_loss,
    retain_kl,
    retain_nll,
    sequence_logprob,
    simnpo_loss,
    token_mean_nll,
)

from pyunlearn.unlearn.llm.losses import __all__  # noqa: E402,F401  (one list, kept with the losses)
