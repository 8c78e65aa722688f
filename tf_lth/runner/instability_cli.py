"""``tf-lth instability``: the command line of the instability scan (:mod:`tf_lth.runner.instability`).

Its arguments are added without loading the scan: :mod:`tf_lth.runner.instability` and its science
(:mod:`tf_lth.training.stability`) load only once a scan runs, so other commands never pay for them. A
scan of a run folder takes the run's own config (only ``--rewind-points``, ``--rewind-threshold`` and
``--data-dir`` may be given); without a folder, the flags describe the run whose dense network is
scanned, as ``tf-lth run`` reads them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

from tf_lth.config.configs import ExperimentConfig
from tf_lth.errors import TfLthError

HELP = "linear mode connectivity: the error barrier between two copies trained from θk, per k (resumable)"
DEFAULT_ALPHAS = 11  # points on a path: 0, 0.1, ..., 1 (instability.DEFAULT_ALPHAS; this module loads no scan)
OWN_ARGUMENTS = ("run_dir", "output", "rounds", "alphas", "seeds", "config", "verbose", "quiet", "command")
FROM_FOLDER = ("rewind_points", "rewind_threshold", "data_dir")  # the flags a RUN_DIR scan takes


def add_arguments(parser, add_flags) -> None:
    """``tf-lth instability``'s arguments (``add_flags``: :func:`tf_lth.config.flags.add_flags`)."""
    parser.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a started tf-lth run folder: scan its dense "
                        "network (and --rounds' tickets) with its config; without it, the run the flags describe")
    parser.add_argument("-o", "--output", metavar="DIR", help="the scan's folder (default: RUN_DIR/instability, "
                        "else runs/<model>_<dataset>_instability)")
    parser.add_argument("--rounds", metavar="K,...", help="with RUN_DIR: also scan these rounds' tickets (their masks "
                        "over θ0), each into OUTPUT/round_<k>/")
    parser.add_argument("--alphas", type=int, default=DEFAULT_ALPHAS, metavar="N",
                        help="points on each path, 0 and 1 included (default: %(default)s)")
    parser.add_argument("--seeds", metavar="A,B", help="the two copies' data-order seeds (default: the run's seed + 1 "
                        "and + 2)")
    parser.add_argument("--threshold", dest="rewind_threshold", type=float, default=argparse.SUPPRESS, metavar="X",
                        help="the error barrier under which a point is stable (default: 0.02; = --rewind-threshold)")
    parser.add_argument("--config", metavar="FILE", help="without RUN_DIR: JSON or YAML file of options")
    parser.add_argument("--verbose", action="store_true", help="also Keras' progress per epoch")
    parser.add_argument("--quiet", action="store_true", help="only the final lines")
    add_flags(parser.add_argument_group("the run (without RUN_DIR; --rewind-points, --rewind-threshold and "
                                        "--data-dir with it too)"), ExperimentConfig,
              seen={"rounds"})  # a scan's --rounds are a run folder's rounds to scan, not a run's count


def command(args, run_config, default_output) -> int:
    """``tf-lth instability``: scan, print a line per point, say where the files are. ``run_config`` and
    ``default_output``: the command line's config of flags and config file, and its default run folder
    (:func:`tf_lth.cli.run_config`, :func:`tf_lth.cli.default_output`)."""
    from tf_lth.runner.instability import FOLDER, SCAN_FILE, parse_seeds, scan_config, scan_run

    verbose = (1 if sys.stdout.isatty() else 2) if args.verbose else 0
    log = (lambda line: None) if args.quiet else print
    flags = {k: v for k, v in vars(args).items() if k not in OWN_ARGUMENTS}
    seeds = None if args.seeds is None else parse_seeds(args.seeds)
    if args.rounds is not None and not args.run_dir:
        raise TfLthError("--rounds scans a run folder's tickets: give its RUN_DIR")
    if args.run_dir:
        extra = sorted(k for k in flags if k not in FROM_FOLDER) + (["config"] if args.config else [])
        if extra:
            raise TfLthError(f"a RUN_DIR scan takes the run's own config: drop --{', --'.join(extra)}".replace("_", "-"))
        try:
            rounds = [int(r) for r in args.rounds.split(",") if r.strip()] if args.rounds else None
        except ValueError:
            raise TfLthError(f"--rounds {args.rounds!r}: give round numbers like 3,6") from None
        threshold = flags.get("rewind_threshold")
        points = flags.get("rewind_points")
        scans = scan_run(args.run_dir, points, rounds, args.output, seeds=seeds, alphas=args.alphas,
                         threshold=threshold, data_dir=flags.get("data_dir"), verbose=verbose, log=log)
        out = Path(args.output or Path(args.run_dir) / FOLDER)
    else:
        config = run_config(SimpleNamespace(config=args.config, **flags))
        out = Path(args.output or default_output(config) + "_instability")
        scans = {0: scan_config(config, out, seeds=seeds, alphas=args.alphas, verbose=verbose, log=log)}
    for r, content in scans.items():
        for e in content["points"]:
            print(f"{'round ' + str(r) + ' ' if r else ''}k={e['k']}: error barrier {100 * e['error_barrier']:.2f}% "
                  f"({'stable' if e['stable'] else 'unstable'}), loss barrier {e['loss_barrier']:.4f}")
    print(f"results in {out}/ ({SCAN_FILE}, instability.csv, plots/)")
    return 0
