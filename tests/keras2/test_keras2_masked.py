"""The tf_keras masked model directly (tf_lth.keras2.masked, with frozen_mask and callback): TF-MOT wrappers
under the never-pruning schedule, the variable index, masked reads and a plain copy holding given values."""
import numpy as np

from tf_lth.keras2 import keras
from tf_lth.keras2.callback import TicketCallback
from tf_lth.keras2.frozen_mask import FrozenMask
from tf_lth.keras2.masked import MaskedModel
from tf_lth.keras2.wrapper import MaskedWrapper


def net():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, name="fc")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.BatchNormalization(name="bn")(x)))


def test_wrappers_index_and_plain_copy():
    masked = MaskedModel(net())
    wrapped = [layer for layer in masked.model.layers if isinstance(layer, MaskedWrapper)]
    assert [w.layer.name for w in wrapped] == ["fc", "out"] and all(isinstance(w.pruning_schedule, FrozenMask) for w in wrapped)
    assert sorted(masked.kernels) == ["fc/kernel", "out/kernel"] and masked.unpruned_layers == ["bn"]
    keep = np.zeros((6, 4), bool)
    keep[0] = True
    masked.set_masks({"fc/kernel": keep, "out/kernel": np.ones((4, 2), bool)})
    masked.apply_masks()
    values = masked.weights()
    assert np.count_nonzero(values[masked.kernels["fc/kernel"]]) == 4  # the kept row only
    copy = masked.plain_copy(values)
    assert not any(isinstance(layer, MaskedWrapper) for layer in copy.layers)
    x = np.random.default_rng(0).random((3, 6)).astype(np.float32)
    np.testing.assert_allclose(copy(x, training=False).numpy(), masked.model(x, training=False).numpy(), atol=1e-6)
    frozen = FrozenMask()
    assert not bool(frozen(10)[0]) and issubclass(TicketCallback, keras.callbacks.Callback)
