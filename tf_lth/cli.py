"""The ``tf-lth`` command: argument parsing and one-line errors around the library.

Flags come from the config dataclasses (:func:`tf_lth.config.flags.add_flags`), and TensorFlow is
imported only once a command runs: ``--help`` and flag errors answer at once.

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
import re
import sys
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from tf_lth.config import configs as config_lib
from tf_lth.data import specs as datasets
from tf_lth.training import cluster as distribute
from tf_lth.config import flags as options
from tf_lth.pruning import units as units_lib
from tf_lth.runner import results
from tf_lth.runner import instability_cli  # its arguments only: the scan loads once one runs
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


TRAIN_FLAGS = ("model", "dataset", "data_dir", "batch_size", "learning_rate", "seed", "epochs")
TRAIN_EPOCHS = 5


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_flags(parser, config_lib.ExperimentConfig, only=TRAIN_FLAGS, shown={"epochs": TRAIN_EPOCHS})
    parser.set_defaults(epochs=TRAIN_EPOCHS)


def train(args: argparse.Namespace) -> int:
    """Train the dense (unpruned) network for a few epochs and print its test accuracy."""
    from tf_lth.data import pipeline as data
    from tf_lth.models import networks
    from tf_lth.ticket import flavours
    from tf_lth.training import fit_round

    cfg = config_lib.ExperimentConfig.from_dict({k: v for k, v in vars(args).items() if k in TRAIN_FLAGS}).resolved()
    tr, kit = cfg.training, flavours.by_version(cfg.keras).training
    kit.keras.utils.set_random_seed(cfg.seed)
    ds = data.load_config(cfg)
    model = networks.build(cfg.model, input_shape=ds.input_shape, num_classes=ds.num_classes, keras=cfg.keras)
    steps = fit_round.steps_per_epoch(ds, tr)
    model.compile(optimizer=kit.make_optimizer(tr, steps, fit_round.round_steps(tr, steps)), loss=kit.loss,
                  metrics=["accuracy"])
    epochs = f"{tr.epochs} epoch{'s' * (tr.epochs != 1)}"
    print(f"training {cfg.model} on {cfg.dataset} ({len(ds.x_train)} train / {len(ds.x_val)} validation / "
          f"{len(ds.x_test)} test): {epochs}, batch {tr.batch_size}, {config_lib.OPTIMIZERS.get(tr.optimizer)} {tr.learning_rate:g}, "
          f"seed {cfg.seed}", flush=True)
    validation = ds.pipeline("val", 1000) if len(ds.x_val) else None
    model.fit(ds.pipeline("train", tr.batch_size, shuffle=True, seed=cfg.seed), validation_data=validation,
              epochs=tr.epochs, verbose=2)
    _, accuracy = model.evaluate(ds.pipeline("test", 1000), verbose=0)
    print(f"test accuracy: {accuracy:.4f}", flush=True)
    return 0


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="JSON or YAML file of options (flags override it)")
    parser.add_argument("-o", "--output", metavar="DIR", help="output folder (default: runs/<model>_<dataset>)")
    parser.add_argument("--verbose", action="store_true", help="also Keras' progress per epoch (a bar on a "
                        "terminal, else a line per epoch); by default a line per trained network")
    parser.add_argument("--quiet", action="store_true", help="only the summary at the end (no line per network)")
    parser.add_argument("--restart-round", type=int, metavar="K", help="discard rounds >= K and redo them")
    parser.add_argument("--dry-run", action="store_true", help="check every option and say what the run would do, "
                        "without TensorFlow, training or writing")
    parser.add_argument("--seeds", metavar="SEEDS", default=argparse.SUPPRESS,
                        help="replicates: 0-4 or 0,3,7 runs OUTPUT/seed_<s>/ per seed, then the aggregate "
                             "(mean, min, max per round) and its plots")
    group = parser.add_argument_group("experiment (defaults: the paper's values for the model)")
    options.add_flags(group, config_lib.ExperimentConfig)


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


RUN_ONLY = ("config", "output", "quiet", "verbose", "restart_round", "dry_run", "command", "seeds")


def _run_options(args: argparse.Namespace) -> dict:
    options = _read_config(args.config) if args.config else {}
    options.update({k: v for k, v in vars(args).items() if k not in RUN_ONLY or k == "seeds"})
    return options


def run_config(args: argparse.Namespace) -> config_lib.ExperimentConfig:
    """The experiment config: defaults, overridden by the config file, overridden by flags."""
    options = _run_options(args)
    options.pop("seeds", None)
    return config_lib.ExperimentConfig.from_dict(options)


def run_seeds(args: argparse.Namespace) -> tuple | None:
    """The replicate seeds (``--seeds`` or the config file's ``seeds``), or None for one run."""
    seeds = _run_options(args).get("seeds")
    return None if seeds is None else results.parse_seeds(seeds)


def run(args: argparse.Namespace) -> int:
    """Run (or resume) a lottery-ticket experiment into its output folder, or one per seed."""
    config, seeds = run_config(args), run_seeds(args)  # a bad option is reported before TensorFlow loads
    distribute.check(config.strategy, config.devices, config.resolved().training.batch_size)  # TF_CONFIG too
    from tf_lth.runner.experiment import Experiment, run_replicates

    output = args.output or default_output(config)
    if args.dry_run:
        print(plan(config, output, seeds))
        return 0
    verbose = (1 if sys.stdout.isatty() else 2) if args.verbose else 0
    options = {"verbose": verbose, "strict_export": "export" in _run_options(args),
               "log": (lambda line: None) if args.quiet else print}
    try:
        if seeds is not None:
            run_replicates(config, output, seeds, restart_round=args.restart_round, **options)
            print(f"results in {output}/ (seed_<s>/ per seed; aggregate.json, aggregate.csv, plots/)")
            return 0
        result = Experiment(config, output, **options).run(restart_round=args.restart_round)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted: rerun the same command to resume ({output}/ keeps every finished round and "
              "the last epoch checkpoint of the one in progress)", file=sys.stderr)
        return 130
    if args.quiet:
        from tf_lth.runner.results import summary_table
        print(summary_table(result["rounds"], config.controls))
    print(f"results in {output}/ (results.json, results.csv, plots/)")
    if config.export and result["rounds"]:
        folder = Path(output) / "export" / f"round_{result['rounds'][-1]['round']}"
        if (folder / "ticket.tflite").exists():
            print(f"run the exported ticket: {PROG} predict {folder / 'ticket.tflite'} IMAGE.png  "
                  f"(or --dataset {config.dataset}; Python: docs/export.md)")
    return 0


def default_output(config: config_lib.ExperimentConfig) -> str:
    """``runs/<model>_<dataset>``, each named by its last path part without suffix and ``module:``/``npz:``
    prefixes (``--model nets.py:small --dataset npz:data/digits.npz`` -> ``runs/small_digits``)."""
    def short(name: str) -> str:
        name = name.rstrip("/").rpartition(":")[2] if ":" in name else name
        stem = Path(name).stem if Path(name).suffix in (".npz", ".keras", ".h5", ".py") else Path(name).name
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "data"
    return f"runs/{short(config.model)}_{short(config.dataset)}"


def plan(config: config_lib.ExperimentConfig, output: str, seeds) -> str:
    """What ``tf-lth run`` would do with ``config`` (``--dry-run``): the resolved recipe and where it writes."""
    cfg = config.resolved()
    t, tr = cfg.ticket, cfg.training
    length = f"{tr.iterations} iterations" if tr.iterations else f"{tr.epochs} epochs"
    rates = (", ".join(f"{k}={v:g}" for k, v in t.rates.items()) if t.rates else f"{t.rate:g}") + f" ({t.scope})"
    folders = [Path(output)] if seeds is None else [Path(output) / f"{results.SEED_PREFIX}{s}" for s in seeds]
    done = [sum(1 for _ in f.glob("rounds/*/result.json")) for f in folders]
    return "\n".join([
        f"would run: {cfg.model} on {cfg.dataset} (Keras {cfg.keras}), a dense round and {cfg.rounds} pruning rounds "
        f"of {length}, {config_lib.OPTIMIZERS.get(tr.optimizer)} {tr.learning_rate:g}, batch {tr.batch_size}; "
        f"prune {rates} per round, rewind {t.rewind}, criterion {t.criterion}"
        + (f", whole units ({t.granularity}, scored by {t.unit_score or units_lib.DEFAULT_SCORE[t.granularity]})"
           if t.granularity != "weight" else ""),
        f"controls: {', '.join(cfg.controls) or 'none'}; export: {', '.join(cfg.export) or 'none'} "
        f"(optimized for {cfg.optimize_for}); seeds: {', '.join(map(str, seeds)) if seeds else cfg.seed}",
        f"into {output}/: " + ("new" if not any(done) else f"resumes ({sum(done)} finished round(s) found)")])


def _add_branch_arguments(parser: argparse.ArgumentParser) -> None:
    from tf_lth.pruning import at_init
    from tf_lth.pruning import controls
    from tf_lth.pruning import rewind

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished (or partly finished) tf-lth run folder")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--control", choices=controls.CONTROLS.names(), help="train this control at the rounds")
    what.add_argument("--survivors", choices=rewind.SURVIVORS.names(),
                      help="the run's masks and rewind point, survivors restarted by this action")
    what.add_argument("--rewind", metavar="MODE", help=f"the run's masks rewound to another point: {rewind.forms()}")
    what.add_argument("--at-init", metavar="METHOD[/ABLATION]", help="θ0 pruned at init to each round's sparsity by "
                      f"{', '.join(at_init.PAI_METHODS.names())}; /shuffle, /reinit or /invert ablates its mask "
                      "(docs/pruning-at-init.md)")
    what.add_argument("--ablation", choices=("shuffle", "reinit", "invert"),
                      help="the round's ticket with its mask shuffled per layer, its weights redrawn, or its "
                           "lowest-scored weights kept")
    parser.add_argument("--rounds", metavar="K,...", help="rounds to branch (default: every pruned round finished)")
    parser.add_argument("--data-dir", metavar="DIR", help="where the dataset's files are now (default: the run's)")
    parser.add_argument("--verbose", action="store_true", help="also Keras' progress per epoch")
    parser.add_argument("--quiet", action="store_true", help="only the final lines")


def branch(args: argparse.Namespace) -> int:
    """Run a control or a survivors variant off a finished experiment, retraining nothing it holds."""
    from tf_lth.runner import branches

    kind, value = next((k, v) for k, v in (("control", args.control), ("survivors", args.survivors),
                                            ("rewind", args.rewind), ("at_init", args.at_init),
                                            ("ablation", args.ablation)) if v)
    verbose = (1 if sys.stdout.isatty() else 2) if args.verbose else 0
    out = branches.run_branch(args.run_dir, kind, value, args.rounds, data_dir=args.data_dir, verbose=verbose,
                              log=(lambda line: None) if args.quiet else print)
    for row in out["rounds"]:
        print(f"round {row['round']}  weights {100 * row['weights_remaining']:.1f}%  test {row['test_accuracy']:.4f}")
    print(f"results in {Path(args.run_dir) / branches.BRANCHES / branches.branch_name(kind, value)}/")
    return 0


def _add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run, branch (RUN/branches/NAME) or replicate (--seeds) folders")
    parser.add_argument("--metric", default="test_accuracy",
                        help="what to plot against weights remaining (default: %(default)s; e.g. "
                             "early_stop_iteration, supermask_test_accuracy, controls.random_reinit.test_accuracy)")
    parser.add_argument("--against", choices=("weights", "macs"), default="weights",
                        help="x axis: weights or multiply-adds (MACs) remaining (default: %(default)s)")
    parser.add_argument("-o", "--output", metavar="PNG", help="figure path (default: compare_<metric>.png)")


def compare(args: argparse.Namespace) -> int:
    """One table and one figure of several runs, labelled by what differs in their configs."""
    from tf_lth.runner import replicates

    table, path = replicates.compare(args.run_dirs, args.metric, args.output, args.against)
    print(table)
    print(f"figure: {path}")
    return 0


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="folder written by tf_lth.ticket.store.save / tf-lth run")
    parser.add_argument("--round", type=int, help="round to export (default: the last saved one)")
    parser.add_argument("--out", help="export folder (default: saved_models/<run folder name>/round_<k>)")
    parser.add_argument("--formats", nargs="+", choices=config_lib.EXPORT_FORMATS, default=None,
                        help=f"what to write (default: {' '.join(config_lib.DEFAULT_EXPORT_FORMATS)}; a format named "
                             "here that fails its check gives exit status 2, a default one is left out with a warning)")
    parser.add_argument("--optimize-for", choices=config_lib.OPTIMIZE_FOR, default="latency",
                        help="store each TFLite file's weights sparse or dense, whichever runs faster (latency, "
                             "measured) or is smaller (size) (default: %(default)s)")
    parser.add_argument("--input-scale", choices=("unit", "raw"), default=None,
                        help="pixel range the model is fed (default: the run's, else detected from the model)")
    parser.add_argument("--dataset", choices=datasets.DATASETS.names(), help="compare on and score its test split")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's files")
    parser.add_argument("--no-benchmark", action="store_true", help="skip the latency runs")
    parser.add_argument("--int8-io", action="store_true", help="int8 input and output for int8_full / int8_qat "
                        "(default: float)")


def _export(args: argparse.Namespace) -> int:
    """Export the chosen round of ``args.run_dir`` (SavedModel + TFLite, verified and timed)."""
    folder = Path(args.run_dir)
    if not (folder / "ticket.json").is_file():
        raise TfLthError(f"{folder} is not a tf-lth run folder (no ticket.json written by tf_lth.ticket.store.save)")
    from tf_lth import export
    from tf_lth.data import pipeline as data
    from tf_lth.export import quantize
    from tf_lth.ticket import store

    ticket = store.load(folder, round=args.round)
    name = folder.resolve().name
    out = Path(args.out) if args.out else export.default_path(name, ticket.round)
    run = folder / "config.json"
    cfg = config_lib.ExperimentConfig.from_folder(json.loads(run.read_text())) if run.is_file() else None
    dataset = None
    if args.dataset:  # at the image size the run trained at
        dataset = data.load(args.dataset, args.data_dir, **({} if cfg is None else {
            "image_size": cfg.image_size, "channels": cfg.channels, "resize": cfg.resize}))
    scale = args.input_scale or (cfg.input_scale if cfg is not None else None)
    export.export_ticket(ticket if ticket.holds == "trained" else ticket.model, out, name=name, round=ticket.round,
                         dataset=dataset, formats=args.formats, benchmark=not args.no_benchmark,
                         quantization=quantize.Options(int8_io=args.int8_io), optimize_for=args.optimize_for,
                         input_scale=scale, verbose=1)
    return 0


def _add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="FILE", help="an exported ticket.tflite (any format) or saved_model folder")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files (PNG, JPEG, ...): the top class of each")
    parser.add_argument("--dataset", metavar="NAME", help="score the test split of a dataset instead (as the run's "
                        "export did: same image size and channels)")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's files")


def predict(args: argparse.Namespace) -> int:
    """Run an exported file on images or a test split, fed as its ticket.json says."""
    if not args.images and not args.dataset:
        raise TfLthError("give image files or --dataset NAME to run the exported ticket on")
    from tf_lth.export.predict import Runner, load_images

    runner = Runner(args.model)
    print(f"{runner.path}: input {'x'.join(map(str, runner.shape))}, pixels "
          f"{'/ 255 in [0, 1]' if runner.scale == 'unit' else 'in 0-255'} ({runner.scale_source})")
    if args.dataset:
        from tf_lth.data import pipeline as data
        height, width, channels = runner.shape
        run = runner.path.parent.parent.parent / "config.json"  # RUN/export/round_<k>/FILE
        resize = json.loads(run.read_text()).get("resize", "scale") if run.is_file() else "scale"
        ds = data.load(args.dataset, args.data_dir, image_size=(height, width), channels=channels, resize=resize)
        outputs = runner(ds.x_test)
        accuracy = float((outputs.argmax(-1) == ds.y_test).mean())
        print(f"{args.dataset} test split: accuracy {accuracy:.4f} on {len(ds.x_test):,} images")
    if args.images:
        outputs = runner(load_images(args.images, runner.shape))
        for path, row in zip(args.images, outputs):
            print(f"{path}: class {int(row.argmax())} (output {float(row.max()):.4g})")
    return 0


COMMANDS: dict[str, Command] = {  # in the order of the work: find, vary, compare, ship
    "run": Command("find lottery tickets: rounds, controls, plots, export (resumable)", _add_run_arguments, run),
    "branch": Command("run a control, survivors, rewind, pruning-at-init or ablation variant off a finished run "
                      "(nothing retrained)",
                      _add_branch_arguments, branch),
    "instability": Command(instability_cli.HELP, lambda parser: instability_cli.add_arguments(parser, options.add_flags),
                           lambda args: instability_cli.command(args, run_config, default_output)),
    "compare": Command("compare runs or replicates: one table and figure against weights remaining",
                       _add_compare_arguments, compare),
    "export": Command("export a round of a run as SavedModel + sparse TFLite, verified and timed",
                      _add_export_arguments, _export),
    "predict": Command("run an exported ticket (.tflite or saved_model) on image files or a dataset's test split",
                       _add_predict_arguments, predict),
    "train": Command("train the dense network briefly and report its test accuracy", _add_train_arguments, train),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Find lottery tickets in Keras models (tf_keras through TF-MOT's "
                     "wrappers, or Keras 3 on TensorFlow or JAX with --keras 3) and ship them as small, checked "
                     "SavedModel and TFLite files. Start with: tf-lth run --help")
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
