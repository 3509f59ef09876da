"""LLM unlearning (spec llm_mu.md §2): losses for GA, GradDiff, NPO, SimNPO and IDK with NLL / KL retain terms, the
unlearning loop (AdamW / SGD / Sophia = SOUL, masks, checkpoint / resume) and WAGLE attribution masks. The
end-to-end TOFU-like pipeline and the `pyunlearn llm` CLI live in `pyunlearn.unlearn.llm.pipeline`."""

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
from pyunlearn.unlearn.llm.trainer import (
    OPTIMIZERS,
    UnlearnConfig,
    check_supervised,
    make_optimizer,
    unlearn_llm,
)
from pyunlearn.unlearn.llm.wagle import wagle_masks, wagle_scores

__all__ = [
    "IGNORE_INDEX", "OPTIMIZERS", "REPO_CONFIG_NAMES", "UnlearnConfig", "UnlearnLoss", "check_supervised", "ga_loss",
    "grad_diff_loss", "idk_loss", "make_optimizer", "npo_loss", "retain_kl", "retain_nll", "sequence_logprob",
    "simnpo_loss", "token_mean_nll", "unlearn_llm", "wagle_masks", "wagle_scores",
]
