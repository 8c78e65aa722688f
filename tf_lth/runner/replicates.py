"""Replicates and comparisons from results files alone (no TensorFlow): the aggregate of a folder of
seeds, and one figure and table of several runs or aggregates.

``tf-lth run --seeds 0-4 -o DIR`` trains ``DIR/seed_<s>/`` one after the other (each an ordinary,
resumable run folder) and then :func:`aggregate_folder` writes ``DIR/aggregate.json``,
``DIR/aggregate.csv`` and ``DIR/plots/`` (mean line, min-max band, ticket and each control).
``tf-lth compare RUN_DIR...`` is :func:`compare`.
"""
from __future__ import annotations

from pathlib import Path

from tf_lth.runner import plots
from tf_lth.runner import results
from tf_lth.errors import TfLthError
from tf_lth.util.io import read_json, write_json

METRICS = ("test_accuracy", "early_stop_iteration", "early_stop_test_accuracy", "supermask_test_accuracy",
           "supermask_signed_constant_test_accuracy")


def seed_folders(out) -> dict[int, Path]:
    """The finished-or-not run folders ``seed_<s>`` of a replicate folder, by seed."""
    found = {}
    for path in Path(out).glob(results.SEED_PREFIX + "*"):
        tail = path.name[len(results.SEED_PREFIX):]
        if tail.isdigit() and (path / "results.json").exists():
            found[int(tail)] = path
    return dict(sorted(found.items()))


def aggregate_folder(out, seeds=None) -> dict:
    """Aggregate the seeds' results.json (``seeds``: those, else every ``seed_<s>`` found) into
    ``out/aggregate.json`` and ``.csv`` and draw its figures; returns the aggregate."""
    out = Path(out)
    folders = seed_folders(out)
    if seeds is not None:
        missing = [s for s in seeds if s not in folders]
        if missing:
            raise TfLthError(f"{out} has no finished results for seed(s) {', '.join(map(str, missing))}: "
                             "run them first (tf-lth run --seeds ... resumes)")
        folders = {s: folders[s] for s in seeds}
    if not folders:
        raise TfLthError(f"{out} holds no seed_<s>/results.json: run tf-lth run --seeds ... -o {out}")
    agg = results.aggregate({s: read_json(p / "results.json") for s, p in folders.items()})
    write_json(out / results.AGGREGATE, agg)
    results.write_csv(out / "aggregate.csv", [{"round": r["round"], **{k: v for k, v in r.items() if k != "round"}}
                                              for r in agg["rounds"]])
    plots.plot_aggregate(agg, out / "plots")
    return agg


def compare(folders: list, metric: str = "test_accuracy", path=None, against: str = "weights") -> tuple[str, Path]:
    """One table and one figure of ``metric`` against weights (or, ``against="macs"``, multiply-adds)
    remaining for several runs, branches (``RUN/branches/<name>``, named by their folder) or replicate folders,
    each labelled by the config keys in which it differs from the others: a weight-level and a unit-level run
    on one figure by the compute they keep, or IMP and pruning-at-init branches by the weights they keep."""
    if against not in ("weights", "macs"):
        raise TfLthError(f"against={against!r}: choose weights or macs")
    runs = [results.read_run(f) for f in folders]
    names = results.labels([r["config"] for r in runs])
    if any("label" in r for r in runs):  # branches share their run's config: each is named by its folder
        names = [r.get("label") or (n if not n.startswith("run ") else Path(f).resolve().name)
                 for r, n, f in zip(runs, names, folders)]
    if not any(results.value(row, metric)[0] is not None for run in runs for row in run["rows"]):
        raise TfLthError(f"no run has {metric!r}: use one of {', '.join(METRICS)} (or a flattened control key, "
                         "e.g. controls.random_reinit.test_accuracy)")
    x = f"{against}_remaining"
    missing = [str(f) for f, run in zip(folders, runs) if all(results.value(r, x)[0] is None for r in run["rows"])]
    if missing:
        raise TfLthError(f"{', '.join(missing)} recorded no {x} (written before tf-lth counted multiply-adds): "
                         "rerun it, or compare --against weights")
    series = {name: [(100 * results.value(r, x)[0], *results.value(r, metric)) for r in run["rows"]
                     if results.value(r, x)[0] is not None]
              for name, run in zip(names, runs)}  # the dense round included: each line starts at 100%
    path = Path(path or f"compare_{metric}{'_by_macs' * (against == 'macs')}.png")
    title = " vs ".join(names) if len(names) <= 3 else f"{len(names)} runs"
    xlabel = f"{'MACs' if against == 'macs' else against} remaining (%)"
    plots.band_figure(series, None, metric.replace("_", " "), title, path, xlabel=xlabel)
    return results.compare_table(runs, names, metric), path
