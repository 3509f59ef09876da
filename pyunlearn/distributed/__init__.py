"""Multi-process LLM unlearning on torch.distributed (issue 9, LLM side): DDP and FSDP2 (`fully_shard`) runs of
`pyunlearn.unlearn.llm.unlearn_llm`'s methods, WAGLE scores from sharded gradients with an exact distributed top-k,
and checkpoints through torch.distributed.checkpoint that resume on another world size. See docs/distributed.md.

    torchrun --nproc-per-node 8 -m pyunlearn.distributed.llm --strategy fsdp2 --method npo --forget forget05

Every function here expects an initialised default process group (torchrun + `init_distributed()`, or
`spawn()` for CPU/gloo runs in tests)."""

from pyunlearn.distributed.llm import (
    STRATEGIES,
    full_state_dict,
    init_distributed,
    prepare_model,
    shard_masks,
    unlearn_llm_distributed,
)
from pyunlearn.distributed.spawn import free_port, spawn
from pyunlearn.distributed.wagle import wagle_masks_distributed, wagle_scores_distributed

__all__ = [
    "STRATEGIES",
    "free_port",
    "full_state_dict",
    "init_distributed",
    "prepare_model",
    "shard_masks",
    "spawn",
    "unlearn_llm_distributed",
    "wagle_masks_distributed",
    "wagle_scores_distributed",
]
