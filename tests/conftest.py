"""Triton runs on CPU under its interpreter: TRITON_INTERPRET must be set before triton is first imported."""

import os

if os.environ.get("PYUNLEARN_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import pyunlearn  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_backend():
    """Every test starts on the default backend and leaves it so."""
    pyunlearn.set_backend("cpp")
    yield
    pyunlearn.set_backend("cpp")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
