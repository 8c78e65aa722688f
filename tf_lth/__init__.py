"""tf-lth: find lottery tickets in Keras models (tf_keras with TF-MOT, or Keras 3) and ship them as small models.

The names below load on first use (PEP 562), so that ``import tf_lth`` and the command line's
``--help`` do not wait for TensorFlow; ``from tf_lth import LotteryTicket`` works as usual.
"""
import importlib

__version__ = "0.1.0"

# public name -> (module, attribute; None for the module itself)
_LAZY = {
    "keras": ("tf_lth.keras2", "keras"),
    "data": ("tf_lth.data", None),
    "datasets": ("tf_lth.datasets", None),
    "masks": ("tf_lth.masks", None),
    "models": ("tf_lth.models", None),
    "networks": ("tf_lth.networks", None),
    "rewind": ("tf_lth.rewind", None),
    "controls": ("tf_lth.controls", None),
    "supermask": ("tf_lth.supermask", None),
    "training": ("tf_lth.training", None),
    "store": ("tf_lth.store", None),
    "distribute": ("tf_lth.distribute", None),
    "quantize": ("tf_lth.quantize", None),
    "LotteryTicket": ("tf_lth.lottery", "LotteryTicket"),
    "TicketConfig": ("tf_lth.config", "TicketConfig"),
    "TrainingConfig": ("tf_lth.config", "TrainingConfig"),
    "ExperimentConfig": ("tf_lth.config", "ExperimentConfig"),
    "TicketCallback": ("tf_lth.callbacks", "TicketCallback"),
    "FrozenMask": ("tf_lth.schedules", "FrozenMask"),
    "TfLthError": ("tf_lth.errors", "TfLthError"),
    "CONTROLS": ("tf_lth.controls", "CONTROLS"),
    "export_ticket": ("tf_lth.export", "export_ticket"),
    "save_ticket": ("tf_lth.store", "save"),
    "load_arrays": ("tf_lth.user_data", "load_arrays"),
    "load_ticket": ("tf_lth.store", "load"),
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tf_lth' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    value = value if attribute is None else getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_LAZY])
