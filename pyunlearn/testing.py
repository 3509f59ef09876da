"""Test helpers shared by the suite and by users checking their own builds: devices, backends, tolerances."""

from __future__ import annotations

import os

import torch

from pyunlearn._backends import available_backends

# One table of tolerances (rtol, atol) for "equals the reference to rounding". fp32/fp64 state math differs only
# in how scalars are rounded; fp16/bf16 parameters may differ by one unit in the last place of their dtype.
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (2e-5, 2e-6),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (8e-3, 8e-3),
}


def tol(dtype: torch.dtype) -> dict:
    rtol, atol = TOLERANCES[dtype]
    return {"rtol": rtol, "atol": atol}


def devices() -> list[str]:
    """Devices the suite runs on: PYUNLEARN_TEST_DEVICE (e.g. cuda), else cpu."""
    dev = os.environ.get("PYUNLEARN_TEST_DEVICE", "cpu")
    if dev == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("PYUNLEARN_TEST_DEVICE=cuda but torch sees no CUDA device")
    return [dev]


def backends() -> list[str]:
    """Kernel backends to test against the reference twin (the reference itself excluded)."""
    return [b for b in available_backends() if b != "reference"]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, msg: str = "") -> None:
    torch.testing.assert_close(actual, expected, **tol(expected.dtype), msg=lambda m: f"{msg}\n{m}")
