"""The public API of earlier versions keeps working after the restructure (issue 26): every name in
``tf_lth.__all__``, the module paths of the flat layout (aliases of the modules they became, with a
DeprecationWarning), and the legacy names of ``tf_lth.training``."""
import importlib
import sys
import warnings

import pytest

import tf_lth

EARLIER_ALL = ["keras", "data", "datasets", "masks", "models", "networks", "rewind", "controls", "supermask",
               "training", "store", "distribute", "quantize", "LotteryTicket", "TicketConfig", "TrainingConfig",
               "ExperimentConfig", "TicketCallback", "FrozenMask", "TfLthError", "CONTROLS", "export_ticket",
               "save_ticket", "load_ticket"]


def test_every_public_name_resolves():
    assert set(EARLIER_ALL) <= set(tf_lth.__all__)
    for name in tf_lth.__all__:
        assert getattr(tf_lth, name) is not None, name
    assert tf_lth.masks.level_rates and tf_lth.networks.lenet_300_100 and tf_lth.data.load and tf_lth.store.save


@pytest.mark.parametrize("old", sorted(tf_lth.MOVED))
def test_module_paths_of_the_flat_layout_still_import(old):
    sys.modules.pop(f"tf_lth.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(f"tf_lth.{old}")
    assert module is importlib.import_module(f"tf_lth.{tf_lth.MOVED[old]}")
    assert any(issubclass(w.category, DeprecationWarning) and tf_lth.MOVED[old] in str(w.message) for w in caught)


def test_names_kept_where_a_module_became_a_package():
    from tf_lth import config, data, export, models, training
    from tf_lth.keras2 import training as keras2_training

    assert training.LOSS is keras2_training.LOSS and training.compile_round is keras2_training.compile_round
    assert callable(training.steps_per_epoch) and "mnist5k" in data.DATASETS and callable(data.load)
    assert callable(export.export_ticket) and "lenet_300_100" in models.MODELS and config.EXPORT_FORMATS
    from tf_lth.masks import level_rates  # noqa: F401  (an old path, a name of it)
    from tf_lth.lottery import LotteryTicket

    assert LotteryTicket is tf_lth.LotteryTicket
