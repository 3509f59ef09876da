"""Plain-PyTorch reference twins `<op>_ref`: the CPU fallback backend, the test oracle and the documentation."""

from pyunlearn.reference.gat import (gat_attention_ref, gat_bwd_ref, gat_fwd_ref, gatv2_attention_ref, gatv2_bwd_ref,
                                    gatv2_fwd_ref)
from pyunlearn.reference.masked_optim import masked_adamw_step_ref, masked_sgd_step_ref, masked_sophia_step_ref
from pyunlearn.reference.zo import zo_accumulate_ref, zo_accumulate_rows_ref, zo_philox_bits_ref

__all__ = ["gat_attention_ref", "gat_bwd_ref", "gat_fwd_ref", "gatv2_attention_ref", "gatv2_bwd_ref", "gatv2_fwd_ref",
           "masked_adamw_step_ref", "masked_sgd_step_ref", "masked_sophia_step_ref",
           "zo_accumulate_ref", "zo_accumulate_rows_ref", "zo_philox_bits_ref"]
