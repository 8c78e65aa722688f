"""The Keras 3 masked model directly (tf_lth.keras3.masked, layer_masks, callback): masks on the model's own
layers as bool variables, the swap class, a plain copy without masks, the save hook a ticket warns through."""
import keras
import numpy as np

from tf_lth.keras3.callback import TicketCallback
from tf_lth.keras3.layer_masks import is_masked, plain_values
from tf_lth.keras3.masked import MaskedModel


def test_masks_on_the_layers_and_a_plain_copy(tmp_path):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="fc"), keras.layers.Dense(2, name="out")])
    masked = MaskedModel(model)
    assert masked.model is model and sorted(masked.kernels) == ["fc/kernel", "out/kernel"]
    assert all(is_masked(layer) for layer in model.layers)
    assert type(model.layers[0]).__name__ == "Dense"  # the swap class keeps the name
    keep = np.zeros((6, 4), bool)
    keep[:, 0] = True
    masked.set_masks({"fc/kernel": keep, "out/kernel": np.ones((4, 2), bool)})
    masked.apply_masks()
    assert np.count_nonzero(masked.kernel("fc/kernel")) == 6
    copy = masked.plain_copy(masked.weights())
    assert not any(is_masked(layer) for layer in copy.layers) and len(copy.weights) == len(plain_values(model))
    saves = []
    masked.on_save(lambda: saves.append(1))
    model.save(tmp_path / "m.keras")
    assert len(saves) == 2  # each masked layer called the ticket's hook
    assert issubclass(TicketCallback, keras.callbacks.Callback)
