"""The ``tf-lth`` command: argument parsing and one-line errors around the library.

Each subcommand is one entry of :data:`COMMANDS`: a help line, a function that adds its arguments
to an ``argparse`` parser, and a handler that takes the parsed namespace and returns an exit code.
Adding a subcommand (``run``, ``export``, ...) is adding an entry; :func:`main` does the rest.

Every error the user can fix is reported as one line on stderr with exit code 2: argparse errors
(unknown flag, unknown model or dataset) as ``tf-lth <command>: error: ...``, and
:class:`~tf_lth.errors.TfLthError` from the library as ``tf-lth: error: ...``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from tf_lth import data, models
from tf_lth.keras2 import keras
from tf_lth.errors import TfLthError

PROG = "tf-lth"
EXIT_USAGE = 2


class Command(NamedTuple):
    """A subcommand: its help line, how it adds its arguments, and what it runs."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (usage is one ``--help`` away)."""

    def error(self, message: str):
        message = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def add_data_arguments(parser: argparse.ArgumentParser, default_dataset: str = "mnist5k") -> None:
    """``--dataset`` and ``--data-dir``, shared by the subcommands that load data."""
    parser.add_argument("--dataset", default=default_dataset, choices=data.DATASETS,
                        help="dataset (default: %(default)s; mnist5k works offline)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help=f"folder with the dataset's standard files (default: ${data.DATA_DIR_ENV}, "
                             "the system copy, or Keras' cache/download)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--batch-size`` and ``--learning-rate`` (defaults from the model's paper spec)."""
    parser.add_argument("--model", default="lenet_300_100", choices=tuple(models.MODELS),
                        help="network (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                        help="batch size (default: the model's paper value)")
    parser.add_argument("--learning-rate", type=positive_float, default=None, metavar="LR",
                        help="Adam learning rate (default: the model's paper value)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--epochs", type=positive_int, default=5, help="epochs (default: %(default)s)")


def train(args: argparse.Namespace) -> int:
    """Train the dense (unpruned) network for a few epochs and print its test accuracy."""
    spec = models.spec(args.model)
    batch_size = args.batch_size or spec.batch_size
    learning_rate = args.learning_rate or spec.learning_rate
    keras.utils.set_random_seed(args.seed)
    ds = data.load(args.dataset, data_dir=args.data_dir, seed=args.seed)
    model = models.build(args.model, input_shape=ds.input_shape, num_classes=ds.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    epochs = f"{args.epochs} epoch{'s' * (args.epochs != 1)}"
    print(f"training {args.model} on {args.dataset} ({len(ds.x_train)} train / {len(ds.x_val)} validation / "
          f"{len(ds.x_test)} test): {epochs}, batch {batch_size}, Adam {learning_rate:g}, seed {args.seed}",
          flush=True)
    validation = ds.pipeline("val", 1000) if len(ds.x_val) else None
    model.fit(ds.pipeline("train", batch_size, shuffle=True, seed=args.seed), validation_data=validation,
              epochs=args.epochs, verbose=2)
    _, accuracy = model.evaluate(ds.pipeline("test", 1000), verbose=0)
    print(f"test accuracy: {accuracy:.4f}", flush=True)
    return 0


def _csv(text: str) -> tuple:
    return tuple(t for t in text.split(",") if t and t != "none")


def _rates(text: str) -> dict:
    try:
        return {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not KIND=RATE[,KIND=RATE...], e.g. dense=0.2,output=0.1")


def _pair(separator: str, example: str):
    def parse(text: str) -> tuple:
        try:
            a, b = (int(v) for v in text.split(separator))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not of the form {example}") from None
        return a, b

    return parse


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    from tf_lth import experiment, masks, rewind

    S = argparse.SUPPRESS  # flags not given do not override the config file or the defaults
    parser.add_argument("--config", metavar="FILE", help="JSON or YAML file of options (flags override it)")
    parser.add_argument("-o", "--output", metavar="DIR", help="output folder (default: runs/<model>_<dataset>)")
    parser.add_argument("--quiet", action="store_true", help="no Keras progress (round lines stay); without a terminal, one line per epoch")
    parser.add_argument("--restart-round", type=int, metavar="K", help="discard rounds >= K and redo them")
    g = parser.add_argument_group("experiment (defaults: the paper's values for the model)")
    g.add_argument("--model", choices=tuple(models.MODELS), default=S, help="network (default: lenet_300_100)")
    g.add_argument("--dataset", choices=data.DATASETS, default=S, help="dataset (default: mnist5k, offline)")
    g.add_argument("--data-dir", default=S, metavar="DIR", help=f"folder of the dataset's files (or ${data.DATA_DIR_ENV})")
    g.add_argument("--rounds", type=int, default=S, help="pruning rounds after the dense one (default: 10)")
    g.add_argument("--rate", type=float, default=S,
                   help="fraction of remaining weights pruned per round, output layer at half (default: model's)")
    g.add_argument("--rates", type=_rates, default=S, metavar="K=R,...",
                   help="per layer kind or name, e.g. conv=0.1,dense=0.2,output=0.1")
    g.add_argument("--scope", choices=("layerwise", "global"), default=S, help="layerwise rates or one global cut")
    g.add_argument("--ignore", type=_csv, default=S, metavar="LAYERS", help="layers never pruned, comma-separated")
    g.add_argument("--rewind", default=S, metavar="MODE", help="init | iteration:K | lr | finetune (default: init)")
    g.add_argument("--criterion", choices=tuple(masks.CRITERIA), default=S, help="mask criterion (default: large_final)")
    g.add_argument("--survivors", choices=rewind.SURVIVORS, default=S, help="what kept weights restart from")
    g.add_argument("--pruned", choices=rewind.PRUNED, default=S, help="pruned weights: zero or frozen at init")
    g.add_argument("--block-size", type=_pair("x", "4x1"), default=S, metavar="HxW",
                   help="prune Dense kernels in blocks, 4x1 = 1x4 blocks for TFLite's sparse kernel")
    g.add_argument("--m-by-n", type=_pair(":", "2:4"), default=S, metavar="N:M", help="keep at most N of every M inputs")
    g.add_argument("--controls", type=_csv, default=S, metavar="LIST",
                   help="random_reinit,random_mask or none (default: random_reinit)")
    g.add_argument("--epochs", type=int, default=S, help="epochs per round (default: 10)")
    g.add_argument("--iterations", type=int, default=S, help="iterations per round instead of epochs")
    g.add_argument("--batch-size", type=int, default=S, help="batch size (default: model's)")
    g.add_argument("--optimizer", choices=experiment.OPTIMIZERS, default=S, help="default: model's (adam)")
    g.add_argument("--learning-rate", type=float, default=S, help="default: model's")
    g.add_argument("--momentum", type=float, default=S, help="SGD momentum (default: 0)")
    g.add_argument("--validation", type=int, default=S, help="examples held out of train for early stopping")
    g.add_argument("--eval-every", type=int, default=S, metavar="N",
                   help="evaluate every N iterations (default: every epoch; the papers use 100)")
    g.add_argument("--seed", type=int, default=S, help="random seed (default: 0)")
    g.add_argument("--export", type=_csv, default=S, metavar="FORMATS",
                   help="formats of the final ticket: saved_model,tflite,int8,fp16 or none")
    g.add_argument("--jit", dest="jit_compile", action="store_true", default=S,
                   help="XLA for the whole training step (default: on, but for convolutional models without a GPU)")
    g.add_argument("--no-jit", dest="jit_compile", action="store_false", default=S, help="no XLA compilation")
    g.add_argument("--steps-per-execution", type=int, default=S, metavar="N",
                   help="training steps per call into TensorFlow (default: the most, up to 100, that keep "
                        "every evaluation point, rewind step and epoch end)")


def _read_config(path: str) -> dict:
    text = _read_text(path)
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            loaded = yaml.safe_load(text)
        else:
            loaded = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise TfLthError(f"cannot parse config file {path}: {' '.join(str(e).split())}") from None
    if not isinstance(loaded, dict):
        raise TfLthError(f"config file {path} must hold a mapping of option: value")
    return {k.replace("-", "_"): v for k, v in loaded.items()}


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise TfLthError(f"cannot read config file {path}: {e.strerror}") from None


RUN_ONLY = ("config", "output", "quiet", "restart_round", "command")


def run_config(args: argparse.Namespace):
    """The experiment config: defaults, overridden by the config file, overridden by flags."""
    from tf_lth.experiment import ExperimentConfig

    options = _read_config(args.config) if args.config else {}
    options.update({k: v for k, v in vars(args).items() if k not in RUN_ONLY})
    return ExperimentConfig.from_dict(options)


def run(args: argparse.Namespace) -> int:
    """Run (or resume) a lottery-ticket experiment into its output folder."""
    from tf_lth.experiment import Experiment

    config = run_config(args)
    output = args.output or f"runs/{config.model}_{config.dataset}"
    verbose = 0 if args.quiet else 1 if sys.stdout.isatty() else 2  # a line per epoch into logs and pipes
    Experiment(config, output, verbose=verbose).run(restart_round=args.restart_round)
    print(f"results in {output}/ (results.json, results.csv, plots/{', export/' if config.export else ''})")
    return 0


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    from tf_lth import export

    export.add_arguments(parser)


def _export(args: argparse.Namespace) -> int:
    """Export the chosen round of ``args.run_dir`` (SavedModel + sparse TFLite, verified and timed)."""
    from tf_lth import export
    from tf_lth.lottery import LotteryTicket

    folder = Path(args.run_dir)
    if not (folder / "ticket.json").is_file():
        raise TfLthError(f"{folder} is not a tf-lth run folder (no ticket.json written by LotteryTicket.save)")
    ticket = LotteryTicket.load(folder, round=args.round)
    name = folder.resolve().name
    out = Path(args.out) if args.out else export.default_path(name, ticket.round)
    dataset = data.load(args.dataset, args.data_dir) if args.dataset else None
    info = export.export_ticket(ticket.model, out, name=name, round=ticket.round, dataset=dataset,
                                formats=args.formats, benchmark=not args.no_benchmark)
    print(export.summary(info))
    print(f"exported to {out}")
    return 0


COMMANDS: dict[str, Command] = {
    "export": Command("export a round of a run as SavedModel + sparse TFLite, verified and timed",
                      _add_export_arguments, _export),
    "run": Command("find lottery tickets: rounds, controls, plots, export (resumable)", _add_run_arguments, run),
    "train": Command("train the dense network briefly and report its test accuracy", _add_train_arguments, train),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Find lottery tickets in tf_keras models with TF-MOT.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tf-lth`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed as one line)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
    try:
        return COMMANDS[args.command].handler(args)
    except TfLthError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
