"""Drop-in optimizers: torch.optim's algorithms with exact masks (masked entries and their state never move), and
the zeroth-order optimizers (ZO-SGD/MMT/Sign/Cons, ZO-Adam) whose step(closure) needs loss values only."""

from pyunlearn.optim._masked import MaskedOptimizer
from pyunlearn.optim.adamw import MaskedAdamW
from pyunlearn.optim.sgd import MaskedSGD
from pyunlearn.optim.sophia import Sophia
from pyunlearn.optim.zo import ZOSGD, ZOAdam, ZOOptimizer, ZOSGDCons, ZOSGDSign

__all__ = [
    "ZOSGD",
    "MaskedAdamW",
    "MaskedOptimizer",
    "MaskedSGD",
    "Sophia",
    "ZOAdam",
    "ZOOptimizer",
    "ZOSGDCons",
    "ZOSGDSign",
]
