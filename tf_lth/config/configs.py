"""Every option of tf-lth, declared once: a dataclass field whose metadata holds its help, choices and
parser, from which the command line's flags are generated (:func:`tf_lth.config.flags.add_flags`).

:class:`TicketConfig` is how tickets are found, :class:`TrainingConfig` how each round trains, and
:class:`ExperimentConfig` composes the two with the model, data, rounds, controls and export.
``None`` means the model's recipe (:mod:`tf_lth.models.specs`); :meth:`ExperimentConfig.resolved`
fills it in once, and that resolved config is what an experiment writes to config.json. Choices
come from the registries, and nothing here imports TensorFlow, so flag errors answer at once.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, fields, replace

from tf_lth.pruning import controls as controls_lib
from tf_lth.data import specs as datasets
from tf_lth.training import cluster as distribute
from tf_lth.pruning import selection as masks
from tf_lth.models import specs as models
from tf_lth.training import recipe
from tf_lth.data import user as user_data
from tf_lth.data import input_scale as input_scale_lib
from tf_lth.pruning import rewind as rewind_lib
from tf_lth.pruning import units as units_lib
from tf_lth.errors import TfLthError
from tf_lth.config.flags import check_keras3, check_steps_per_execution, csv, kind_rates, option, pair, whole
from tf_lth.registry import Registry
from tf_lth.data.user import RESIZE_MODES

EXPORT_FORMATS = ("saved_model", "tflite", "int8", "fp16", "int8_full", "int8_qat", "shrunk")
DEFAULT_EXPORT_FORMATS = ("saved_model", "tflite", "int8")
OPTIMIZE_FOR = ("latency", "size")  # how each exported TFLite file stores its weights (tf_lth.export.formats)
EARLY_BIRD_EPS = 0.105  # --early-bird without a value: measured on Fashion-MNIST (README), 0.48x the iterations
REWIND_AUTO = "auto"  # rewind: the runner picks the point by an instability scan (tf_lth.runner.instability)
OPTIMIZERS: Registry[str] = Registry("optimizer")  # name -> class of keras.optimizers
OPTIMIZERS.add("adam", "Adam")
OPTIMIZERS.add("sgd", "SGD")
WEIGHT_DECAY_KINDS = ("l2", "decoupled")
# training fields that default (None) to the model's recipe (models.ModelSpec has each)
RECIPE = ("batch_size", "optimizer", "learning_rate", "momentum", "schedule", "milestones", "gamma", "warmup",
          "weight_decay", "augment")


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
    rewind: str = option("init", f"where weights rewind to: {rewind_lib.forms()} | auto (tf-lth run: the smallest "
                         "stable point of an instability scan of the dense network, docs/instability.md)", metavar="MODE")
    criterion: str = option("large_final", "mask criterion", choices=masks.CRITERIA)
    survivors: str = option("original", "what kept weights restart from", choices=rewind_lib.SURVIVORS)
    pruned: str = option("zero", "pruned weights: zero or frozen at init", choices=rewind_lib.PRUNED)
    ignore: tuple = option((), "layers never pruned, comma-separated", parse=csv, metavar="LAYERS", shown="none")
    block_size: tuple | None = option(None, "prune Dense kernels in blocks, 4x1 = 1x4 blocks for TFLite's sparse "
                                      "kernel", parse=pair("x", "4x1"), metavar="HxW")
    m_by_n: tuple | None = option(None, "keep at most N of every M inputs", parse=pair(":", "2:4"), metavar="N:M")
    granularity: str = option("weight", "what a round removes: single weights, whole units (neurons, filters) or the "
                              "weight mask refilled into units (Chen et al. 2022)", choices=units_lib.GRANULARITIES)
    unit_score: str | None = option(None, "how units are ranked under granularity unit/refill", shown="l1 for unit, "
                                    "refill for refill", choices=units_lib.UNIT_SCORES)
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
        # parsed once: rewind_mode; "auto" is the runner's to resolve (tf_lth.runner.instability)
        object.__setattr__(self, "_rewind_mode", None if self.rewind == REWIND_AUTO else rewind_lib.parse(self.rewind))
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
        if self.m_by_n:
            object.__setattr__(self, "m_by_n", masks.NofM(*self.m_by_n))
            if self.m_by_n.n >= self.m_by_n.m:
                raise TfLthError(f"m_by_n = {tuple(self.m_by_n)}: keep n of m needs n < m, e.g. (2, 4)")
        object.__setattr__(self, "ignore", tuple(self.ignore or ()))
        self._check_granularity()

    def _check_granularity(self) -> None:
        """Unit and refill rounds remove whole channels: the options that shape single weights do not apply."""
        units_lib.GRANULARITIES.get(self.granularity)
        if self.unit_score is not None:
            units_lib.UNIT_SCORES.get(self.unit_score)
        if self.granularity == "weight":
            if self.unit_score is not None:
                raise TfLthError(f"unit_score={self.unit_score!r} ranks whole units: use it with granularity='unit' "
                                 "or 'refill'")
            return
        clash = [name for name, bad in (("block_size", self.block_size), ("m_by_n", self.m_by_n),
                                        ("pruned='frozen'", self.pruned == "frozen")) if bad]
        if clash:
            raise TfLthError(f"granularity={self.granularity!r} removes whole units, which {', '.join(clash)} cannot "
                             "shape: drop it or use granularity='weight'")
        if self.granularity == "unit":
            if self.scope == "global":
                raise TfLthError("granularity='unit' keeps a fraction of each layer's units: use scope='layerwise', "
                                 "or granularity='refill' to refill a global weight cut into units")
            if self.criterion != "large_final":
                raise TfLthError(f"criterion={self.criterion!r} ranks single weights; granularity='unit' ranks units by "
                                 "unit_score (l1, l2, bn_gamma): drop criterion or use granularity='refill'")
            if self.unit_score == "refill":
                raise TfLthError("unit_score='refill' counts a weight mask's survivors: use it with granularity='refill'")

    @property
    def rewind_mode(self) -> rewind_lib.Rewind:
        """:attr:`rewind` as its registered :class:`~tf_lth.pruning.rewind.Rewind` (parsed once); ``auto`` has
        none until the runner's instability scan picks a point."""
        if self._rewind_mode is None:
            raise TfLthError("rewind 'auto' is chosen by the runner (tf-lth run --rewind auto scans the dense network "
                             "first): give a LotteryTicket a rewind point, init or iteration:K")
        return self._rewind_mode

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

    epochs: int | None = option(None, "epochs per round (N or Nep)", parse=lambda t: recipe.length(t, "ep"),
                                shown="the model's, 10")
    iterations: int | None = option(None, "iterations per round instead of epochs, exactly (N or Nit)",
                                    parse=lambda t: recipe.length(t, "it"))
    batch_size: int | None = option(None, "batch size", parse=int, shown="the model's")
    optimizer: str | None = option(None, "optimizer", choices=OPTIMIZERS, shown="the model's, adam")
    learning_rate: float | None = option(None, "base learning rate", parse=float, shown="the model's")
    momentum: float | None = option(None, "SGD momentum", parse=float, shown="the model's, 0")
    schedule: str | None = option(None, "learning-rate schedule over a round (by the optimizer's step, so lr "
                                  "rewinding replays it)", choices=recipe.SCHEDULES, shown="the model's, constant")
    milestones: tuple | None = option(None, "steps where the step schedule multiplies the rate by gamma, e.g. "
                                      "80ep,120ep or 32000it", parse=recipe.lengths, metavar="L,...",
                                      shown="the model's")
    gamma: float | None = option(None, "factor of the step schedule at each milestone", parse=float,
                                 shown="the model's, 0.1")
    warmup: str | int | None = option(None, "linear learning-rate warm-up over this length (Nep or Nit)",
                                      parse=recipe.length, metavar="LENGTH", shown="the model's, none")
    weight_decay: float | None = option(None, "weight decay", parse=float, shown="the model's, 0")
    weight_decay_kind: str = option("l2", "l2: added to the loss, so to the gradient (PyTorch's SGD, OpenLTH); "
                                    "decoupled: the optimizer shrinks weights by lr*decay (Keras' weight_decay, "
                                    "AdamW)", choices=WEIGHT_DECAY_KINDS)
    augment: bool | None = option(None, "random crops (4-pixel padding) and horizontal flips of the training "
                                  "images, seeded", shown="the model's")
    eval_every: int | None = option(None, "evaluate every N iterations (the papers use 100)", parse=int,
                                    metavar="N", shown="every epoch")
    # None: XLA on, except for convolutional models without a GPU, where only the optimizer's update
    # is compiled (XLA's CPU convolutions are ~1.6x slower than TensorFlow's on Conv-2)
    jit_compile: bool | None = option(None, "XLA for the whole training step", flag="--jit",
                                      shown="on, but for convolutional models without a GPU")
    early_bird: float | None = option(None, "stop a ticket's intermediate round once the mask next_round would "
                                      "draw changes in less than this fraction of the alive weights between "
                                      "evaluation points, early_bird_patience times in a row (You et al. 2020); "
                                      f"--early-bird alone: {EARLY_BIRD_EPS}, measured on Fashion-MNIST (0.48x the "
                                      "iterations, -0.15 pp)", parse=float, metavar="EPS", shown="off",
                                      const=EARLY_BIRD_EPS)
    early_bird_patience: int = option(2, "evaluation points in a row below the early-bird EPS", parse=int, metavar="N")
    early_bird_window: int = option(5, "early-bird distance: the largest to the last N candidates (You et al.'s "
                                    "FIFO; 1: the previous one only)", parse=int, metavar="N")
    patience: int | None = option(None, "stop a ticket's intermediate round after N evaluation points without a "
                                  "lower validation loss", parse=int, metavar="N", shown="off")
    full_rounds: tuple = option((), "rounds that train to the end whatever the stop rules (the last always does)",
                                parse=lambda t: tuple(int(v) for v in csv(t)), metavar="K,...", shown="none")
    # 2: measured on Fashion-MNIST (README): the last masks decide the final ticket's accuracy
    full_tail: int = option(2, "the last N rounds before the final one train to the end whatever the stop rules "
                            "(they draw the final ticket's mask)", parse=int, metavar="N")
    # training steps per call into TensorFlow (Keras' steps_per_execution); None: the most, up to
    # 100, that keep every evaluation point, θk step and epoch end on a call's end
    steps_per_execution: int | None = option(None, "training steps per call into TensorFlow", parse=int,
                                             metavar="N", shown="the most, up to 100, that keep every "
                                             "evaluation point, rewind step and epoch end")
    mixed_precision: bool = option(False, "mixed precision: float16 compute with loss scaling on a GPU, bfloat16 on "
                                   "CPUs; variables, loss and export stay float32", shown="off")
    scale_lr: bool = option(False, "scale the learning rate by the batch size over the model's (linear rule)",
                            shown="off, the learning rate is kept")

    def __post_init__(self):
        if self.early_bird is not None and not 0 < self.early_bird < 1:
            raise TfLthError(f"early_bird = {self.early_bird} must be a fraction strictly between 0 and 1")
        whole("early_bird_patience", self.early_bird_patience)
        whole("early_bird_window", self.early_bird_window)
        whole("patience", self.patience)
        whole("full_tail", self.full_tail, least=0)
        object.__setattr__(self, "full_rounds", tuple(int(r) for r in self.full_rounds))
        if self.epochs is not None and self.iterations is not None:
            raise TfLthError("give epochs or iterations per round, not both")
        try:  # config files may write lengths as text: 160ep, 63000it
            for name, unit in (("epochs", "ep"), ("iterations", "it"), ("warmup", None)):
                if getattr(self, name) is not None:
                    object.__setattr__(self, name, recipe.length(getattr(self, name), unit))
            if self.milestones is not None:
                object.__setattr__(self, "milestones", recipe.lengths(self.milestones))
        except argparse.ArgumentTypeError as e:
            raise TfLthError(str(e)) from None
        if self.schedule is not None:
            recipe.SCHEDULES.get(self.schedule)
        if self.weight_decay_kind not in WEIGHT_DECAY_KINDS:
            raise TfLthError(f"unknown weight_decay_kind {self.weight_decay_kind!r}: use {' or '.join(WEIGHT_DECAY_KINDS)}")
        for name in ("weight_decay", "momentum"):
            if getattr(self, name) is not None and not getattr(self, name) >= 0:
                raise TfLthError(f"{name} = {getattr(self, name)} must be >= 0")
        for name in ("epochs", "iterations", "batch_size", "eval_every", "steps_per_execution"):
            whole(name, getattr(self, name))
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise TfLthError(f"learning_rate = {self.learning_rate} must be > 0")
        if self.optimizer is not None:
            OPTIMIZERS.get(self.optimizer)


def rewind_points(value) -> tuple:
    """Rewind points as flags and config files give them (``0,100,500`` or a list): optimizer steps >= 0,
    sorted, each once; anything else is a one-line error."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        points = sorted({int(str(p).strip()) for p in parts if str(p).strip()})
    except ValueError:
        raise TfLthError(f"rewind points {value!r}: give optimizer steps like 0,100,500") from None
    if not points or points[0] < 0:
        raise TfLthError(f"rewind points {value!r}: give one or more optimizer steps >= 0, like 0,100,500")
    return tuple(points)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines an experiment: model, data, rounds, controls and export, with a
    :class:`TicketConfig` and a :class:`TrainingConfig`. Build one from flat options (as flags and
    config files give them) with :meth:`from_dict`."""

    model: str = option("lenet_300_100", f"network: {', '.join(models.MODELS.names())}, or {models.USER_MODEL_HOWTO}",
                        metavar="MODEL")
    dataset: str = option("mnist5k", f"dataset: {', '.join(datasets.DATASETS.names())} (offline), npz:PATH (arrays "
                          "x_train, y_train, x_test, y_test) or folder:PATH (a sub-folder of images per class)",
                          metavar="DATA")
    image_size: tuple | None = option(None, "resize the images to HxW (e.g. 32x32: Fashion-MNIST for the CIFAR models)",
                                      parse=pair("x", "32x32"), metavar="HxW", shown="as stored")
    channels: int | None = option(None, "image channels: 1, or 3 (gray repeated)", parse=int, shown="as stored")
    resize: str = option("scale", "how --image-size is reached: scale (bilinear) or pad (zeros around the "
                         "centre, or a centre crop)", choices=RESIZE_MODES)
    data_dir: str | None = option(None, f"folder of the dataset's files (or ${datasets.DATA_DIR_ENV})", metavar="DIR",
                                  shown="the system copy or Keras' cache/download")
    validation: int | None = option(None, "examples held out of train for early stopping", parse=int,
                                    shown="the dataset's")
    rounds: int = option(10, "pruning rounds after the dense one", parse=int)
    controls: tuple = option(("random_reinit",), f"controls per round: {', '.join(controls_lib.CONTROLS)} or none",
                             parse=csv, metavar="LIST", shown="random_reinit")
    export: tuple = option(DEFAULT_EXPORT_FORMATS, f"formats of the final ticket: {', '.join(EXPORT_FORMATS)} "
                           "or none (a format named here that fails its check fails the run; a default one is "
                           "left out with a warning)", parse=csv, metavar="FORMATS",
                           shown=",".join(DEFAULT_EXPORT_FORMATS))
    optimize_for: str = option("latency", "how each exported TFLite file stores its weights: latency (sparse or "
                               "dense, whichever runs faster, measured) or size (the smaller file)",
                               choices=OPTIMIZE_FOR)
    input_scale: str | None = option(None, "pixel range the model is fed: unit (pixels / 255, in [0, 1]) or raw "
                                     "(0-255)", choices=tuple(input_scale_lib.SCALES),
                                     shown="raw if the model starts with Rescaling or a Normalization adapted to "
                                     "0-255 pixels, else unit")
    seed: int = option(0, "random seed", parse=int)
    strategy: str = option("default", "tf.distribute strategy: one device, mirrored over this machine's GPUs (or "
                           "--devices), multi_worker over the machines TF_CONFIG names", choices=distribute.STRATEGIES,
                           shown="default, one device")
    devices: tuple = option((), "devices of --strategy mirrored, e.g. GPU:0,GPU:1", parse=csv, metavar="LIST",
                            shown="every visible GPU, else the CPU")
    keras: int = option(2, "Keras flavour: 2 (tf_keras, TF-MOT) or 3 (Keras 3, TensorFlow backend)", choices=(2, 3),
                        parse=int)
    rewind_points: tuple | None = option(None, "the rewind points (optimizer steps) an instability scan tries: "
                                         "--rewind auto and tf-lth instability", parse=rewind_points,
                                         metavar="K,...", shown="0 and 1%%, 3%%, 10%% of a round's steps, rounded down "
                                         "to 1, 2 or 5 times a power of ten")
    rewind_threshold: float = option(0.02, "the error barrier under which a rewind point is stable (Frankle et al. "
                                     "2020: 2%%)", parse=float, metavar="X")
    ticket: TicketConfig = field(default_factory=TicketConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self):
        models.spec(self.model)
        user_data.resolve(self.dataset)
        if self.image_size is not None:  # "32x32" in a config file, [32, 32] in config.json
            try:
                size = pair("x", "32x32")(self.image_size) if isinstance(self.image_size, str) else self.image_size
                object.__setattr__(self, "image_size", tuple(int(v) for v in size))
            except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
                raise TfLthError(f"image_size = {self.image_size!r}: {e}; write HxW, e.g. 32x32") from None
        if self.channels not in (None, 1, 3):
            raise TfLthError(f"channels = {self.channels}: use 1 or 3")
        if self.resize not in RESIZE_MODES:
            raise TfLthError(f"unknown resize {self.resize!r}: use {' or '.join(RESIZE_MODES)}")
        object.__setattr__(self, "devices", tuple(self.devices))
        distribute.check_strategy(self.strategy, self.devices)  # TF_CONFIG and replicas: when the run starts
        check_keras3(self)
        whole("rounds", self.rounds, 0)
        whole("validation", self.validation, 0)
        object.__setattr__(self, "controls", controls_lib.CONTROLS.check(self.controls))
        object.__setattr__(self, "export", tuple(self.export))
        input_scale_lib.check(self.input_scale)
        if self.optimize_for not in OPTIMIZE_FOR:
            raise TfLthError(f"unknown optimize_for {self.optimize_for!r}: use {' or '.join(OPTIMIZE_FOR)}")
        bad = [f for f in self.export if f not in EXPORT_FORMATS]
        if bad:
            raise TfLthError(f"unknown export {', '.join(bad)}: choose from {', '.join(EXPORT_FORMATS)}")
        if self.rewind_points is not None:
            object.__setattr__(self, "rewind_points", rewind_points(self.rewind_points))
        if not isinstance(self.rewind_threshold, (int, float)) or not 0 < self.rewind_threshold < 1:
            raise TfLthError(f"rewind_threshold = {self.rewind_threshold!r} must be a fraction between 0 and 1, e.g. 0.02")
        if self.training.steps_per_execution:
            auto = self.ticket.rewind == REWIND_AUTO  # the scan's points are checked when it runs
            marks = {"eval_every": self.training.eval_every,
                     "the rewind step": None if auto else self.ticket.rewind_mode.iteration}
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
        for key, value in models.spec(options.get("model", cls.model)).ticket.items():
            parts["ticket"].setdefault(key, value)  # the model's recipe (scope, rewind, ...) unless given
        return cls(**options, ticket=TicketConfig.from_dict(parts["ticket"]), training=TrainingConfig(**parts["training"]))

    @classmethod
    def from_folder(cls, d: dict) -> "ExperimentConfig":
        """A run folder's config.json: :meth:`from_dict`, except that a folder written before ``full_tail``
        existed, with a stop rule on, let its last rounds stop too (tail 0), so resuming it says so."""
        tr = d.get("training")
        if isinstance(tr, dict) and "full_tail" not in tr and (tr.get("early_bird") is not None or tr.get("patience")):
            d = {**d, "training": {**tr, "full_tail": 0}}
        return cls.from_dict(d)

    @classmethod
    def of_run(cls, run_dir, required=("config.json",), fix: str = "give the output folder of a `tf-lth run`"):
        """The resolved config of the run folder ``run_dir``, which must hold the files ``required``; a one-line
        error saying ``fix`` otherwise (branches and instability scans start from a run folder)."""
        from pathlib import Path

        from tf_lth.util.io import read_json

        run_dir = Path(run_dir)
        missing = [n for n in required if not (run_dir / n).exists()]
        if missing:
            raise TfLthError(f"{run_dir} is not a tf-lth run folder (no {', '.join(missing)}): {fix}")
        try:
            return cls.from_folder(read_json(run_dir / "config.json")).resolved()
        except (TfLthError, TypeError) as e:
            raise TfLthError(f"{run_dir / 'config.json'} holds no config of this version ({e})") from None

    def resolved(self) -> "ExperimentConfig":
        """This config with every ``None`` that the model's recipe decides filled in (what config.json
        holds): batch size, optimizer, learning rate and schedule, epochs, rates, ...; the ticket's
        seed is ours."""
        spec, t, tr = models.spec(self.model), self.ticket, self.training
        by_layer = t.rate is None and t.scope == "layerwise"  # the spec's per-layer rates
        rates = t.rates if t.rates is not None else (dict(spec.rates) if by_layer else None)
        rate = t.rate if t.rate is not None else spec.rates.get("dense", 0.2)
        recipe_fields = {name: getattr(spec, name) for name in RECIPE if getattr(tr, name) is None}
        training = replace(tr, **recipe_fields, epochs=None if tr.iterations else (tr.epochs or spec.epochs))
        return replace(self, ticket=replace(t, rate=rate, rates=rates, seed=self.seed), training=training)

    def to_dict(self) -> dict:
        """JSON-ready (tuples as lists), ``ticket`` and ``training`` nested."""
        return json.loads(json.dumps(asdict(self)))
