"""Every option of tf-lth, declared once: a dataclass field whose metadata holds its help, choices and
parser, from which the command line's flags are generated (:func:`add_flags`).

:class:`TicketConfig` is how tickets are found, :class:`TrainingConfig` how each round trains, and
:class:`ExperimentConfig` composes the two with the model, data, rounds, controls and export.
``None`` means the model's recipe (:mod:`tf_lth.models`); :meth:`ExperimentConfig.resolved`
fills it in once, and that resolved config is what an experiment writes to config.json. Choices
come from the registries, and nothing here imports TensorFlow, so flag errors answer at once.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace

from tf_lth import controls as controls_lib
from tf_lth import datasets, masks, models
from tf_lth import rewind as rewind_lib
from tf_lth.errors import TfLthError
from tf_lth.registry import Registry

EXPORT_FORMATS = ("saved_model", "tflite", "int8", "fp16")
DEFAULT_EXPORT_FORMATS = ("saved_model", "tflite", "int8")
OPTIMIZERS: Registry[str] = Registry("optimizer")  # name -> class of keras.optimizers
OPTIMIZERS.add("adam", "Adam")
OPTIMIZERS.add("sgd", "SGD")


def csv(text: str) -> tuple:
    """``a,b`` -> ``("a", "b")``; ``none`` or empty -> ``()``."""
    return tuple(t for t in text.split(",") if t and t != "none")


def kind_rates(text: str) -> dict:
    try:
        return {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not KIND=RATE[,KIND=RATE...], e.g. dense=0.2,output=0.1")


def pair(separator: str, example: str):
    def parse(text: str) -> tuple:
        try:
            a, b = (int(v) for v in text.split(separator))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not of the form {example}") from None
        return a, b

    return parse


def option(default=None, help: str = "", *, choices=None, parse=None, metavar=None, shown=None, flag=None):
    """A config field and its flag: ``shown`` is the default as help prints it (default: ``default``),
    ``choices`` a registry or tuple, ``parse`` the flag's type, ``flag`` the flag's name if not
    ``--field-name`` (a boolean field gets ``--flag/--no-flag``)."""
    meta = {"help": help, "choices": choices, "parse": parse, "metavar": metavar, "shown": shown, "flag": flag}
    return field(default=default, metadata=meta)


def check_steps_per_execution(every: int, marks: dict) -> None:
    """One-line error unless each step of ``marks`` (name -> step, None if unknown) is a multiple of
    ``every``: with ``steps_per_execution=every`` Keras calls batch hooks once per ``every`` steps."""
    bad = [f"{name} ({n or 'unknown'})" for name, n in marks.items() if not n or n % every]
    if bad:
        raise TfLthError(f"steps_per_execution = {every} must divide {' and '.join(bad)}: Keras calls callbacks "
                         f"once per {every} steps; use steps_per_execution = 1 or a common divisor")


def _whole(name: str, value, least: int = 1) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
        raise TfLthError(f"{name} = {value} must be a whole number >= {least}")


@dataclass(frozen=True)
class TicketConfig:
    """How tickets are found; the defaults are Frankle & Carbin's LeNet-300-100 procedure.

    ``rate`` is the fraction of the *remaining* weights pruned per round (``None``: 0.2, or the
    model's rates in an experiment); with ``scope="layerwise"`` the output layer gets half of it
    unless ``rates`` says otherwise. ``rates`` maps a layer name or a kind (``"dense"``,
    ``"conv"``, ``"output"``) to its own rate. ``block_size=(4, 1)`` prunes 4 consecutive inputs of
    a Dense kernel together (1x4 blocks for TFLite's sparse kernel); ``m_by_n=(2, 4)`` keeps at
    most 2 of every 4 inputs (GPU 2:4).
    """

    rate: float | None = option(None, "fraction of remaining weights pruned per round, output layer at half",
                                parse=float, shown="the model's")
    rates: dict | None = option(None, "per layer kind or name, e.g. conv=0.1,dense=0.2,output=0.1",
                                parse=kind_rates, metavar="K=R,...")
    scope: str = option("layerwise", "layerwise rates or one global cut", choices=masks.SCOPES)
    rewind: str = option("init", f"where weights rewind to: {rewind_lib.forms()}", metavar="MODE")
    criterion: str = option("large_final", "mask criterion", choices=masks.CRITERIA)
    survivors: str = option("original", "what kept weights restart from", choices=rewind_lib.SURVIVORS)
    pruned: str = option("zero", "pruned weights: zero or frozen at init", choices=rewind_lib.PRUNED)
    ignore: tuple = option((), "layers never pruned, comma-separated", parse=csv, metavar="LAYERS", shown="none")
    block_size: tuple | None = option(None, "prune Dense kernels in blocks, 4x1 = 1x4 blocks for TFLite's sparse "
                                      "kernel", parse=pair("x", "4x1"), metavar="HxW")
    m_by_n: tuple | None = option(None, "keep at most N of every M inputs", parse=pair(":", "2:4"), metavar="N:M")
    seed: int = option(0, "random seed", parse=int)

    def __post_init__(self):
        rates = [("rate", self.rate)] if self.rate is not None else []
        for name, value in [*rates, *((f"rates[{k!r}]", v) for k, v in (self.rates or {}).items())]:
            if not isinstance(value, (int, float)) or not 0 < value < 1:
                raise TfLthError(f"{name} = {value} must be a fraction strictly between 0 and 1")
        masks.SCOPES.get(self.scope)
        if self.scope == "global" and self.rates:
            raise TfLthError("rates set per layer or kind need scope='layerwise': global pruning cuts all "
                             "layers at one threshold with `rate` (keep a layer dense with ignore=)")
        rewind_lib.parse(self.rewind)
        masks.CRITERIA.get(self.criterion)
        rewind_lib.SURVIVORS.get(self.survivors)
        if self.pruned not in rewind_lib.PRUNED:
            raise TfLthError(f"unknown pruned action {self.pruned!r}: choose one of {', '.join(rewind_lib.PRUNED)}")
        for name in ("block_size", "m_by_n"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != 2 or any(int(v) < 1 for v in value):
                    raise TfLthError(f"{name} must be two positive integers, got {value}")
                object.__setattr__(self, name, tuple(int(v) for v in value))
        if self.m_by_n and self.m_by_n[0] >= self.m_by_n[1]:
            raise TfLthError(f"m_by_n = {self.m_by_n}: keep n of m needs n < m, e.g. (2, 4)")
        object.__setattr__(self, "ignore", tuple(self.ignore or ()))

    @classmethod
    def from_dict(cls, d: dict):
        """The config of a JSON/YAML mapping; an unknown key is a one-line error."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise TfLthError(f"unknown config key(s) {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass(frozen=True)
class TrainingConfig:
    """How each round trains (``None``: the model's recipe, or chosen from the data as documented)."""

    epochs: int | None = option(None, "epochs per round", parse=int, shown="the model's, 10")
    iterations: int | None = option(None, "iterations per round instead of epochs", parse=int)
    batch_size: int | None = option(None, "batch size", parse=int, shown="the model's")
    optimizer: str | None = option(None, "optimizer", choices=OPTIMIZERS, shown="the model's, adam")
    learning_rate: float | None = option(None, "learning rate", parse=float, shown="the model's")
    momentum: float = option(0.0, "SGD momentum", parse=float)
    eval_every: int | None = option(None, "evaluate every N iterations (the papers use 100)", parse=int,
                                    metavar="N", shown="every epoch")
    # None: XLA on, except for convolutional models without a GPU, where only the optimizer's update
    # is compiled (XLA's CPU convolutions are ~1.6x slower than TensorFlow's on Conv-2)
    jit_compile: bool | None = option(None, "XLA for the whole training step", flag="--jit",
                                      shown="on, but for convolutional models without a GPU")
    early_bird: float | None = option(None, "stop a ticket's intermediate round once the mask next_round would "
                                      "draw changes in less than this fraction of the alive weights between "
                                      "evaluation points, early_bird_patience times in a row (You et al. 2020)", parse=float,
                                      metavar="EPS", shown="off")
    early_bird_patience: int = option(3, "evaluation points in a row below the early-bird EPS", parse=int, metavar="N")
    patience: int | None = option(None, "stop a ticket's intermediate round after N evaluation points without a "
                                  "lower validation loss", parse=int, metavar="N", shown="off")
    full_rounds: tuple = option((), "rounds that train to the end whatever the stop rules (the last always does)",
                                parse=lambda t: tuple(int(v) for v in csv(t)), metavar="K,...", shown="none")
    # training steps per call into TensorFlow (Keras' steps_per_execution); None: the most, up to
    # 100, that keep every evaluation point, θk step and epoch end on a call's end
    steps_per_execution: int | None = option(None, "training steps per call into TensorFlow", parse=int,
                                             metavar="N", shown="the most, up to 100, that keep every "
                                             "evaluation point, rewind step and epoch end")

    def __post_init__(self):
        if self.early_bird is not None and not 0 < self.early_bird < 1:
            raise TfLthError(f"early_bird = {self.early_bird} must be a fraction strictly between 0 and 1")
        _whole("early_bird_patience", self.early_bird_patience)
        _whole("patience", self.patience)
        object.__setattr__(self, "full_rounds", tuple(int(r) for r in self.full_rounds))
        if self.epochs is not None and self.iterations is not None:
            raise TfLthError("give epochs or iterations per round, not both")
        for name in ("epochs", "iterations", "batch_size", "eval_every", "steps_per_execution"):
            _whole(name, getattr(self, name))
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise TfLthError(f"learning_rate = {self.learning_rate} must be > 0")
        if self.optimizer is not None:
            OPTIMIZERS.get(self.optimizer)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines an experiment: model, data, rounds, controls and export, with a
    :class:`TicketConfig` and a :class:`TrainingConfig`. Build one from flat options (as flags and
    config files give them) with :meth:`from_dict`."""

    model: str = option("lenet_300_100", "network", choices=models.MODELS)
    dataset: str = option("mnist5k", "dataset (mnist5k works offline)", choices=datasets.DATASETS)
    data_dir: str | None = option(None, f"folder of the dataset's files (or ${datasets.DATA_DIR_ENV})", metavar="DIR",
                                  shown="the system copy or Keras' cache/download")
    validation: int | None = option(None, "examples held out of train for early stopping", parse=int,
                                    shown="the dataset's")
    rounds: int = option(10, "pruning rounds after the dense one", parse=int)
    controls: tuple = option(("random_reinit",), f"controls per round: {', '.join(controls_lib.CONTROLS)} or none",
                             parse=csv, metavar="LIST", shown="random_reinit")
    export: tuple = option(DEFAULT_EXPORT_FORMATS, f"formats of the final ticket: {', '.join(EXPORT_FORMATS)} "
                           "or none", parse=csv, metavar="FORMATS", shown=",".join(DEFAULT_EXPORT_FORMATS))
    seed: int = option(0, "random seed", parse=int)
    ticket: TicketConfig = field(default_factory=TicketConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self):
        models.spec(self.model)
        datasets.DATASETS.get(self.dataset)
        _whole("rounds", self.rounds, 0)
        _whole("validation", self.validation, 0)
        object.__setattr__(self, "controls", controls_lib.CONTROLS.check(self.controls))
        object.__setattr__(self, "export", tuple(self.export))
        bad = [f for f in self.export if f not in EXPORT_FORMATS]
        if bad:
            raise TfLthError(f"unknown export {', '.join(bad)}: choose from {', '.join(EXPORT_FORMATS)}")
        if self.training.steps_per_execution:
            marks = {"eval_every": self.training.eval_every, "the rewind step": rewind_lib.parse(self.ticket.rewind).iteration}
            check_steps_per_execution(self.training.steps_per_execution, {k: n for k, n in marks.items() if n})

    @classmethod
    def from_dict(cls, options: dict) -> "ExperimentConfig":
        """The config of flat options (``rate``, ``epochs``, ``model``, ...) or of a config.json
        (``ticket`` and ``training`` nested); an unknown key is a one-line error."""
        options = {k.replace("-", "_"): v for k, v in options.items()}
        parts = {"ticket": dict(options.pop("ticket", None) or {}), "training": dict(options.pop("training", None) or {})}
        for part, kind in (("ticket", TicketConfig), ("training", TrainingConfig)):
            for f in fields(kind):
                if f.name in options and f.name != "seed":
                    parts[part][f.name] = options.pop(f.name)
        unknown = set(options) - {f.name for f in fields(cls)}
        if unknown:
            raise TfLthError(f"unknown config key(s) {', '.join(sorted(unknown))}")
        return cls(**options, ticket=TicketConfig.from_dict(parts["ticket"]), training=TrainingConfig(**parts["training"]))

    def resolved(self) -> "ExperimentConfig":
        """This config with every ``None`` that the model's recipe decides filled in (what config.json
        holds): batch size, optimizer, learning rate, epochs, rates; the ticket's seed is ours."""
        spec, t, tr = models.spec(self.model), self.ticket, self.training
        by_layer = t.rate is None and t.scope == "layerwise"  # the spec's per-layer rates
        rates = t.rates if t.rates is not None else (dict(spec.rates) if by_layer else None)
        rate = t.rate if t.rate is not None else spec.rates.get("dense", 0.2)
        training = replace(tr, batch_size=tr.batch_size or spec.batch_size, optimizer=tr.optimizer or spec.optimizer,
                           learning_rate=tr.learning_rate or spec.learning_rate,
                           epochs=None if tr.iterations else (tr.epochs or spec.epochs))
        return replace(self, ticket=replace(t, rate=rate, rates=rates, seed=self.seed), training=training)

    def to_dict(self) -> dict:
        """JSON-ready (tuples as lists), ``ticket`` and ``training`` nested."""
        return json.loads(json.dumps(asdict(self)))


def add_flags(parser, cls, only=None, shown: dict | None = None, seen: set | None = None) -> None:
    """Add a flag per field of ``cls`` (nested configs included; a name already seen, like the ticket's
    ``seed``, once; only the fields named in ``only`` if given; ``shown`` overrides defaults as help
    prints them) whose default is ``SUPPRESS``, so that a flag not given leaves the config file's
    value or the field's default."""
    seen, shown = set() if seen is None else seen, shown or {}
    for f in fields(cls):
        if f.default_factory is not MISSING and is_dataclass(f.default_factory):
            add_flags(parser, f.default_factory, only, shown, seen)
            continue
        if f.name in seen or (only is not None and f.name not in only):
            continue
        seen.add(f.name)
        meta = f.metadata
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        default = shown.get(f.name, meta.get("shown") or ("none" if f.default is None else f.default))
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS, "help": f"{meta.get('help', '')} (default: {default})"}
        if meta.get("choices") is not None:
            choices = meta["choices"]
            kwargs["choices"] = choices.names() if isinstance(choices, Registry) else tuple(choices)
        if f.type in ("bool | None", "bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = meta.get("parse") or str
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        parser.add_argument(flag, **kwargs)
