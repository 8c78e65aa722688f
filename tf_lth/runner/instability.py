"""The instability scan (Frankle et al. 2020) as a resumable folder, and ``--rewind auto``'s choice.

For each rewind point k the scan takes θk (the network trained k steps from θ0 with the run's seed: the
trunk), trains two copies from it with different data orders, and scores the straight path between
their endpoints (:mod:`tf_lth.training.stability`: the BN rule and the copy-length rule are there). The
folder, every file written atomically::

    OUT/instability.json   settings and, per k: the trunk's step, both copies' test accuracy, the error
                           and loss at each α, the error and loss barriers, stable or not
    OUT/instability.csv    one row per k
    OUT/plots/instability_path.png     error along α, one line per k
    OUT/plots/instability_barrier.png  error barrier against k, the threshold dashed
    OUT/rewind_auto.json   --rewind auto's choice (RUN_DIR/instability/ of such a run)
    OUT/k_<k>/             thetak.npz, copy_a.npz / copy_b.npz (+ .json: its metrics), path.json;
                           copy_<x>.ckpt.npz while a copy trains

A rerun reads every finished piece back (θk, each copy's endpoint, each k's path) and continues an
interrupted copy from its epoch checkpoint, so a resumed scan writes the very JSON of an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from tf_lth.config.configs import REWIND_AUTO, ExperimentConfig
from tf_lth.errors import TfLthError
from tf_lth.runner.results import write_csv
from tf_lth.util.io import read_json, read_npz, write_json, write_npz

SCAN_FILE = "instability.json"
AUTO_FILE = "rewind_auto.json"  # --rewind auto's choice, as results.json records it
FOLDER = "instability"  # RUN_DIR/instability/: the scan of --rewind auto and tf-lth instability RUN_DIR
AUTO_FRACTIONS = (0.01, 0.03, 0.1)  # --rewind auto's points besides 0, as fractions of the round's steps
DEFAULT_ALPHAS = 11  # 0, 0.1, ..., 1 (tf-lth instability --alphas; its parser says 11 without importing this)
BN_EXAMPLES = 10_000  # training examples BatchNormalization statistics are recomputed from at each α
COPIES = ("a", "b")


def default_seeds(seed: int) -> tuple[int, int]:
    """The copies' data-order seeds by default: the run's seed + 1 and + 2 (never the trunk's own)."""
    return seed + 1, seed + 2


def parse_seeds(text) -> tuple[int, int]:
    """``"A,B"`` -> two different ints, or a one-line error."""
    try:
        seeds = tuple(int(s) for s in (text.split(",") if isinstance(text, str) else text))
    except (TypeError, ValueError):
        seeds = ()
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise TfLthError(f"seeds {text!r}: give the two copies' data-order seeds, e.g. 1,2 (the same twice "
                         "measures nothing)")
    return seeds


def nice(x: float) -> int:
    """The largest of 1, 2 or 5 times a power of ten that is <= ``x`` (0 below 1)."""
    if x < 1:
        return 0
    power = 10 ** math.floor(math.log10(x))
    return max(m * power for m in (1, 2, 5) if m * power <= x)


def auto_points(total: int, every: int | None = None) -> tuple[int, ...]:
    """``--rewind auto``'s points for a round of ``total`` steps: 0 and :data:`AUTO_FRACTIONS` of it, each
    rounded down to 1, 2 or 5 times a power of ten (and to a multiple of ``every``, a set
    steps_per_execution); duplicates and zeros dropped."""
    points = {0}
    for fraction in AUTO_FRACTIONS:
        k = nice(fraction * total)
        k = k - k % every if every else k
        if 0 < k < total:
            points.add(k)
    return tuple(sorted(points))


def check_points(points, total: int) -> tuple[int, ...]:
    """``points`` as sorted ints, each a step of a round of ``total`` steps (else a one-line error)."""
    points = tuple(sorted({int(k) for k in points}))
    beyond = [k for k in points if k < 0 or k >= total]
    if not points or beyond:
        raise TfLthError(f"rewind point(s) {', '.join(map(str, beyond)) or 'none'}: give steps from 0 to "
                         f"{total - 1} (a round here has {total} steps)")
    return points


def stable_point(entries: list[dict]) -> dict | None:
    """The entry of the smallest k whose error barrier is under the threshold, if any."""
    return next((e for e in sorted(entries, key=lambda e: e["k"]) if e["stable"]), None)


def choice(entries: list[dict], threshold: float) -> dict:
    """``--rewind auto``'s pick from a scan's entries: the smallest stable k, else the largest k scanned;
    as results.json records it."""
    picked = stable_point(entries) or max(entries, key=lambda e: e["k"])
    chosen = f"iteration:{picked['k']}" if picked["k"] else "init"
    return {"points": [e["k"] for e in entries], "barriers": [e["error_barrier"] for e in entries],
            "chosen": chosen, "threshold": threshold, "stable": picked["stable"]}


def choice_line(auto: dict) -> str:
    barriers = ", ".join(f"k={k}: {100 * b:.2f}%" for k, b in zip(auto["points"], auto["barriers"]))
    if auto["stable"]:
        return f"rewind auto: {auto['chosen']} (the smallest stable point; error barriers {barriers})"
    return (f"rewind auto: no point was stable (error barriers {barriers}, threshold "
            f"{100 * auto['threshold']:.1f}%): rewinding to the largest, {auto['chosen']}")


class Scan:
    """One scan of ``ticket`` (its masks over its θ0; the dense network at round 0) into ``folder``.

    ``config``: the run's resolved :class:`~tf_lth.config.configs.ExperimentConfig` (its training recipe,
    seed and flavour); ``data``: the run's :class:`~tf_lth.data.pipeline.Dataset` at its input scale;
    ``seeds``: the copies' data-order seeds; ``alphas``: points on each path; ``threshold``: the error
    barrier under which a point is stable. ``training``: the recipe to train with (default the config's;
    a session's per-replica one under a strategy)."""

    def __init__(self, ticket, config: ExperimentConfig, data, folder, *, seeds=None, alphas: int = DEFAULT_ALPHAS,
                 threshold: float | None = None, training=None, verbose: int = 0, log=print):
        from tf_lth.training import stability  # only a scan loads it (and the flavour's Keras, by the ticket)

        self.stability, self.ticket, self.config, self.data = stability, ticket, config, data
        self.folder, self.verbose, self.log = Path(folder), verbose, log
        self.training = training or config.training
        self.seeds = parse_seeds(default_seeds(config.seed) if seeds is None else seeds)
        self.alphas = stability.alphas(alphas)
        self.threshold = config.rewind_threshold if threshold is None else float(threshold)
        if not 0 < self.threshold < 1:
            raise TfLthError(f"threshold {self.threshold}: give a fraction between 0 and 1, e.g. 0.02")
        self.kit = ticket.flavour.training
        self.settings = {"round": ticket.round, "seed": config.seed, "seeds": list(self.seeds),
                         "alphas": self.alphas, "keras": config.keras, "model": config.model,
                         "dataset": config.dataset, "training": config.to_dict()["training"]}
        self._pipelines = None

    @property
    def total(self) -> int:
        """The steps of one round of the recipe."""
        from tf_lth.training import fit_round

        return fit_round.round_steps(self.training, fit_round.steps_per_epoch(self.data, self.training))

    def check_folder(self) -> None:
        """Refuse a folder holding a scan of other settings (its pieces would not be this scan's)."""
        path = self.folder / SCAN_FILE
        if not path.exists():
            return
        theirs = read_json(path).get("settings")
        if theirs != self.settings:
            differ = sorted(k for k in set(theirs or {}) | set(self.settings)
                            if (theirs or {}).get(k) != self.settings.get(k))
            raise TfLthError(f"{self.folder} holds an instability scan of other settings ({', '.join(differ)}): "
                             "use another output folder, or delete it")

    # -- the pieces ----------------------------------------------------------------------------------
    def pipelines(self):
        if self._pipelines is None:
            self._pipelines = (self.data.pipeline("val", 1000), self.data.pipeline("test", 1000),
                               bn_batches(self.data, self.training.batch_size, self.ticket))
        return self._pipelines

    def thetak(self, k: int) -> list:
        from tf_lth.ticket import store

        path = self.folder / f"k_{k}" / "thetak.npz"
        n = len(self.ticket.theta0)
        if path.exists():
            return store.unnumbered(read_npz(path), n, path)
        val, test, _ = self.pipelines()
        weights = self.stability.trunk(self.kit, self.ticket, self.data, self.training, k, seed=self.config.seed,
                                       val=val, test=test, checkpoint=path.with_name("trunk.ckpt.npz"),
                                       verbose=self.verbose)
        write_npz(path, store.numbered(weights))
        path.with_name("trunk.ckpt.npz").unlink(missing_ok=True)
        if k:
            self.log(f"instability k={k}: θk taken after {k} steps")
        return weights

    def copy(self, k: int, thetak: list, name: str, seed: int) -> tuple[list, dict]:
        from tf_lth.ticket import store

        path = self.folder / f"k_{k}" / f"copy_{name}.npz"
        n = len(self.ticket.theta0)
        if path.exists() and path.with_suffix(".json").exists():
            return store.unnumbered(read_npz(path), n, path), read_json(path.with_suffix(".json"))
        val, test, _ = self.pipelines()
        checkpoint = path.with_name(f"copy_{name}.ckpt.npz")
        weights, metrics = self.stability.train_copy(self.kit, self.ticket, thetak, self.data, self.training, k,
                                                     seed=seed, val=val, test=test, checkpoint=checkpoint,
                                                     verbose=self.verbose)
        record = {"seed": seed, "test_accuracy": metrics.get("test_accuracy"), "iterations": metrics.get("iterations")}
        write_npz(path, store.numbered(weights))
        write_json(path.with_suffix(".json"), record)
        checkpoint.unlink(missing_ok=True)
        self.log(f"instability k={k}: copy {name} (data seed {seed}) test {record['test_accuracy']:.4f}")
        return weights, record

    def point(self, k: int) -> dict:
        """The entry of rewind point ``k``, trained and scored as needed (finished pieces read back)."""
        path = self.folder / f"k_{k}" / "path.json"
        if path.exists():
            scored = read_json(path)
        else:
            thetak = self.thetak(k)
            ends = [self.copy(k, thetak, name, seed) for name, seed in zip(COPIES, self.seeds)]
            _, test, batches = self.pipelines()
            scored = self.stability.evaluate_path(self.ticket, ends[0][0], ends[1][0], test, self.alphas, batches)
            scored = {"k": k, "round": self.ticket.round, "trunk_step": k,
                      "copies": [record for _, record in ends], **scored}
            write_json(path, scored)
            self.log(f"instability k={k}: error barrier {100 * scored['error_barrier']:.2f}%, loss barrier "
                     f"{scored['loss_barrier']:.4f}")
        return {**scored, "stable": scored["error_barrier"] < self.threshold}

    # -- the scan ------------------------------------------------------------------------------------
    def run(self, points, until_stable: bool = False) -> dict:
        """Score each rewind point of ``points`` in increasing order (``until_stable``: stop at the first
        stable one, as ``--rewind auto`` does), write the JSON, CSV and plots; return the JSON's content."""
        points = check_points(points, self.total)
        self.check_folder()
        entries = []
        for k in points:
            entries.append(self.point(k))
            self.write(entries)
            if until_stable and entries[-1]["stable"]:
                break
        content = self.write(entries)
        from tf_lth.runner import plots  # matplotlib: only where figures are drawn

        plots.plot_instability(entries, self.folder / "plots", self.threshold)
        return content

    def write(self, entries: list[dict]) -> dict:
        stable = stable_point(entries)
        content = {"settings": self.settings, "threshold": self.threshold, "points": entries,
                   "stable_from": None if stable is None else stable["k"]}
        write_json(self.folder / SCAN_FILE, content)
        write_csv(self.folder / "instability.csv", [
            {"round": e["round"], "k": e["k"], "trunk_step": e["trunk_step"],
             "test_accuracy_a": e["copies"][0]["test_accuracy"], "test_accuracy_b": e["copies"][1]["test_accuracy"],
             "error_barrier": e["error_barrier"], "loss_barrier": e["loss_barrier"], "stable": e["stable"]}
            for e in entries])
        return content


def bn_batches(data, batch_size: int, ticket) -> list:
    """Training batches (up to :data:`BN_EXAMPLES` examples, in the split's order) to recompute the
    BatchNormalization statistics from; none for a model without BatchNormalization."""
    from tf_lth.training import stability

    if not stability.batchnorm_layers(ticket.source):
        return []
    import numpy as np

    n = -(-min(len(data.x_train), BN_EXAMPLES) // batch_size)
    return [np.asarray(x) for x, _ in data.pipeline("train", batch_size).take(n)]


# -- the runner's entry points -------------------------------------------------------------------------
def auto_rewind(ticket, config: ExperimentConfig, data, folder, *, training=None, verbose: int = 0,
                log=print) -> dict:
    """``--rewind auto``: scan ``ticket`` (the dense network at θ0) into ``folder`` at the config's
    ``rewind_points`` (default :func:`auto_points`), stopping at the first stable point, and return the
    choice (:func:`choice`) after logging its line. A finished scan is read back, nothing retrained."""
    scan = Scan(ticket, config, data, folder, training=training, verbose=verbose, log=log)
    points = config.rewind_points or auto_points(scan.total, scan.training.steps_per_execution)
    content = scan.run(points, until_stable=True)
    auto = choice(content["points"], scan.threshold)
    write_json(Path(folder) / AUTO_FILE, auto)  # kept as made, whatever points a later scan adds
    log(choice_line(auto))
    return auto


def read_choice(folder) -> dict:
    """The choice a finished ``--rewind auto`` scan in ``folder`` made (a resumed run: nothing retrained)."""
    return read_json(Path(folder) / AUTO_FILE)


def scan_run(run_dir, points, rounds=None, out=None, *, seeds=None, alphas: int = DEFAULT_ALPHAS,
             threshold: float | None = None, data_dir: str | None = None, verbose: int = 0, log=print) -> dict:
    """``tf-lth instability RUN_DIR``: scan the dense network of a run folder (its config and θ0), and at
    each of ``rounds`` that round's ticket (its masks over θ0), into ``out`` (default ``RUN_DIR/instability``;
    a round's in ``round_<r>/`` below) under the run's strategy (the chief writes). Returns ``{round: the
    scan's JSON}``."""
    run_dir = Path(run_dir)
    config = ExperimentConfig.of_run(run_dir, ("config.json", "ticket.json"),
                                     "give the output folder of a `tf-lth run`, or --model/--dataset for a scan of its own")
    from tf_lth.ticket import store

    wanted = sorted({int(r) for r in rounds or ()})
    have = [int(r) for r in store.saved_rounds(run_dir)]
    bad = [r for r in wanted if r not in have or r == 0]
    if bad:
        raise TfLthError(f"{run_dir} has no pruned round {', '.join(map(str, bad))}: choose from "
                         f"{', '.join(str(r) for r in have if r) or 'none yet'}")
    from tf_lth.ticket import flavours

    kit, scans = flavours.by_version(config.keras).training, {}
    with kit.session(config, run_dir / FOLDER if out is None else Path(out)) as session:  # the run's strategy
        raw = _data(config, None, data_dir)
        for r in [0, *wanted]:
            ticket = store.load(run_dir, round=r)  # its masks over θ0 (round 0: all ones)
            folder = session.folder if r == 0 else session.folder / f"round_{r}"
            scan = Scan(ticket, config, _data(config, ticket, data_dir, raw), folder, seeds=seeds, alphas=alphas,
                        threshold=threshold, training=session.training, verbose=verbose, log=log)
            scans[r] = scan.run(points or config.rewind_points
                                or auto_points(scan.total, scan.training.steps_per_execution))
    return scans


def scan_config(config: ExperimentConfig, out, points=None, *, seeds=None, alphas: int = DEFAULT_ALPHAS,
                threshold: float | None = None, verbose: int = 0, log=print) -> dict:
    """``tf-lth instability --model M --dataset D ...``: the dense network the run of ``config`` would
    start from (same seed, so the same θ0), scanned into ``out`` under the config's strategy (the chief
    writes; ``points``: default the config's ``rewind_points``, else :func:`auto_points`)."""
    config = config.resolved()
    from tf_lth.models import networks
    from tf_lth.ticket import flavours
    from tf_lth.ticket.ticket import LotteryTicket

    kit = flavours.by_version(config.keras).training
    with kit.session(config, Path(out)) as session:
        kit.keras.utils.set_random_seed(config.seed)
        raw = _data(config, None, None)
        model = networks.build(config.model, raw.input_shape, raw.num_classes, config.keras)
        ticket = LotteryTicket(model, replace(config.ticket, rewind="init"))  # its own rewind: unused
        data = _data(config, ticket, None, raw)
        scan = Scan(ticket, config, data, session.folder, seeds=seeds, alphas=alphas, threshold=threshold,
                    training=session.training, verbose=verbose, log=log)
        points = points or config.rewind_points or auto_points(scan.total, scan.training.steps_per_execution)
        return scan.run(points)


def _data(config: ExperimentConfig, ticket, data_dir, loaded=None):
    """The run's dataset (``loaded``, else read), at the input scale the run decides for ``ticket``'s model."""
    from tf_lth.data import input_scale as input_scale_lib
    from tf_lth.data import pipeline as data_lib

    data = loaded if loaded is not None else data_lib.load_config(config, data_dir)
    if ticket is None:
        return data
    return data.with_input_scale(input_scale_lib.decide(ticket.source, config.input_scale).scale)


__all__ = ["Scan", "SCAN_FILE", "AUTO_FILE", "FOLDER", "auto_points", "nice", "check_points", "choice", "choice_line",
           "auto_rewind", "read_choice", "scan_run", "scan_config", "default_seeds", "parse_seeds", "REWIND_AUTO"]

