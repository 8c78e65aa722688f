"""The Keras flavours tf-lth works with, one :class:`Flavour` record each: the one place that dispatches on
flavour. Nothing here imports a Keras: a record names its package, and each piece loads on first use, so
a Keras 3 user on JAX never loads TensorFlow or tf_keras, and a tf_keras user never loads Keras 3.

A flavour is a package with these modules (the contract a third flavour, e.g. a PyTorch-backend Keras 3,
fills in as one new package and one record below):

========== ===============================================================================================
package    ``keras`` (its Keras module, selected there and nowhere else)
masked     ``MaskedModel(model, frozen=False)``: masks on the model, the variable index, the mask
           invariant's owner (``raw_weights``, ``weights``, ``assign``, ``apply_masks``, ``set_masks``,
           ``kernel``, ``output_layer_names``, ``fresh_values``, ``clone_source``, ``plain_copy``, ``scope``,
           ``reset_optimizer``, ``on_save``; ``variables``, ``kernels``, ``layers``, ``unpruned_layers``)
callback   ``TicketCallback(ticket, **options)``: :class:`tf_lth.training.round_logic.RoundLogic` on the
           flavour's Keras callback
training   ``KIT``: a :class:`tf_lth.training.fit_round.TrainingKit` (compile, checkpoint, session, ...)
export     ``export(model, path, **options)``: the flavour's route of :func:`tf_lth.export.export_ticket`
graph      ``describe(model)``: the model's :class:`tf_lth.pruning.groups.Graph` (layers, kinds, shapes), what
           channel groups and :mod:`tf_lth.export.shrink` work on
saliency   ``prepare(masked)``: what to compute on (a plain copy of a ticket's model); ``quantities(model,
           indices, values, needs, batches, temperature)``: what a pruning-at-init score needs
           (:mod:`tf_lth.pruning.at_init`: the loss gradient, the Hessian-gradient product, SynFlow's
           gradient) of the weights at ``indices``, the model's weights taking ``values``
========== ===============================================================================================
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from tf_lth.errors import TfLthError
from tf_lth.registry import Registry


@dataclass(frozen=True)
class Flavour:
    """A Keras flavour: ``name`` (ticket.json's ``flavour``), ``version`` (the runner's ``--keras``), its
    ``package`` and the module roots its classes live in (``roots``: how a model's flavour is told)."""

    name: str
    version: int
    package: str
    roots: tuple[str, ...]

    def module(self, part: str = ""):
        """The flavour's package, or its module ``part`` (imported on first use)."""
        return importlib.import_module(f"{self.package}.{part}" if part else self.package)

    @property
    def keras(self):
        return self.module().keras

    def masked_model(self, model, frozen: bool = False):
        """``model`` with masks, in the flavour's masked model (the only code that touches its variables)."""
        return self.module("masked").MaskedModel(model, frozen=frozen)

    @property
    def callback(self) -> type:
        """The class of a round's Keras callback."""
        return self.module("callback").TicketCallback

    @property
    def training(self):
        """The flavour's :class:`~tf_lth.training.fit_round.TrainingKit`."""
        return self.module("training").KIT

    def export(self, model, path, **options) -> dict:
        """The flavour's export route (:func:`tf_lth.export.export_ticket` calls it)."""
        return self.module("export").export(model, path, **options)

    @property
    def graph(self):
        """The flavour's ``graph`` module: ``describe`` (structured tickets)."""
        return self.module("graph")

    def describe(self, model):
        """``model``'s layer graph, a :class:`tf_lth.pruning.groups.Graph` (what channel groups are found on)."""
        return self.graph.describe(model)

    @property
    def saliency(self):
        """The flavour's ``saliency`` module: ``quantities`` (gradients for :mod:`tf_lth.ticket.at_init`)."""
        return self.module("saliency")

    def model_from_json(self, text: str, custom_objects=None):
        """An architecture saved by ``model.to_json()``, rebuilt in this flavour."""
        return self.keras.models.model_from_json(text, custom_objects=custom_objects)

    def __str__(self) -> str:
        return self.name


FLAVOURS: Registry[Flavour] = Registry("Keras flavour")
TF_KERAS = FLAVOURS.add("tf_keras", Flavour("tf_keras", 2, "tf_lth.keras2", ("tf_keras", "tensorflow.python.keras")))
KERAS3 = FLAVOURS.add("keras3", Flavour("keras3", 3, "tf_lth.keras3", ("keras",)))


def of(obj) -> Flavour | None:
    """The flavour of a model (or layer), or ``None`` for anything else; the first class in ``obj``'s
    method resolution order that comes from a Keras decides."""
    for cls in type(obj).__mro__:
        for flavour in FLAVOURS.entries.values():
            root = cls.__module__.split(".")[0]
            if root in flavour.roots or cls.__module__.startswith(flavour.roots):
                return flavour
    return None


def of_model(model) -> Flavour:
    """The flavour of ``model``, or a one-line error."""
    flavour = of(model)
    if flavour is None:
        raise TfLthError(f"expected a Keras model (tf_keras or Keras 3), got {type(model).__name__}")
    return flavour


def in_use() -> Flavour:
    """The flavour this process works with: the first whose package is imported, else Keras 3 (what a
    ``keras.datasets`` download or an image folder is read with where no flavour is chosen yet)."""
    return next((f for f in FLAVOURS.entries.values() if f.package in sys.modules), KERAS3)


def by_version(version) -> Flavour:
    """The flavour the runner's ``--keras`` names (2 or 3)."""
    for flavour in FLAVOURS.entries.values():
        if str(flavour.version) == str(version):
            return flavour
    raise TfLthError(f"keras = {version!r}: use {' or '.join(str(f.version) for f in FLAVOURS.entries.values())}")


__all__ = ["Flavour", "FLAVOURS", "TF_KERAS", "KERAS3", "of", "of_model", "in_use", "by_version"]
