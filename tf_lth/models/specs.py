"""The models tf-lth knows by name, with the training recipe Frankle & Carbin (2019) used for each.

This module is the registry (no TensorFlow: the command line lists and checks names from it at
once); the networks themselves are built by :mod:`tf_lth.models.networks`. Adding a model is a builder
there and one :class:`ModelSpec` here. The paper trained LeNet-300-100 for 50,000 iterations and
Conv-2/4/6 for 20,000/25,000/30,000; tf-lth's default is :attr:`ModelSpec.epochs` per round.
ResNet-20 and VGG-16 take Frankle et al. 2020's CIFAR-10 recipe (:data:`DEEP_RECIPE`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from tf_lth.errors import TfLthError
from tf_lth.registry import Registry


def _rates(**rates: float) -> Mapping[str, float]:
    return MappingProxyType(rates)


@dataclass(frozen=True)
class ModelSpec:
    """A network and the recipe it is trained with unless the experiment says otherwise.

    ``builder`` names the function of :mod:`tf_lth.models.networks` that builds it; ``input_shape`` is
    the shape it is built for when none is given (the paper's dataset). ``rates`` is the prune
    rate per round by layer kind, ``"output"`` being the last layer (half the fc rate). The training
    fields mirror :class:`~tf_lth.config.configs.TrainingConfig`'s (lengths as ``"80ep"``); ``ticket`` holds
    the :class:`~tf_lth.config.configs.TicketConfig` fields the recipe sets (scope, rewind, ignored layers),
    applied to options given as flags or config files (:meth:`~tf_lth.config.configs.ExperimentConfig.from_dict`)
    that do not set them; ``source`` says where the recipe comes from.
    """

    builder: str
    input_shape: tuple | None = (28, 28, 1)
    optimizer: str = "adam"
    learning_rate: float = 1.2e-3
    batch_size: int = 60
    epochs: int = 10
    rates: Mapping[str, float] = field(default_factory=lambda: _rates(dense=0.2, output=0.1))
    momentum: float = 0.0
    schedule: str = "constant"
    milestones: tuple = ()
    gamma: float = 0.1
    warmup: str | None = None
    weight_decay: float = 0.0
    augment: bool = False
    ticket: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "Frankle & Carbin 2019, Figure 2"


# CIFAR-10 recipe of Frankle et al. 2020 ("Linear Mode Connectivity and the LTH", Table 1) as in
# OpenLTH: SGD momentum 0.9, lr 0.1 x0.1 at epochs 80 and 120 of 160, weight decay 1e-4 (PyTorch's,
# coupled: l2), batch 128, augmentation, global 20% per round with the output layer ignored, and
# rewinding to the iteration where the network became stable (their Figure 3). The output layer is
# ignored for both (OpenLTH ignores it for VGG-16 and prunes ResNet-20's fc layer with the rest).
DEEP_RECIPE = dict(input_shape=(32, 32, 3), optimizer="sgd", learning_rate=0.1, batch_size=128, epochs=160,
                   momentum=0.9, schedule="step", milestones=("80ep", "120ep"), gamma=0.1, weight_decay=1e-4,
                   augment=True, rates=_rates(conv=0.2, dense=0.2, output=0.2))
MODELS: Registry[ModelSpec] = Registry("model")
MODELS.add("lenet_300_100", ModelSpec("lenet_300_100"))
MODELS.add("conv2", ModelSpec("conv2", (32, 32, 3), learning_rate=2e-4, rates=_rates(conv=0.1, dense=0.2, output=0.1)))
MODELS.add("conv4", ModelSpec("conv4", (32, 32, 3), learning_rate=3e-4, rates=_rates(conv=0.1, dense=0.2, output=0.1)))
MODELS.add("conv6", ModelSpec("conv6", (32, 32, 3), learning_rate=3e-4, rates=_rates(conv=0.15, dense=0.2, output=0.1)))
MODELS.add("resnet20", ModelSpec(
    "resnet20", **DEEP_RECIPE, ticket=MappingProxyType({"scope": "global", "ignore": ("output",), "rewind": "iteration:500"}),
    source="Frankle et al. 2020 (ICML), Table 1 and Figure 3: ResNet-20 stable from iteration 500; OpenLTH cifar_resnet_20"))
MODELS.add("vgg16", ModelSpec(
    "vgg16", **DEEP_RECIPE, ticket=MappingProxyType({"scope": "global", "ignore": ("output",), "rewind": "iteration:1000"}),
    source="Frankle et al. 2020 (ICML), Table 1 and Figure 3: VGG-16 stable from iteration 1000; OpenLTH cifar_vgg_16"))


USER_MODEL_FILES = (".keras", ".h5")  # and SavedModel folders: what keras.models.load_model reads
USER_MODEL_HOWTO = ("module:function (returning a built tf_keras model, or Keras 3 with --keras 3), or a .keras, .h5 "
                    "or SavedModel path")


def user_model(name: str) -> str | None:
    """``"function"`` for ``module:function`` / ``path/file.py:function``, ``"file"`` for a saved
    model (``.keras``, ``.h5``, a SavedModel folder), ``None`` for a registered name."""
    if name in MODELS.entries:
        return None
    if name.endswith(USER_MODEL_FILES) or os.path.isdir(name):
        return "file"
    module, colon, function = name.rpartition(":")
    return "function" if colon and module and function.isidentifier() else None


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of model ``name`` or a one-line error listing the known ones; a user's
    model (:func:`user_model`) gets the generic recipe (LeNet's: Adam 1.2e-3, batch 60, 10 epochs,
    fc 20% / output 10%), its input shape from the data, and flags and config files to change it."""
    kind = user_model(name)
    if kind is None:
        if name not in MODELS.entries:
            raise TfLthError(f"unknown model {name!r} (--model): choose one of {', '.join(MODELS.names())}, "
                             f"or {USER_MODEL_HOWTO}")
        return MODELS.get(name)
    if kind == "file" and not os.path.exists(name):
        raise TfLthError(f"model file {name} does not exist: give the path of a .keras, .h5 or SavedModel")
    where = os.path.abspath(name) if kind == "file" else name
    return ModelSpec(name, input_shape=None, source=f"the user's {'saved model' if kind == 'file' else 'function'} {where}")
