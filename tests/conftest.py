"""Triton runs on CPU under its interpreter: TRITON_INTERPRET must be set before triton is first imported."""

import os

if os.environ.get("PYUNLEARN_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pathlib

import pytest
import torch

import pyunlearn


@pytest.fixture(autouse=True)
def _restore_backend():
    """Every test starts on the default backend and leaves it so."""
    pyunlearn.set_backend("cpp")
    yield
    pyunlearn.set_backend("cpp")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Test folders whose models are tiny (digits CNNs, a 2-layer Llama, UM2N on 10x10 meshes, ZO probes): intra-op
# threads only add sync overhead there, and on a loaded 2-core box OpenMP spinning made them 10-15x slower. The op
# tests keep torch's default, so the kernels' parallel paths stay covered.
ONE_THREAD_DIRS = {"unlearn", "llm", "zo", "mesh", "distributed"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(request):
    if pathlib.Path(str(request.path)).parent.name not in ONE_THREAD_DIRS:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
