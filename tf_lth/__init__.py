"""tf-lth: find lottery tickets in Keras models (tf_keras with TF-MOT, or Keras 3) and ship them as small models.

The package is laid out as the procedure (``docs/layout.md``): ``pruning/`` (numpy), ``config/``, ``ticket/``
and ``training/`` (no Keras), one package per Keras flavour (``keras2/``, ``keras3/``), ``data/``, ``models/``,
``export/`` and ``runner/``. This facade names what a user needs; the names load on first use (PEP 562), so
that ``import tf_lth`` and the command line's ``--help`` do not wait for TensorFlow, and
``from tf_lth import LotteryTicket`` works as usual. Module paths of earlier versions (``tf_lth.masks``,
``tf_lth.networks``, ``tf_lth.lottery``, ...) still import: they are the modules they became (a
``DeprecationWarning`` says which).
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

# public name -> (module, attribute; None for the module itself)
_LAZY = {
    "keras": ("tf_lth.keras2", "keras"),
    "data": ("tf_lth.data", None),
    "datasets": ("tf_lth.data.specs", None),
    "masks": ("tf_lth.pruning.selection", None),
    "models": ("tf_lth.models", None),
    "networks": ("tf_lth.models.networks", None),
    "rewind": ("tf_lth.pruning.rewind", None),
    "controls": ("tf_lth.pruning.controls", None),
    "supermask": ("tf_lth.keras2.supermask", None),
    "training": ("tf_lth.training", None),
    "store": ("tf_lth.ticket.store", None),
    "distribute": ("tf_lth.keras2.distribute", None),
    "quantize": ("tf_lth.export.quantize", None),
    "LotteryTicket": ("tf_lth.ticket.ticket", "LotteryTicket"),
    "TicketConfig": ("tf_lth.config", "TicketConfig"),
    "TrainingConfig": ("tf_lth.config", "TrainingConfig"),
    "ExperimentConfig": ("tf_lth.config", "ExperimentConfig"),
    "TicketCallback": ("tf_lth.keras2.callback", "TicketCallback"),
    "FrozenMask": ("tf_lth.keras2.frozen_mask", "FrozenMask"),
    "TfLthError": ("tf_lth.errors", "TfLthError"),
    "TfLthWarning": ("tf_lth.errors", "TfLthWarning"),
    "CONTROLS": ("tf_lth.pruning.controls", "CONTROLS"),
    "export_ticket": ("tf_lth.export", "export_ticket"),
    "shrink": ("tf_lth.export.shrink", "shrink"),
    "save_ticket": ("tf_lth.ticket.store", "save"),
    "load_ticket": ("tf_lth.ticket.store", "load"),
    "load_arrays": ("tf_lth.data.user", "load_arrays"),
}
__all__ = list(_LAZY)

# module paths of the flat layout before the subpackages -> the module each became
MOVED = {
    "io": "util.io", "noise": "util.native_log", "options": "config.flags", "masks": "pruning.selection",
    "rates": "pruning.rates", "rewind": "pruning.rewind", "controls": "pruning.controls", "stopping": "pruning.stopping",
    "recipe": "training.recipe", "plan": "training.fit_round", "rounds": "training.round_logic",
    "distribute": "keras2.distribute", "lottery": "ticket.ticket", "store": "ticket.store",
    "flavours": "ticket.flavours", "schedules": "keras2.frozen_mask", "wrapper": "keras2.wrapper",
    "masked": "keras2.masked", "callbacks": "keras2.callback", "supermask": "keras2.supermask",
    "layer_masks": "keras3.layer_masks", "masked3": "keras3.masked", "callbacks3": "keras3.callback",
    "training3": "keras3.training", "export3": "keras3.export", "tflite": "export.tflite",
    "quantize": "export.quantize", "datasets": "data.specs", "user_data": "data.user",
    "image_folders": "data.image_folders", "augment": "data.augment", "networks": "models.networks",
    "experiment": "runner.experiment", "branches": "runner.branches", "replicates": "runner.replicates",
    "results": "runner.results", "plots": "runner.plots",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import tf_lth.<old>`` gives the module ``tf_lth.<new>`` itself (one module, two names)."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, old = fullname.partition(".")
        if prefix == __name__ and old in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = f"{__name__}.{MOVED[spec.name.partition('.')[2]]}"
        warnings.warn(f"{spec.name} is {new} now", DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module):
        """The module is the moved one, already executed."""


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())


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
