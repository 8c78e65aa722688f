"""The networks of Frankle & Carbin (2019) as plain tf_keras models (their recipes: :mod:`tf_lth.models`).

All use Gaussian Glorot initialisation, ReLU, 3x3 "same" convolutions and 2x2 max-pooling, and
end in a Dense layer of logits (train with ``from_logits=True``).
"""
from __future__ import annotations

from tf_lth import models
from tf_lth.keras2 import keras

INIT = "glorot_normal"


def dense_head(x, widths, num_classes):
    """Dense ReLU layers ``fc1``, ``fc2``, ... of ``widths``, then the logits layer ``output``."""
    for i, width in enumerate(widths, 1):
        x = keras.layers.Dense(width, activation="relu", kernel_initializer=INIT, name=f"fc{i}")(x)
    return keras.layers.Dense(num_classes, kernel_initializer=INIT, name="output")(x)


def lenet_300_100(input_shape=(28, 28, 1), num_classes: int = 10) -> keras.Model:
    """LeNet-300-100: fully connected 300-100-10 (266,610 parameters on 28x28 inputs)."""
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    return keras.Model(inputs, dense_head(x, (300, 100), num_classes), name="lenet_300_100")


def conv_net(name: str, blocks: tuple[int, ...], input_shape, num_classes) -> keras.Model:
    """Blocks of two 3x3 convolutions and a 2x2 max-pool (``blocks``: filters per block), fc 256, 256."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for b, filters in enumerate(blocks, 1):
        for c in (1, 2):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=INIT,
                                    name=f"conv{2 * b - 2 + c}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{b}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, dense_head(x, (256, 256), num_classes), name=name)


def conv2(input_shape=(32, 32, 3), num_classes: int = 10) -> keras.Model:
    """Conv-2: conv 64, 64, pool; fc 256, 256, 10."""
    return conv_net("conv2", (64,), input_shape, num_classes)


def conv4(input_shape=(32, 32, 3), num_classes: int = 10) -> keras.Model:
    """Conv-4: conv 64, 64, pool, 128, 128, pool; fc 256, 256, 10."""
    return conv_net("conv4", (64, 128), input_shape, num_classes)


def conv6(input_shape=(32, 32, 3), num_classes: int = 10) -> keras.Model:
    """Conv-6: conv 64, 64, pool, 128, 128, pool, 256, 256, pool; fc 256, 256, 10."""
    return conv_net("conv6", (64, 128, 256), input_shape, num_classes)


def build(name: str, input_shape=None, num_classes: int = 10) -> keras.Model:
    """Build the registered model ``name`` for ``input_shape`` (its spec's shape when omitted)."""
    spec = models.spec(name)
    return globals()[spec.builder](tuple(input_shape or spec.input_shape), num_classes)
