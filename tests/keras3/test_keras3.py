"""Keras 3 tickets (issue 12): every check of tests/keras3_checks.py on the TensorFlow backend in this
process, and all of them again under ``KERAS_BACKEND=jax`` in one subprocess (what a JAX user runs:
no conftest, no tf_keras). Each check asserts the invariant after every batch, counts and files."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import keras3_checks
from tf_lth.keras3 import environment_for_children

HERE = Path(__file__).resolve().parent
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


@pytest.mark.parametrize("name", list(keras3_checks.CHECKS))
def test_on_tensorflow(name):
    import keras

    assert keras.backend.backend() == "tensorflow"
    keras3_checks.CHECKS[name]()


@pytest.fixture(scope="module")
def jax_report():
    if importlib.util.find_spec("jax") is None:
        if IN_CI:
            pytest.fail("jax is not installed: `pip install -e '.[test]'` installs jax[cpu]", pytrace=False)
        pytest.skip("jax is not installed")
    env = {**environment_for_children(), "KERAS_BACKEND": "jax", "PYTHONPATH": str(HERE.parents[1])}
    result = subprocess.run([sys.executable, str(HERE / "keras3_checks.py")], env=env, cwd=HERE,
                            capture_output=True, text=True, timeout=600)
    rows = {}
    for line in result.stdout.splitlines():
        if line.startswith("CHECK "):
            row = json.loads(line[len("CHECK "):])
            rows[row["check"]] = row
    assert rows, f"no checks ran (exit {result.returncode}): {result.stderr[-3000:]}"
    return rows


@pytest.mark.parametrize("name", list(keras3_checks.CHECKS))
def test_on_jax(jax_report, name):
    row = jax_report.get(name)
    assert row is not None, f"{name} did not run under JAX"
    assert row["backend"] == "jax"
    assert row["ok"], row["error"]
    if name == "tf_lth_loads_no_tensorflow":
        assert row["info"] == {"tensorflow_loaded": False}, row  # it ran first, in a process without TF
