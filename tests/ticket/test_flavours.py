"""The Flavour records (tf_lth.ticket.flavours): the only dispatch on Keras flavour. A model's flavour comes
from its classes' modules; each record hands out its masked model, callback, training kit and export route
from its own package, loading it on first use."""
import sys

import pytest

from tf_lth.errors import TfLthError
from tf_lth.ticket import flavours
from tf_lth.training.fit_round import TrainingKit


def test_a_models_flavour_is_read_from_its_classes():
    from tf_lth.keras2 import keras as tf_keras
    import keras as keras3

    assert flavours.of(tf_keras.Sequential()) is flavours.TF_KERAS
    assert flavours.of(keras3.Sequential()) is flavours.KERAS3

    class Mine(keras3.Model):  # a subclassed model: its own class is the user's, a base is Keras'
        pass

    assert flavours.of(Mine()) is flavours.KERAS3 and flavours.of(object()) is None
    with pytest.raises(TfLthError, match="expected a Keras model .* got object"):
        flavours.of_model(object())


def test_each_record_hands_out_its_own_pieces():
    for flavour, version in ((flavours.TF_KERAS, 2), (flavours.KERAS3, 3)):
        assert flavours.by_version(version) is flavour and flavours.FLAVOURS.get(flavour.name) is flavour
        assert isinstance(flavour.training, TrainingKit) and flavour.training.keras is flavour.keras
        assert flavour.callback.__module__ == f"{flavour.package}.callback"
        assert flavour.module("export").export.__module__ == f"{flavour.package}.export"
    with pytest.raises(TfLthError, match="keras = 4"):
        flavours.by_version(4)
    assert flavours.in_use() in (flavours.TF_KERAS, flavours.KERAS3) and "tf_lth.keras2" in sys.modules


def test_a_third_flavour_is_one_record():
    """What the runner, the ticket and the export ask of a flavour is its record: a new one registered
    under its name is found by name and version (its package would hold the modules the contract names)."""
    extra = flavours.Flavour("torch_keras3", 4, "tf_lth.keras3", ("torch_keras",))
    registry = flavours.Registry("Keras flavour")
    for f in (*flavours.FLAVOURS.entries.values(), extra):
        registry.add(f.name, f)
    assert registry.get("torch_keras3").version == 4 and str(extra) == "torch_keras3"
