"""pyunlearn: high-performance PyTorch machine unlearning and the optimisation machinery around it."""

from __future__ import annotations

import torch  # noqa: F401  (torch before _C: the extension links against it)

from pyunlearn import _ops  # noqa: F401  (op schemas and fakes)
from pyunlearn import _C  # noqa: F401  (C++ CPU/CUDA kernels attach to the schemas)
from pyunlearn._backends import available_backends, get_backend, set_backend, use_backend

__version__ = "0.1.0"


def build_info() -> dict:
    """What the extension was compiled with, plus the active backend and whether Triton is importable."""
    info = dict(_C.build_info())
    info["triton"] = _backends.triton_version()
    info["backend"] = get_backend()
    info["runtime_torch"] = torch.__version__
    info["cuda_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return info


from pyunlearn import _backends  # noqa: E402
from pyunlearn import nn, ops, optim  # noqa: E402,F401

_backends._init_from_env()


__all__ = ["available_backends", "build_info", "get_backend", "nn", "ops", "optim", "set_backend", "use_backend"]
