"""Shared, trained-once fixtures of the unlearning tests: the digits split, the original CNN, two forget sets."""

from __future__ import annotations

import pytest


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
