"""Plain-PyTorch reference twins `<op>_ref`: the CPU fallback backend, the test oracle and the documentation."""

from pyunlearn.reference.masked_optim import masked_adamw_step_ref, masked_sgd_step_ref, masked_sophia_step_ref

__all__ = ["masked_adamw_step_ref", "masked_sgd_step_ref", "masked_sophia_step_ref"]
