"""Whole lottery-ticket experiments: rounds with controls, resume, results, plots and export.

One output folder per experiment (layout in the README)::

    config.json  results.json  results.csv  ticket.json  theta0.npz  [thetak.npz]
    rounds/<k>/  masks.npz weights.npz result.json [<control>.json] [*.ckpt.npz while running]
    plots/  tensorboard/  export/round_<k>/

Every file is written atomically; a finished round has ``rounds/<k>/result.json`` and is skipped
on re-run; an unfinished one continues from its last epoch checkpoint, and since each epoch's
batch order depends only on ``(seed, round, epoch)`` the resumed run equals an uninterrupted one.
The config's ``keras`` picks the flavour the model is built and trained in (its
:class:`~tf_lth.ticket.flavours.Flavour` record's training kit: :mod:`tf_lth.keras2.training` or
:mod:`tf_lth.keras3.training`). Under a ``tf.distribute`` strategy
(:mod:`tf_lth.training.cluster`) only the chief writes the folder; another worker trains in a temporary
copy of it.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from tf_lth.config.configs import REWIND_AUTO, ExperimentConfig
from tf_lth.data import input_scale as input_scale_lib
from tf_lth.data import pipeline as data_lib
from tf_lth.errors import TfLthError
from tf_lth.models import networks
from tf_lth.models import specs as models
from tf_lth.pruning import controls
from tf_lth.runner import branches, replicates
from tf_lth.runner.results import SEED_PREFIX, flatten, summary_table, write_csv
from tf_lth.ticket import flavours, store
from tf_lth.ticket.ticket import LotteryTicket
from tf_lth.training import fit_round
from tf_lth.training.evaluation import untrained_accuracy
from tf_lth.util.io import read_json, write_json

# config keys that may change when a run is resumed: where the data lives, what is exported and how,
# and how many steps run per call into TensorFlow (each step computes the same either way)
FREE_KEYS = ("data_dir", "export", "optimize_for", "training.steps_per_execution")


class Experiment:
    """Runs (or resumes) one experiment into ``output``; :meth:`run` returns results.json's content.

    ``verbose``: Keras' own progress per epoch (0: none; 1: a bar; 2: a line per epoch); ``log`` takes the
    runner's lines (one per trained network, the summary, the export). ``strict_export``: a format of the
    config's ``export`` that fails its check fails the run (the user named them); otherwise it is left out
    with a warning. Nothing is written to ``output`` before the data and the model load."""

    def __init__(self, config: ExperimentConfig, output, verbose: int = 0, log=print, strict_export: bool = False):
        self.config, self.out, self.verbose, self.log = config.resolved(), Path(output), verbose, log
        self.strict_export = strict_export
        self.kit = flavours.by_version(self.config.keras).training  # the flavour's compile, checkpoint, session
        self.scale = None  # the input scale, once the model is known (tf_lth.data.input_scale)
        self.rewind_auto = None  # --rewind auto: the scan's summary and choice (results.json's rewind_auto)

    # -- folder --------------------------------------------------------------------------
    def check_folder(self, restart_round: int | None = None) -> bool:
        """Whether ``output`` holds this very experiment already (``False``: none; a different one is a
        one-line refusal). Where the data lives and how the files are exported do not change the results,
        so they may differ. A folder whose start failed before any round or ticket was written, and a
        ``--restart-round 0``, which discards every round, take the new config."""
        path = self.out / "config.json"
        if not path.exists():
            return False
        started = (self.out / "ticket.json").exists() or any((self.out / "rounds").glob("*/result.json"))
        if restart_round == 0 or not started:
            return False
        try:
            text = read_json(path)
        except TfLthError:
            raise TfLthError(f"{path} is damaged (not JSON): delete it to resume with this command's config "
                             "(the rounds stay), or use another --output") from None
        try:  # resolved again, so that a folder written before the config was nested compares too
            theirs = flatten(ExperimentConfig.from_folder(text).resolved().to_dict())
        except (TfLthError, TypeError) as e:
            raise TfLthError(f"{path} holds no config of this version ({e}): use another --output or delete "
                             "the folder") from None
        mine = flatten(self.config.to_dict())
        differ = [k for k in sorted(set(mine) | set(theirs)) if k not in FREE_KEYS and theirs.get(k) != mine.get(k)]
        if differ:
            diff = ", ".join(f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}" for k in differ)
            raise TfLthError(f"{self.out} holds an experiment with another config ({diff}): use another --output, "
                             "or --restart-round 0 to discard its rounds and start this one there")
        return True

    def claim_folder(self, restart_round: int | None = None) -> None:
        """Check the folder (:meth:`check_folder`) and write config.json (the resolved config) unless it holds
        this experiment already."""
        if not self.check_folder(restart_round):
            write_json(self.out / "config.json", self.config.to_dict())

    def restart_from(self, k: int) -> None:
        """Forget rounds >= k so that the run continues from the end of round k - 1."""
        if k < 0:
            raise TfLthError(f"--restart-round {k} must be >= 0")
        for rd in (self.out / "rounds").glob("*"):
            if rd.name.isdigit() and int(rd.name) >= k:
                shutil.rmtree(rd)
        for rd in (self.out / branches.BRANCHES).glob("*/rounds/*"):  # they would describe the old masks
            if rd.name.isdigit() and int(rd.name) >= k:
                shutil.rmtree(rd)
                (rd.parent.parent / "results.json").unlink(missing_ok=True)
        if k == 0:
            for name in ("ticket.json", "theta0.npz", "thetak.npz", "results.json", "results.csv"):
                (self.out / name).unlink(missing_ok=True)
        elif (self.out / "ticket.json").exists():
            store.save(store.load(self.out, round=k - 1), self.out)

    # -- training ------------------------------------------------------------------------
    def _train(self, ticket: LotteryTicket, round_: int, name: str) -> dict:
        """Train ``ticket`` for one round, resuming from its epoch checkpoint if there is one, and log its line."""
        label = f"round {round_}/{self.config.rounds} {name}"
        metrics = fit_round.train_round(self.kit, ticket, self.data, self.training, seed=self.config.seed, round_=round_,
                                       val=self.val, test=self.test,
                                       checkpoint=self.out / "rounds" / str(round_) / f"{name}.ckpt.npz",
                                       tensorboard=self.out / "tensorboard" / f"round_{round_}" / name,
                                       verbose=self.verbose, may_stop=name == "ticket" and self.intermediate(round_),
                                       log=lambda line: self.log(f"{label}: {line}"))
        self.trained += 1  # the run's ETA: its time so far per network trained, times the networks left
        left = (self.config.rounds - round_) * (1 + len(self.config.controls)) + self.left_in_round(round_, name)
        eta = (time.time() - self.started) / self.trained * left
        macs = ticket.macs_remaining if ticket.config.granularity != "weight" else None
        self.log(network_line(label, ticket.weights_remaining, metrics, macs) + (f"  ETA {eta / 60:.1f} min" if left else ""))
        return dict(metrics)

    def left_in_round(self, round_: int, name: str) -> int:
        """The networks of ``round_`` still to train after ``name`` (the ticket, then each control)."""
        order = ["ticket", *(self.config.controls if round_ else ())]
        return len(order) - 1 - order.index(name) if name in order else 0

    def intermediate(self, round_: int) -> bool:
        """Whether the ticket of ``round_`` only decides the next mask (its stop rules apply): every
        round but the last, the ``full_tail`` rounds before it and the config's ``full_rounds``."""
        return round_ < self.config.rounds - self.config.training.full_tail and round_ not in self.config.training.full_rounds

    def _compile(self, ticket: LotteryTicket) -> None:
        self.kit.compile_round(ticket, self.training, fit_round.steps_per_epoch(self.data, self.training))

    # -- rounds --------------------------------------------------------------------------
    def _first_ticket(self, restart_round: int | None) -> tuple[LotteryTicket, bool]:
        """The ticket the run continues from (read from the folder, at ``restart_round - 1`` if given) or a
        new one, compiled, its input scale decided; and whether it is new. Nothing is written here but
        ``--rewind auto``'s scan (``instability/``)."""
        saved = (self.out / "ticket.json").exists() and restart_round != 0
        if saved:
            try:
                ticket = store.load(self.out, round=None if restart_round is None else restart_round - 1)
            except TfLthError as e:  # a damaged file of the round the run stopped in: redo that round
                try:
                    k = read_json(self.out / "ticket.json")["round"]
                except (TfLthError, KeyError, TypeError):
                    k = 0
                raise TfLthError(f"{e} (or rerun with --restart-round {k})") from None
        else:
            if restart_round == 0 and self.auto:  # the scan described the discarded config
                shutil.rmtree(self.out / "instability", ignore_errors=True)
            ticket = self._new_ticket(self._auto_rewind() if self.auto else self.config.ticket.rewind)
        if self.auto and saved:  # the finished scan read back: nothing retrained
            from tf_lth.runner import instability
            self.rewind_auto = instability.read_choice(self.out / instability.FOLDER)
        self.scale = input_scale_lib.decide(ticket.source, self.config.input_scale)
        self.data = self.data.with_input_scale(self.scale.scale)
        self._compile(ticket)
        return ticket, not saved

    def _new_ticket(self, rewind: str) -> LotteryTicket:
        """The dense network of the config's seed (so the same θ0 however often it is built) as a new ticket."""
        self.kit.keras.utils.set_random_seed(self.config.seed)
        model = networks.build(self.config.model, self.data.input_shape, self.data.num_classes, self.config.keras)
        return LotteryTicket(model, replace(self.config.ticket, rewind=rewind))

    @property
    def auto(self) -> bool:
        return self.config.ticket.rewind == REWIND_AUTO

    def _auto_rewind(self) -> str:
        """``--rewind auto``: the instability scan of the dense network (``instability/``, resumable), and the
        rewind point it picks; the ticket is then built afresh from the seed, as a run without the scan."""
        from tf_lth.runner import instability  # only runs that ask for the scan load it

        scout = self._new_ticket("init")
        scale = input_scale_lib.decide(scout.source, self.config.input_scale)
        self.rewind_auto = instability.auto_rewind(scout, self.config, self.data.with_input_scale(scale.scale),
                                                   self.out / instability.FOLDER, training=self.training,
                                                   verbose=self.verbose, log=self.log)
        return self.rewind_auto["chosen"]

    def _ticket_for(self, ticket: LotteryTicket, r: int) -> LotteryTicket:
        """The ticket ready to train round ``r``: pruned and rewound from round ``r - 1`` if need be."""
        if ticket.round == r - 1 and any(h["round"] == r - 1 for h in ticket.history):
            ticket.next_round()
        if ticket.round != r:
            raise TfLthError(f"{self.out} is inconsistent at round {r}: rerun with --restart-round {r}")
        return ticket

    def _control(self, ticket: LotteryTicket, kind: str, r: int) -> dict:
        path = self.out / "rounds" / str(r) / f"{kind}.json"
        if path.exists():
            return read_json(path)
        twin = controls.make(ticket, kind)
        self._compile(twin)
        result = self._train(twin, r, kind)
        write_json(path, result)
        (self.out / "rounds" / str(r) / f"{kind}.ckpt.npz").unlink(missing_ok=True)
        return result

    def run(self, restart_round: int | None = None) -> dict:
        """Run the rounds not finished yet (after discarding rounds >= ``restart_round``) under the config's
        strategy and precision (:mod:`tf_lth.training.cluster`); only the chief writes the folder, plots, export."""
        cfg, out = self.config, self.out
        with self.kit.session(cfg, out) as self.session:  # another worker: a temporary copy of the folder
            self.out, self.training = self.session.folder, self.session.training
            results, ticket = self._rounds(restart_round)
        self.out = out
        if self.session.is_chief:
            from tf_lth.runner import plots  # matplotlib: only where figures are drawn
            plots.plot_results(branches.rows_with_branches(out), out / "plots")  # branches stay drawn
            plots.plot_mask_distance(results, out / "plots" / "mask_distance.png")
        self.log(summary_table(results, cfg.controls))
        if self.session.is_chief and cfg.export and results:
            folder = out / "export" / f"round_{results[-1]['round']}"
            if not folder.exists():
                self._export(ticket, results[-1]["round"], folder)
        return {"config": cfg.to_dict(), "rounds": results}

    def _rounds(self, restart_round: int | None) -> tuple[list, LotteryTicket]:
        cfg = self.config
        resumed = self.check_folder(restart_round)  # a different experiment is refused before anything loads
        self.data = data_lib.load_config(cfg)
        ticket, new = self._first_ticket(restart_round)  # the model and data load before the folder is claimed
        if restart_round is not None:
            self.restart_from(restart_round)
        self.claim_folder(restart_round)
        if new:
            store.save(ticket, self.out)
        done = [r for r in range(cfg.rounds + 1) if (self.out / "rounds" / str(r) / "result.json").exists()]
        self.log(start_line(cfg, self.out, self.data, done if resumed else [], self.scale))
        self.val, self.test = self.data.pipeline("val", 1000), self.data.pipeline("test", 1000)
        results, self.started, self.trained = [], time.time(), 0
        for r in range(cfg.rounds + 1):
            done = self.out / "rounds" / str(r) / "result.json"
            if done.exists():
                results.append(read_json(done))
                continue
            t0 = time.time()
            try:
                ticket = self._ticket_for(ticket, r)
                row = self._round(ticket, r)
            except TfLthError as e:
                raise TfLthError(f"{e} (or rerun with --restart-round {r})") from None
            row["wall_seconds"] = round(time.time() - t0, 2)
            write_json(done, row)
            results.append(row)
            self._write_results(results)
        self._write_results(results)
        return results, ticket

    def _round(self, ticket: LotteryTicket, r: int) -> dict:
        trained = next((h for h in ticket.history if h["round"] == r), None)
        metrics = {k: v for k, v in trained.items() if k != "curve"} if trained else self._train(ticket, r, "ticket")
        if not trained:
            store.save(ticket, self.out)
            (self.out / "rounds" / str(r) / "ticket.ckpt.npz").unlink(missing_ok=True)
        row = {
            "round": r,
            "weights_remaining": ticket.weights_remaining,
            "macs_remaining": ticket.macs_remaining,
            "test_accuracy": metrics.get("test_accuracy"),
            "early_stop_iteration": metrics.get("early_stop_iteration"),
            "early_stop_test_accuracy": metrics.get("early_stop_test_accuracy"),
            "iterations": metrics.get("iterations"),
            "supermask_test_accuracy": untrained_accuracy(ticket, self.test, "original"),
            "supermask_signed_constant_test_accuracy": untrained_accuracy(ticket, self.test, "signed_constant"),
            "layers_remaining": {k: 1 - s for k, s in ticket.sparsity().items()},
            **({"units_kept": ticket.units_kept()} if ticket.config.granularity != "weight" else {}),
            "controls": {kind: self._control(ticket, kind, r) for kind in self.config.controls} if r else {},
        }
        tr = self.config.training
        if tr.early_bird is not None or tr.patience:  # stop rules on: why each round ended
            row.update({"stopped": metrics.get("stopped", "end"),
                        **{k: metrics[k] for k in ("mask_distance",) if k in metrics}})
        return row

    def _export(self, ticket: LotteryTicket, r: int, folder: Path) -> None:
        from tf_lth.export import export_ticket, summary

        if ticket.round != r:
            ticket = store.load(self.out, round=r)
        formats = self.config.export
        if ticket.config.granularity != "weight" and "shrunk" not in formats:
            formats = (*formats, "shrunk")  # a structured ticket ships as the smaller dense network too
        info = export_ticket(ticket, folder, name=self.config.model, round=r, dataset=self.data,
                             formats=formats, strict=self.config.export if self.strict_export else False, optimize_for=self.config.optimize_for,
                             input_scale=self.scale, verbose=0)
        self.log(summary(info))
        files = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
        self.log(f"exported round {r} to {folder}/: {', '.join(files)}")

    def _write_results(self, results: list) -> None:
        totals = {"total_iterations": sum(r.get("iterations") or 0 for r in results),
                  "total_wall_seconds": round(sum(r.get("wall_seconds") or 0 for r in results), 2)}
        write_json(self.out / "results.json", {
            "config": self.config.to_dict(), "model_source": models.spec(self.config.model).source,
            "distribution": self.session.record, "input": self.scale.to_dict(), "rounds": results, **totals,
            **({"rewind_auto": self.rewind_auto} if self.rewind_auto else {})})
        write_csv(self.out / "results.csv", results)


def start_line(config: ExperimentConfig, out: Path, data, done: list, scale) -> str:
    """What the run does (model, data, rounds, controls, folder), what it resumes, and the input scale."""
    tr = config.training
    length = f"{tr.iterations:,} iterations" if tr.iterations else f"{tr.epochs} epoch{'s' * (tr.epochs != 1)}"
    sizes = "/".join(f"{len(x):,}" for x in (data.x_train, data.x_val, data.x_test))
    controls = ", ".join(config.controls) or "none"
    line = (f"{config.model} on {config.dataset} ({sizes} train/val/test), {config.rounds} pruning rounds after "
            f"the dense one, {length} each, controls: {controls} -> {out}/")
    if done:
        ranges = f"{done[0]}-{done[-1]}" if done == list(range(done[0], done[-1] + 1)) else ",".join(map(str, done))
        line += f"\nresuming: round{'s' * (len(done) > 1)} {ranges} finished (read back), the next one continues " \
                "from its last epoch checkpoint if it has one"
    return f"{line}\ninput: {scale.reason}"


def network_line(label: str, weights_remaining: float, metrics, macs_remaining: float | None = None) -> str:
    """The line a trained network prints: weights left, test accuracy, the early-stopping point, speed."""
    best = metrics.get("early_stop_iteration")
    early = (f"  min val loss at it {best:,} (test {metrics['early_stop_test_accuracy']:.4f})"
             if best is not None and metrics.get("early_stop_test_accuracy") is not None else "")
    stopped = f"  stopped early ({metrics['stopped']})" if metrics.get("stopped") not in (None, "end") else ""
    speed = f"  {metrics.examples_per_second:,.0f} examples/s" if getattr(metrics, "steps_run", 0) else ""
    macs = f" {100 * macs_remaining:5.1f}% of MACs" if macs_remaining is not None else ""
    return (f"{label:<28} {100 * weights_remaining:5.1f}% of weights{macs}  test {metrics.get('test_accuracy', float('nan')):.4f}"
            f"{early}{stopped}{speed}")


def run_replicates(config: ExperimentConfig, output, seeds, verbose: int = 0, log=print,
                   restart_round: int | None = None, strict_export: bool = False) -> dict:
    """Run ``config`` once per seed into ``output/seed_<s>/`` (in sequence, each resumable: a finished
    seed is read back, not retrained), then write the aggregate (see :mod:`tf_lth.runner.replicates`)."""
    output = Path(output)
    for seed in seeds:
        log(f"== seed {seed}")
        folder = output / f"{SEED_PREFIX}{seed}"
        Experiment(replace(config, seed=seed), folder, verbose=verbose, log=log, strict_export=strict_export).run(
            restart_round=restart_round)
    return replicates.aggregate_folder(output, seeds)
