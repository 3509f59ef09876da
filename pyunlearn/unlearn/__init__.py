"""Classifier unlearning (image_mu.md §3): `unlearn(model, forget, retain, method=..., **config)` over a registry
of methods, each a function with its spec defaults as a dataclass config.

    model_u, record = unlearn(model, fs.forget, fs.retain, "salun", lr=0.013)

Methods: retrain, ft, ga, rl, l1_sparse, salun, ugradsl, ugradsl_plus (iterative.py, salun.py); iu (influence.py),
ff (fisher.py); pruning before unlearning (prune.py) composes with every method. The whole protocol (original
model, forget sets, metrics, resumable results) is harness.run.
"""

from pyunlearn.unlearn._common import METHODS, Context, Record, make_config, register, unlearn
from pyunlearn.unlearn import fisher, influence, iterative, salun  # noqa: F401  (register their methods)

__all__ = ["METHODS", "Context", "Record", "make_config", "register", "unlearn"]
