"""Whole lottery-ticket experiments: rounds with controls, resume, results, plots and export.

One output folder per experiment (layout in the README)::

    config.json  results.json  results.csv  ticket.json  theta0.npz  [thetak.npz]
    rounds/<k>/  masks.npz weights.npz result.json [<control>.json] [*.ckpt.npz while running]
    plots/  tensorboard/  export/round_<k>/

Every file is written atomically; a finished round has ``rounds/<k>/result.json`` and is skipped
on re-run; an unfinished one continues from its last epoch checkpoint, and since each epoch's
batch order depends only on ``(seed, round, epoch)`` the resumed run equals an uninterrupted one.
The config's ``keras`` picks the flavour the model is built and trained in (tf_keras:
:mod:`tf_lth.training`; Keras 3: :mod:`tf_lth.training3`). Under a ``tf.distribute`` strategy
(:mod:`tf_lth.distribute`) only the chief writes the folder; another worker trains in a temporary
copy of it.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from tf_lth import branches, controls, models, networks, replicates, store
from tf_lth import data as data_lib
from tf_lth.config import ExperimentConfig
from tf_lth.errors import TfLthError
from tf_lth.io import read_json, write_json
from tf_lth.results import SEED_PREFIX, flatten, summary_table, write_csv
from tf_lth.lottery import LotteryTicket
from tf_lth.plan import steps_per_epoch

# config keys that may change when a run is resumed: where the data lives, what is exported, and
# how many steps run per call into TensorFlow (each step computes the same either way)
FREE_KEYS = ("data_dir", "export", "training.steps_per_execution")


class Experiment:
    """Runs (or resumes) one experiment into ``output``; :meth:`run` returns results.json's content."""

    def __init__(self, config: ExperimentConfig, output, verbose: int = 1, log=print):
        self.config, self.out, self.verbose, self.log = config.resolved(), Path(output), verbose, log
        self.lib = branches.training_module(self.config.keras)  # the Keras flavour's compile_round, train_round, session

    # -- folder --------------------------------------------------------------------------
    def claim_folder(self) -> None:
        """Write config.json (the resolved config), or check that the folder holds this very
        experiment (where the data lives and which formats are exported do not change the results,
        so they may differ)."""
        path = self.out / "config.json"
        mine = flatten(self.config.to_dict())
        if path.exists():
            try:  # resolved again, so that a folder written before the config was nested compares too
                theirs = flatten(ExperimentConfig.from_folder(read_json(path)).resolved().to_dict())
            except (TfLthError, TypeError) as e:
                raise TfLthError(f"{path} holds no config of this version ({e}): use another --output or delete it") from None
            differ = [k for k in sorted(set(mine) | set(theirs))
                      if k not in FREE_KEYS and theirs.get(k) != mine.get(k)]
            if differ:
                diff = ", ".join(f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}" for k in differ)
                raise TfLthError(
                    f"{self.out} holds an experiment with another config ({diff}): use another --output or delete it")
        else:
            write_json(path, self.config.to_dict())

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
            for name in ("ticket.json", "theta0.npz", "thetak.npz"):
                (self.out / name).unlink(missing_ok=True)
        elif (self.out / "ticket.json").exists():
            store.save(store.load(self.out, round=k - 1), self.out)

    # -- training ------------------------------------------------------------------------
    def _train(self, ticket: LotteryTicket, round_: int, name: str) -> dict:
        """Train ``ticket`` for one round, resuming from its epoch checkpoint if there is one."""
        return self.lib.train_round(ticket, self.data, self.training, seed=self.config.seed, round_=round_,
                                    val=self.val, test=self.test,
                                    checkpoint=self.out / "rounds" / str(round_) / f"{name}.ckpt.npz",
                                    tensorboard=self.out / "tensorboard" / f"round_{round_}" / name,
                                    verbose=self.verbose, may_stop=name == "ticket" and self.intermediate(round_),
                                    log=(lambda line: self.log(f"{line} ({name})")) if self.verbose else None)

    def intermediate(self, round_: int) -> bool:
        """Whether the ticket of ``round_`` only decides the next mask (its stop rules apply): every
        round but the last, the ``full_tail`` rounds before it and the config's ``full_rounds``."""
        return round_ < self.config.rounds - self.config.training.full_tail and round_ not in self.config.training.full_rounds

    def _compile(self, ticket: LotteryTicket) -> None:
        self.lib.compile_round(ticket, self.training, steps_per_epoch(self.data, self.training))

    # -- rounds --------------------------------------------------------------------------
    def _ticket_for(self, ticket: LotteryTicket | None, r: int) -> LotteryTicket:
        """The ticket ready to train round ``r``: carried over, or rebuilt from the folder."""
        if ticket is None:
            if (self.out / "ticket.json").exists():
                ticket = store.load(self.out)
            else:
                self.lib.keras.utils.set_random_seed(self.config.seed)
                model = networks.build(self.config.model, self.data.input_shape, self.data.num_classes, self.config.keras)
                ticket = LotteryTicket(model, self.config.ticket)
                store.save(ticket, self.out)
            self._compile(ticket)
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
        strategy and precision (:mod:`tf_lth.distribute`); only the chief writes the folder, plots, export."""
        cfg, out = self.config, self.out
        with self.lib.session(cfg, out) as self.session:  # another worker: a temporary copy of the folder
            self.out, self.training = self.session.folder, self.session.training
            results, ticket = self._rounds(restart_round)
        self.out = out
        if self.session.is_chief:
            from tf_lth import plots  # matplotlib: only where figures are drawn
            plots.plot_results(branches.rows_with_branches(out), out / "plots")  # branches stay drawn
            plots.plot_mask_distance(results, out / "plots" / "mask_distance.png")
            if cfg.export and results and not (out / "export" / f"round_{results[-1]['round']}").exists():
                self._export(ticket, results[-1]["round"])
        self.log(summary_table(results, cfg.controls))
        return {"config": cfg.to_dict(), "rounds": results}

    def _rounds(self, restart_round: int | None) -> tuple[list, LotteryTicket | None]:
        cfg = self.config
        self.data = data_lib.load_config(cfg)
        self.claim_folder()
        if restart_round is not None:
            self.restart_from(restart_round)
        self.val, self.test = self.data.pipeline("val", 1000), self.data.pipeline("test", 1000)
        results, ticket, started = [], None, time.time()
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
            self.log(progress_line(cfg, row, results, started))
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
            "test_accuracy": metrics.get("test_accuracy"),
            "early_stop_iteration": metrics.get("early_stop_iteration"),
            "early_stop_test_accuracy": metrics.get("early_stop_test_accuracy"),
            "iterations": metrics.get("iterations"),
            "supermask_test_accuracy": controls.untrained_accuracy(ticket, self.test, "original"),
            "supermask_signed_constant_test_accuracy": controls.untrained_accuracy(ticket, self.test, "signed_constant"),
            "layers_remaining": {k: 1 - s for k, s in ticket.sparsity().items()},
            "controls": {kind: self._control(ticket, kind, r) for kind in self.config.controls} if r else {},
        }
        tr = self.config.training
        if tr.early_bird is not None or tr.patience:  # stop rules on: why each round ended
            row.update({"stopped": metrics.get("stopped", "end"),
                        **{k: metrics[k] for k in ("mask_distance",) if k in metrics}})
        return row

    def _export(self, ticket: LotteryTicket | None, r: int) -> None:
        from tf_lth.export import export_ticket, summary

        if ticket is None or ticket.round != r:
            ticket = store.load(self.out, round=r)
        info = export_ticket(ticket.model, self.out / "export" / f"round_{r}", name=self.config.model, round=r,
                             dataset=self.data, formats=self.config.export)
        self.log(summary(info))

    def _write_results(self, results: list) -> None:
        totals = {"total_iterations": sum(r.get("iterations") or 0 for r in results),
                  "total_wall_seconds": round(sum(r.get("wall_seconds") or 0 for r in results), 2)}
        write_json(self.out / "results.json", {"config": self.config.to_dict(), "model_source": models.spec(
            self.config.model).source, "distribution": self.session.record, "rounds": results, **totals})
        write_csv(self.out / "results.csv", results)


def progress_line(config: ExperimentConfig, row: dict, results: list, started: float) -> str:
    """The line a finished round prints: accuracy, early stop, controls, time, speed, ETA."""
    eta = (time.time() - started) / max(len(results), 1) * (config.rounds - row["round"])
    controls = "".join(f"  {k} {v.get('test_accuracy', float('nan')):.4f}" for k, v in row["controls"].items())
    trained = (row.get("iterations") or 0) + sum(v.get("iterations") or 0 for v in row["controls"].values())
    speed = trained * config.training.batch_size / max(row["wall_seconds"], 1e-9)
    return (f"round {row['round']}/{config.rounds}  weights {100 * row['weights_remaining']:.1f}%  "
            f"test {row['test_accuracy']:.4f}  early-stop it {row['early_stop_iteration']} "
            f"({row['early_stop_test_accuracy']:.4f}){controls}  {row['wall_seconds']:.1f} s  "
            f"{speed:,.0f} examples/s  ETA {eta / 60:.1f} min")


def run_replicates(config: ExperimentConfig, output, seeds, verbose: int = 1, log=print,
                   restart_round: int | None = None) -> dict:
    """Run ``config`` once per seed into ``output/seed_<s>/`` (in sequence, each resumable: a finished
    seed is read back, not retrained), then write the aggregate (see :mod:`tf_lth.replicates`)."""
    output = Path(output)
    for seed in seeds:
        log(f"== seed {seed}")
        folder = output / f"{SEED_PREFIX}{seed}"
        Experiment(replace(config, seed=seed), folder, verbose=verbose, log=log).run(restart_round=restart_round)
    return replicates.aggregate_folder(output, seeds)
