"""The models tf-lth knows by name, with the training recipe Frankle & Carbin (2019) used for each.

This module is the registry (no TensorFlow: the command line lists and checks names from it at
once); the networks themselves are built by :mod:`tf_lth.networks`. Adding a model is a builder
there and one :class:`ModelSpec` here. The paper trained LeNet-300-100 for 50,000 iterations and
Conv-2/4/6 for 20,000/25,000/30,000; tf-lth's default is :attr:`ModelSpec.epochs` per round.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from tf_lth.registry import Registry


def _rates(**rates: float) -> Mapping[str, float]:
    return MappingProxyType(rates)


@dataclass(frozen=True)
class ModelSpec:
    """A network and the hyperparameters it is trained with unless the experiment says otherwise.

    ``builder`` names the function of :mod:`tf_lth.networks` that builds it; ``input_shape`` is
    the shape it is built for when none is given (the paper's dataset). ``rates`` is the prune
    rate per round by layer kind, ``"output"`` being the last layer (half the fc rate).
    """

    builder: str
    input_shape: tuple = (28, 28, 1)
    optimizer: str = "adam"
    learning_rate: float = 1.2e-3
    batch_size: int = 60
    epochs: int = 10
    rates: Mapping[str, float] = field(default_factory=lambda: _rates(dense=0.2, output=0.1))


MODELS: Registry[ModelSpec] = Registry("model")
MODELS.add("lenet_300_100", ModelSpec("lenet_300_100"))
MODELS.add("conv2", ModelSpec("conv2", (32, 32, 3), learning_rate=2e-4, rates=_rates(conv=0.1, dense=0.2, output=0.1)))
MODELS.add("conv4", ModelSpec("conv4", (32, 32, 3), learning_rate=3e-4, rates=_rates(conv=0.1, dense=0.2, output=0.1)))
MODELS.add("conv6", ModelSpec("conv6", (32, 32, 3), learning_rate=3e-4, rates=_rates(conv=0.15, dense=0.2, output=0.1)))


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of model ``name`` or a one-line error listing the known ones."""
    return MODELS.get(name)
