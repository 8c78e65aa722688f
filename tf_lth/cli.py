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
import sys
from typing import Callable, NamedTuple, Sequence

from tf_lth import data, models
from tf_lth._keras import keras
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


COMMANDS: dict[str, Command] = {
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
