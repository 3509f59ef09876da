"""Public functional API: validate, then call the dispatcher op torch.ops.pyunlearn.<op>.

The backend behind every op is chosen with pyunlearn.set_backend / PYUNLEARN_BACKEND.
"""

from pyunlearn.ops.gat import GatGraph, attention_weights, gat_attention, gat_graph
from pyunlearn.ops.gatv2 import gatv2_attention, gatv2_attention_weights
from pyunlearn.ops.masked_optim import masked_adamw_step, masked_sgd_step, masked_sophia_step
from pyunlearn.ops.zo import (
    assemble,
    perturb_,
    restore_,
    zo_accumulate_,
    zo_accumulate_rows_,
    zo_bits,
    zo_directions,
)

__all__ = ["GatGraph", "assemble", "attention_weights", "gat_attention", "gat_graph", "gatv2_attention",
           "gatv2_attention_weights", "masked_adamw_step", "masked_sgd_step", "masked_sophia_step", "perturb_",
           "restore_", "zo_accumulate_", "zo_accumulate_rows_", "zo_bits", "zo_directions"]
