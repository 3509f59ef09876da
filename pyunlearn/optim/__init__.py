"""Drop-in optimizers: torch.optim's algorithms with exact masks (masked entries and their state never move)."""

from pyunlearn.optim._masked import MaskedOptimizer
from pyunlearn.optim.adamw import MaskedAdamW
from pyunlearn.optim.sgd import MaskedSGD
from pyunlearn.optim.sophia import Sophia

__all__ = ["MaskedAdamW", "MaskedOptimizer", "MaskedSGD", "Sophia"]
