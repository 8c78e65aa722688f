"""How the converter stores kernels sparse, predicted from the kernels (tf_lth.export.sparse_storage), against
what the converter and LiteRT really do on small Dense models: block storage where predicted, and the
known wrong cases (a block encoding drops the last ``in % B`` input rows) found before conversion."""
import numpy as np
import pytest

from tf_lth import keras
from tf_lth.export import sparse_storage
from tf_lth.export import tflite


def dense_model(kernel):
    inputs = keras.Input((kernel.shape[0],))
    model = keras.Model(inputs, keras.layers.Dense(kernel.shape[1], name="fc")(inputs))
    model.get_layer("fc").set_weights([kernel.astype(np.float32), np.zeros(kernel.shape[1], np.float32)])
    return model


def sparse_file(model, kind):
    converter = tflite.tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [o for o in tflite.TFLITE[kind][1]]
    return converter.convert()


def blocked_kernel(n_in, n_out, width, density, tail, seed=0):
    """Weights only in whole 1 x ``width`` blocks of the input dimension, plus ``tail`` weights in the last
    ``n_in % width`` rows (where a block encoding has no room for them)."""
    rng = np.random.default_rng(seed)
    k = np.zeros((n_in, n_out))
    blocks = rng.random((n_in // width, n_out)) < density
    k[: (n_in // width) * width] = np.repeat(blocks, width, axis=0) * rng.normal(size=((n_in // width) * width, n_out))
    rows = np.arange((n_in // width) * width, n_in)
    for i in range(tail):
        k[rows[i % len(rows)], i] = 1.0
    return k


@pytest.mark.parametrize("kind, width", [("tflite", 4), ("int8", 16)])
def test_block_storage_is_predicted_and_its_dropped_tail_found(kind, width):
    x = np.random.default_rng(1).random((64, 302)).astype(np.float32)
    clean, tailed = blocked_kernel(302, 64, width, 0.05, 0), blocked_kernel(302, 64, width, 0.05, 5)
    for kernel, wrong in ((clean, False), (tailed, True)):
        assert sparse_storage.storage(kernel, kind) == f"block{width}"
        model, content = dense_model(kernel), None
        content = sparse_file(model, kind)
        assert "DENSIFY" not in tflite.inspect_tflite(content)["ops"]  # read directly: block-stored
        outputs = tflite.run_tflite(tflite.open_tflite(content, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")[0], x)
        error = np.abs(outputs - model.predict(x, verbose=0)).max()
        assert (error > 0.1) == wrong, error  # the builtin kernels compute it right, but for the dropped rows
        problem = sparse_storage.problem(kind, {"fc/kernel": kernel})
        assert (problem is not None) == (wrong or kind == "int8")  # int8 1x16 blocks: XNNPACK misreads them
        if wrong:
            assert f"leaves out its last {302 % width} input rows (302 % {width}) and 5 weights" in problem


def test_random_sparsity_goes_through_densify_and_is_safe():
    kernel = np.random.default_rng(0).normal(size=(300, 64)) * (np.random.default_rng(1).random((300, 64)) < 0.1)
    assert sparse_storage.storage(kernel, "tflite") == "densify" and sparse_storage.problem("tflite", {"k": kernel}) is None
    assert "DENSIFY" in tflite.inspect_tflite(sparse_file(dense_model(kernel), "tflite"))["ops"]
    assert sparse_storage.storage(kernel[:, :3], "int8") == "densify"  # under 1,024 weights: float in an int8 file
    assert sparse_storage.storage(np.ones((300, 64)), "tflite") == "dense"
