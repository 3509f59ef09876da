"""Shared, trained-once fixtures of the unlearning tests: the digits split, the original CNN, two forget sets."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The models here are tiny: intra-op threads only add sync overhead, and on a loaded 2-core box OpenMP
    spinning made these tests 10-15x slower. Restored after each module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def digits():
    from pyunlearn.data import load_digits

    return load_digits(split_seed=0)


@pytest.fixture(scope="session")
def original(digits):
    from pyunlearn.train import train_original

    return train_original(digits, "cnn", seed=1, progress=False)


@pytest.fixture(scope="session")
def class_forget(digits):
    from pyunlearn.data import select_forget

    return select_forget(digits, "class:3", seed=1)


@pytest.fixture(scope="session")
def random_forget(digits):
    from pyunlearn.data import select_forget

    return select_forget(digits, "random:0.1", seed=1)
