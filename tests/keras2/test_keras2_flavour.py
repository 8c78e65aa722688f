"""tf-lth hands out Keras 2 (tf_keras) and refuses Keras 3 models with a one-line error."""
import os
import subprocess
import sys

import pytest

import tf_lth
from tf_lth import keras
from tf_lth.keras2 import require_tf_keras_model
from tf_lth.errors import TfLthError


def fresh_python(code: str) -> str:
    """The output of ``code`` run by a fresh Python without ``TF_USE_LEGACY_KERAS`` (a user's shell)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_keras_is_tf_keras():
    import tf_keras

    assert keras is tf_keras
    assert tf_lth.keras is tf_keras


def test_importing_tf_lth_makes_tf_keras_the_keras_tf_mot_prunes():
    # a fresh process without the flag: after `import tf_lth`, TensorFlow's own `tf.keras` is Keras 2
    # and TF-MOT wraps a model built with it (a Keras 3 model there is refused with a ValueError)
    code = ("import tf_lth; import tensorflow as tf; import tensorflow_model_optimization as tfmot\n"
            "model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])\n"
            "pruned = tfmot.sparsity.keras.prune_low_magnitude(model)\n"
            "print(type(model).__module__, type(pruned.layers[0]).__name__)")
    out = fresh_python(code)
    module, wrapper = out.split()[-2:]
    assert module.startswith("tf_keras.") and wrapper == "PruneLowMagnitude", out


def test_keras3_model_is_refused_in_one_line():
    import keras as keras3

    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    with pytest.raises(TfLthError) as info:
        require_tf_keras_model(model)
    message = str(info.value)
    assert "Keras 3" in message and "tf_keras" in message
    assert "\n" not in message


def test_tf_keras_model_is_accepted():
    require_tf_keras_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_non_model_is_refused():
    with pytest.raises(TfLthError, match="tf_keras Model"):
        require_tf_keras_model(object())


def test_tf_keras_even_when_tensorflow_is_imported_first():
    code = ("import tensorflow as tf; import tf_lth; from tf_lth import keras; "
            "m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]); print(type(m).__module__)")
    out = fresh_python(code)
    assert out.strip().splitlines()[-1].startswith("tf_keras."), out


def test_no_native_noise_on_import_and_first_op():
    # TensorFlow's start-up INFO lines, and CUDA's error on machines without a GPU, are filtered
    code = "import tf_lth; from tf_lth.keras2 import tf; print(int(tf.constant(1) + 1))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "2", result.stderr
    assert result.stderr == "", result.stderr


def test_both_flavours_train_in_one_process():
    # tf_keras is loaded (conftest, this module); `import keras` is still Keras 3, and tickets of both train
    import keras as keras3
    import numpy as np

    assert keras3.__version__.startswith("3.") and os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    x = np.random.default_rng(0).random((64, 4), np.float32)  # plumbing only: no learning is claimed
    y = (x.sum(1) > 2).astype("int32")
    for k in (keras, keras3):
        model = k.Sequential([k.Input((4,)), k.layers.Dense(8, name="fc"), k.layers.Dense(2, name="out")])
        ticket = tf_lth.LotteryTicket(model, rate=0.5)
        ticket.model.compile("sgd", k.losses.SparseCategoricalCrossentropy(from_logits=True))
        ticket.model.fit(x, y, epochs=1, verbose=0, callbacks=[ticket.callback()])
        ticket.next_round()
        assert ticket.flavour.name == ("keras3" if k is keras3 else "tf_keras")
        assert int((ticket.kernel("fc/kernel") == 0).sum()) == 16


def test_the_keras3_path_loads_no_tf_keras_and_sets_no_flag():
    code = ("import os, sys, keras, tf_lth; from tf_lth import LotteryTicket, keras3, masked3, callbacks3\n"
            "m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]); LotteryTicket(m).next_round()\n"
            "print([n for n in ('tf_keras', 'tensorflow_model_optimization', 'tf_lth.keras2') if n in sys.modules],"
            " os.environ.get('TF_USE_LEGACY_KERAS'))")
    out = fresh_python(code)
    assert out.strip().splitlines()[-1] == "[] None", out


def test_the_tf_keras_path_loads_no_keras3_or_jax():
    # TF-MOT's registry probe would load Keras 3 (and its scikit-learn and JAX imports), and TensorFlow's
    # TFLite module JAX: ~200 MiB of work W's peak RSS. Both stay importable, and TFLite's JAX jit loads JAX
    code = ("import sys; from tf_lth import callbacks, wrapper; from tensorflow.lite.python import lite\n"
            "print([n for n in ('keras', 'jax', 'sklearn') if n in sys.modules], callable(lite._jit))\n"
            "import keras; print(keras.__version__[:2], 'jax' in sys.modules)")
    out = fresh_python(code).strip().splitlines()
    assert out[-2:] == ["[] True", "3. True"], out
