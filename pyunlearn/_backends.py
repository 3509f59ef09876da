"""Which kernel backend runs pyunlearn's ops, and switching between them.

- "cpp" (default): the C++ kernels compiled into pyunlearn._C, attached to the CPU and CUDA dispatch keys.
- "triton": the Triton kernels of pyunlearn.kernels, attached to CPU and CUDA while selected. On CPU tensors
  they need the Triton interpreter (TRITON_INTERPRET=1 set before triton is imported); without it they raise.
- "reference": the plain-PyTorch twins of pyunlearn.reference.

A non-default backend is a torch.library.Library that overrides the C++ kernels; dropping it restores them.
So every backend goes through the same dispatcher op: same schema, same fakes, torch.compile works with each.
Select with PYUNLEARN_BACKEND or set_backend(); use_backend() scopes a choice.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from typing import Callable, Iterator

import torch

BACKENDS = ("cpp", "triton", "reference")
# op family -> its ops; a family's Triton kernels live in pyunlearn.kernels.<family>, its twins in
# pyunlearn.reference (<op>_ref).
FAMILIES = {
    "masked_optim": ("masked_sgd_step", "masked_adamw_step", "masked_sophia_step"),
    "gat": ("gat_fwd", "gat_bwd"),
    "gatv2": ("gatv2_fwd", "gatv2_bwd"),
    "zo": ("zo_accumulate", "zo_accumulate_rows", "zo_philox_bits"),
}
OPS = tuple(op for ops in FAMILIES.values() for op in ops)

_active = {"name": "cpp", "lib": None}


def triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available_backends() -> list[str]:
    """Backends that can run here: cpp and reference always; triton when importable and a GPU or the
    interpreter is there."""
    names = ["cpp", "reference"]
    if triton_version() is not None and (torch.cuda.is_available() or triton_interpreted()):
        names.insert(1, "triton")
    return names


def _implementations(name: str) -> dict[str, Callable]:
    if name == "reference":
        module = importlib.import_module("pyunlearn.reference")
        return {op: getattr(module, f"{op}_ref") for op in OPS}
    if triton_version() is None:
        raise RuntimeError("backend 'triton' needs the triton package (pip install 'pyunlearn[triton]'); "
                           "it is not installed")
    impls = {}
    for family, ops in FAMILIES.items():
        module = importlib.import_module(f"pyunlearn.kernels.{family}")
        impls.update({op: getattr(module, op) for op in ops})
    return impls


def get_backend() -> str:
    return _active["name"]


def set_backend(name: str) -> None:
    """Select the kernels behind every pyunlearn op: "cpp", "triton" or "reference"."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == _active["name"]:
        return
    impls = None if name == "cpp" else _implementations(name)
    if _active["lib"] is not None:
        _active["lib"]._destroy()
        _active["lib"] = None
    if impls is not None:
        lib = torch.library.Library("pyunlearn", "IMPL")
        with warnings.catch_warnings():
            # Overriding the C++ kernel is the point; torch warns about it once per process.
            warnings.filterwarnings("ignore", message="(?s).*Overriding a previously registered kernel")
            for op, fn in impls.items():
                for key in ("CPU", "CUDA"):
                    lib.impl(op, fn, key)
        _active["lib"] = lib
    _active["name"] = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run a block with another backend, restoring the previous one afterwards."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _init_from_env() -> None:
    name = os.environ.get("PYUNLEARN_BACKEND")
    if name:
        if name not in BACKENDS:
            raise ValueError(f"PYUNLEARN_BACKEND must be one of {BACKENDS}, got {name!r}")
        set_backend(name)
