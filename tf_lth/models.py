"""The networks of Frankle & Carbin (2019) as plain tf_keras models, and their paper defaults.

All use Gaussian Glorot initialisation, ReLU, 3x3 "same" convolutions and 2x2 max-pooling, and
end in a Dense layer of logits (train with ``from_logits=True``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

from tf_lth.keras2 import keras
from tf_lth.errors import TfLthError

INIT = "glorot_normal"


def _dense_head(x, widths, num_classes):
    for i, width in enumerate(widths, 1):
        x = keras.layers.Dense(width, activation="relu", kernel_initializer=INIT, name=f"fc{i}")(x)
    return keras.layers.Dense(num_classes, kernel_initializer=INIT, name="output")(x)


def lenet_300_100(input_shape=(28, 28, 1), num_classes: int = 10) -> keras.Model:
    """LeNet-300-100: fully connected 300-100-10 (266,610 parameters on 28x28 inputs)."""
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    return keras.Model(inputs, _dense_head(x, (300, 100), num_classes), name="lenet_300_100")


def _conv_net(name: str, blocks: tuple[int, ...], input_shape, num_classes) -> keras.Model:
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for b, filters in enumerate(blocks, 1):  # each block: two 3x3 convs then a 2x2 max-pool
        for c in (1, 2):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=INIT,
                                    name=f"conv{2 * b - 2 + c}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{b}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _dense_head(x, (256, 256), num_classes), name=name)


def conv2(input_shape=(32, 32, 3), num_classes: int = 10) -> keras.Model:
    """Conv-2: conv 64, 64, pool; fc 256, 256, 10."""
    return _conv_net("conv2", (64,), input_shape, num_classes)


def conv4(input_shape=(32, 32, 3), num_classes: int = 10) -> keras.Model:
    """Conv-4: conv 64, 64, pool, 128, 128, pool; fc 256, 256, 10."""
    return _conv_net("conv4", (64, 128), input_shape, num_classes)


def conv6(input_shape=(32, 32, 3), num_classes: int = 10) -> keras.Model:
    """Conv-6: conv 64, 64, pool, 128, 128, pool, 256, 256, pool; fc 256, 256, 10."""
    return _conv_net("conv6", (64, 128, 256), input_shape, num_classes)


@dataclass(frozen=True)
class ModelSpec:
    """A model builder with the hyperparameters Frankle & Carbin trained it with."""

    build: Callable[..., keras.Model]
    dataset: str
    optimizer: str = "adam"
    learning_rate: float = 1.2e-3
    batch_size: int = 60
    iterations: int = 50_000
    # prune rate per round by layer kind; "output" is the last layer (half the fc rate)
    rates: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({"dense": 0.2, "output": 0.1}))


def _rates(**rates: float) -> Mapping[str, float]:
    return MappingProxyType(rates)


MODELS: Mapping[str, ModelSpec] = MappingProxyType({
    "lenet_300_100": ModelSpec(lenet_300_100, "mnist"),
    "conv2": ModelSpec(conv2, "cifar10", learning_rate=2e-4, iterations=20_000,
                       rates=_rates(conv=0.1, dense=0.2, output=0.1)),
    "conv4": ModelSpec(conv4, "cifar10", learning_rate=3e-4, iterations=25_000,
                       rates=_rates(conv=0.1, dense=0.2, output=0.1)),
    "conv6": ModelSpec(conv6, "cifar10", learning_rate=3e-4, iterations=30_000,
                       rates=_rates(conv=0.15, dense=0.2, output=0.1)),
})


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of model ``name`` or a one-line error listing the known ones."""
    if name not in MODELS:
        raise TfLthError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[name]


def build(name: str, input_shape=None, num_classes: int = 10) -> keras.Model:
    """Build model ``name`` for ``input_shape`` (the paper's dataset shape when omitted)."""
    builder = spec(name).build
    return builder(num_classes=num_classes) if input_shape is None else builder(tuple(input_shape), num_classes)
