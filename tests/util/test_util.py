"""Plumbing (tf_lth.util): atomic writes keep the old file when a write fails, the native start-up noise is
filtered while other lines pass, and an import can be made absent for a block."""
import os
import subprocess
import sys

import pytest

from tf_lth.util.io import atomic_write, read_json, write_json
from tf_lth.util.native_log import native_noise_filtered
from tf_lth.util.tensorflow import absent


def test_an_atomic_write_that_fails_leaves_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"a": 1})

    def broken(f):
        f.write(b"{half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert read_json(path) == {"a": 1} and os.listdir(tmp_path) == ["r.json"]


def test_native_noise_is_dropped_and_other_lines_pass(capfd):
    with native_noise_filtered():
        os.write(2, b"I0000 00:00:1796 12 cpu_feature_guard.cc:15] This TensorFlow binary is optimized\n")
        os.write(2, b"a line the user must see\n")
    assert capfd.readouterr().err == "a line the user must see\n"


def test_a_module_can_be_absent_for_a_block():
    name = "tf_lth_no_such_module_for_the_test"
    with absent(name):
        with pytest.raises(ImportError):
            __import__(name)
    assert name not in sys.modules
    with absent("os"):  # loaded already: left alone
        import os as again
    assert again is os


@pytest.mark.heavy
def test_tensorflow_imported_before_a_flavour_loads_no_keras3():
    """data/ imports TensorFlow before the runner picks tf_keras; TensorFlow must not pull Keras 3 (and its
    scikit-learn wrapper, ~60 MiB of a tf_keras run's peak RSS) along, and Keras 3 still imports after."""
    code = ("import sys; from tf_lth.data import pipeline; import tf_lth.keras2; "
            "print('keras' in sys.modules, 'sklearn' in sys.modules); import keras; print(keras.__version__[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False", "3"], out.stdout
