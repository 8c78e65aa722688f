"""Whole lottery-ticket experiments: rounds with controls, resume, results, plots and export.

One output folder per experiment (layout in the README)::

    config.json  results.json  results.csv  ticket.json  theta0.npz  [thetak.npz]
    rounds/<k>/  masks.npz weights.npz result.json [<control>.json] [*.ckpt.npz while running]
    plots/  tensorboard/  export/round_<k>/

Every file is written atomically; a finished round has ``rounds/<k>/result.json`` and is skipped
on re-run; an unfinished one continues from its last epoch checkpoint, and since each epoch's
batch order depends only on ``(seed, round, epoch)`` the resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time
import zlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from tf_lth import data as data_lib
from tf_lth import models
from tf_lth.keras2 import can_jit_compile, has_gpu, keras
from tf_lth.errors import TfLthError
from tf_lth.io import atomic_write, read_json, read_npz, write_json, write_npz
from tf_lth.callbacks import check_steps_per_execution
from tf_lth.lottery import CONTROLS, LotteryTicket, TicketConfig
from tf_lth.rewind import Rewind

OPTIMIZERS = ("adam", "sgd")
# config keys that may change when a run is resumed: where the data lives, what is exported, and
# how many steps run per call into TensorFlow (each step computes the same either way)
FREE_KEYS = ("data_dir", "export", "steps_per_execution")
EXPORT_FORMATS = ("saved_model", "tflite", "int8", "fp16")
MAX_STEPS_PER_EXECUTION = 100  # the automatic choice: more gains nothing measurable


@dataclass(frozen=True)
class ExperimentConfig(TicketConfig):
    """Everything that defines an experiment: :class:`TicketConfig`'s pruning options, then model,
    data and training; ``None`` means the model's paper default."""

    rate: float | None = None  # None: the model's per-layer paper rates
    model: str = "lenet_300_100"
    dataset: str = "mnist5k"
    data_dir: str | None = None
    rounds: int = 10
    controls: tuple = ("random_reinit",)
    epochs: int | None = None
    iterations: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    momentum: float = 0.0
    validation: int | None = None
    eval_every: int | None = None
    export: tuple = ("saved_model", "tflite", "int8")
    # XLA for the training step; None: on, except for convolutional models without a GPU, where
    # only the optimizer's update is compiled (XLA's CPU convolutions are ~1.6x slower than
    # TensorFlow's on Conv-2; a compiled update makes its step ~10% faster)
    jit_compile: bool | None = None
    # training steps per call into TensorFlow (Keras' steps_per_execution); None: the most, up to
    # MAX_STEPS_PER_EXECUTION, that keep every evaluation point, θk step and epoch end on a call's end
    steps_per_execution: int | None = None

    def __post_init__(self):
        models.spec(self.model)
        if self.dataset not in data_lib.DATASETS:
            raise TfLthError(f"unknown dataset {self.dataset!r}: choose one of {', '.join(data_lib.DATASETS)}")
        if not isinstance(self.rounds, int) or self.rounds < 0:
            raise TfLthError(f"rounds = {self.rounds} must be a whole number >= 0")
        if self.epochs is not None and self.iterations is not None:
            raise TfLthError("give epochs or iterations per round, not both")
        for name in ("epochs", "iterations", "batch_size", "eval_every", "steps_per_execution"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise TfLthError(f"{name} = {value} must be a whole number >= 1")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise TfLthError(f"learning_rate = {self.learning_rate} must be > 0")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise TfLthError(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        for name, allowed in (("controls", CONTROLS), ("export", EXPORT_FORMATS)):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            bad = [c for c in getattr(self, name) if c not in allowed]
            if bad:
                raise TfLthError(f"unknown {name} {', '.join(bad)}: choose from {', '.join(allowed)}")
        for name in ("ignore", "block_size", "m_by_n"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else tuple(value))
        self.ticket_config()  # validates the pruning options
        if self.steps_per_execution:
            marks = {"eval_every": self.eval_every, "the rewind step": Rewind.parse(self.rewind).iteration}
            check_steps_per_execution(self.steps_per_execution, {k: n for k, n in marks.items() if n})

    def ticket_config(self) -> TicketConfig:
        spec = models.spec(self.model)
        by_layer = self.rate is None and self.scope == "layerwise"  # the spec's per-layer rates
        rates = self.rates if self.rates is not None else (dict(spec.rates) if by_layer else None)
        rate = self.rate if self.rate is not None else spec.rates.get("dense", 0.2)
        options = {f.name: getattr(self, f.name) for f in fields(TicketConfig)}
        return TicketConfig(**{**options, "rate": rate, "rates": rates, "ignore": self.ignore or ()})

    def make_optimizer(self):
        spec = models.spec(self.model)
        lr = self.learning_rate or spec.learning_rate
        if (self.optimizer or spec.optimizer) == "sgd":
            return keras.optimizers.SGD(lr, momentum=self.momentum)
        return keras.optimizers.Adam(lr)


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class _EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights, optimizer state, θk and the curve at every epoch end (atomically)."""

    def __init__(self, ticket: LotteryTicket, path: Path, ticket_callback):
        super().__init__()
        self.ticket, self.path, self.cb = ticket, path, ticket_callback

    def on_epoch_end(self, epoch, logs=None):
        arrays = {f"w{i}": a for i, a in enumerate(self.ticket.get_weights())}
        arrays.update({f"opt{i}": v.numpy() for i, v in enumerate(self.model.optimizer.variables)})
        if self.ticket.thetak is not None:
            arrays.update({f"thetak{i}": a for i, a in enumerate(self.ticket.thetak)})
        meta = {"epoch": epoch + 1, "start": self.cb._start, "steps": self.cb._steps, "curve": self.cb.curve}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        write_npz(self.path, arrays)


class Experiment:
    """Runs (or resumes) one experiment into ``output``; :meth:`run` returns results.json's content."""

    def __init__(self, config: ExperimentConfig, output, verbose: int = 1, log=print):
        self.config, self.out, self.verbose, self.log = config, Path(output), verbose, log
        self.spec = models.spec(config.model)

    # -- folder --------------------------------------------------------------------------
    def _claim_folder(self) -> None:
        """Write config.json, or check that the folder holds this very experiment (where the data
        lives and which formats are exported do not change the results, so they may differ)."""
        path = self.out / "config.json"
        mine = json.loads(json.dumps(asdict(self.config)))
        if path.exists():
            theirs = read_json(path)
            differ = [k for k in sorted(set(mine) | set(theirs))
                      if k not in FREE_KEYS and theirs.get(k) != mine.get(k)]
            if differ:
                diff = ", ".join(f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}" for k in differ)
                raise TfLthError(
                    f"{self.out} holds an experiment with another config ({diff}): use another --output or delete it")
        else:
            write_json(path, mine)

    def restart_from(self, k: int) -> None:
        """Forget rounds >= k so that the run continues from the end of round k - 1."""
        if k < 0:
            raise TfLthError(f"--restart-round {k} must be >= 0")
        for rd in (self.out / "rounds").glob("*"):
            if rd.name.isdigit() and int(rd.name) >= k:
                shutil.rmtree(rd)
        if k == 0:
            for name in ("ticket.json", "theta0.npz", "thetak.npz"):
                (self.out / name).unlink(missing_ok=True)
        elif (self.out / "ticket.json").exists():
            LotteryTicket.load(self.out, round=k - 1).save(self.out)

    # -- training ------------------------------------------------------------------------
    def _epochs(self, steps_per_epoch: int) -> int:
        if self.config.iterations:
            return max(1, round(self.config.iterations / steps_per_epoch))
        return self.config.epochs or 10

    def _steps_per_epoch(self) -> int:
        return -(-len(self.data.x_train) // (self.config.batch_size or self.spec.batch_size))

    def _steps_per_execution(self) -> int:
        cfg = self.config
        if cfg.steps_per_execution:
            return cfg.steps_per_execution
        marks = [n for n in (cfg.eval_every, Rewind.parse(cfg.rewind).iteration) if n]
        if not marks:
            return MAX_STEPS_PER_EXECUTION
        common = math.gcd(self._steps_per_epoch(), *marks)
        return max(d for d in range(1, min(common, MAX_STEPS_PER_EXECUTION) + 1) if common % d == 0)

    def _compile(self, ticket: LotteryTicket) -> None:
        optimizer, jit = self.config.make_optimizer(), self.config.jit_compile
        if jit is None:
            convolutional = any("conv" in type(layer).__name__.lower() for layer in ticket.source.layers)
            jit = not convolutional or has_gpu()
            if not jit:  # Keras compiles the optimizer's update with XLA on GPUs only; on CPUs it pays off too
                optimizer.jit_compile = can_jit_compile()
        ticket.model.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"], jit_compile=jit,
                             steps_per_execution=self._steps_per_execution())

    def _train(self, ticket: LotteryTicket, round_: int, name: str) -> dict:
        """Train ``ticket`` for one round, resuming from its epoch checkpoint if there is one."""
        cfg, data = self.config, self.data
        batch = cfg.batch_size or self.spec.batch_size
        steps = self._steps_per_epoch()
        epochs = self._epochs(steps)
        ckpt = self.out / "rounds" / str(round_) / f"{name}.ckpt.npz"
        cb = ticket.callback(test_data=self.test, validation_data=self.val if cfg.eval_every else None,
                             eval_every=cfg.eval_every)
        first = 0
        if ckpt.exists():
            first = self._restore(ticket, ckpt, cb)
        seed = [cfg.seed, round_, zlib.crc32(b"batches")]
        train, steps = data.epochs(batch, epochs, seed=np.random.default_rng(seed).integers(2**31),
                                   initial_epoch=first)
        board = keras.callbacks.TensorBoard(self.out / "tensorboard" / f"round_{round_}" / name,
                                            write_graph=False, profile_batch=0)
        if first < epochs:
            ticket.model.fit(train, epochs=epochs, initial_epoch=first, steps_per_epoch=steps,
                             validation_data=None if cfg.eval_every else self.val,
                             callbacks=[cb, _EpochCheckpoint(ticket, ckpt, cb), board], verbose=self.verbose)
        else:  # killed after the last epoch's checkpoint: the round is trained, record it
            cb.set_model(ticket.model)
            cb.on_train_end()
        entry = next(h for h in ticket.history if h["round"] == ticket.round)
        return {k: v for k, v in entry.items() if k != "curve"}

    def _restore(self, ticket: LotteryTicket, ckpt: Path, cb) -> int:
        state = read_npz(ckpt)
        try:
            meta = json.loads(state.pop("meta").tobytes())
            ticket.set_weights([state[f"w{i}"] for i in range(len(ticket.theta0))])
            opt = ticket.model.optimizer
            opt.build(ticket.model.trainable_variables)
            for i, v in enumerate(opt.variables):
                v.assign(state[f"opt{i}"])
            if "thetak0" in state:
                ticket.thetak = [state[f"thetak{i}"] for i in range(len(ticket.theta0))]
        except (KeyError, ValueError) as e:
            raise TfLthError(f"{ckpt} does not match this experiment ({e}): delete it") from None
        cb.resume(meta["curve"], meta["start"])
        cb._steps = meta["steps"]
        return int(meta["epoch"])

    # -- rounds --------------------------------------------------------------------------
    def _ticket_for(self, ticket: LotteryTicket | None, r: int) -> LotteryTicket:
        """The ticket ready to train round ``r``: carried over, or rebuilt from the folder."""
        if ticket is None:
            if (self.out / "ticket.json").exists():
                ticket = LotteryTicket.load(self.out)
            else:
                keras.utils.set_random_seed(self.config.seed)
                model = models.build(self.config.model, self.data.input_shape, self.data.num_classes)
                ticket = LotteryTicket(model, self.config.ticket_config())
                ticket.save(self.out)
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
        twin = ticket.control(kind)
        self._compile(twin)
        result = self._train(twin, r, kind)
        write_json(path, result)
        (self.out / "rounds" / str(r) / f"{kind}.ckpt.npz").unlink(missing_ok=True)
        return result

    def run(self, restart_round: int | None = None) -> dict:
        """Run the rounds not finished yet (after discarding rounds >= ``restart_round``)."""
        cfg = self.config
        self.data = data_lib.load(cfg.dataset, cfg.data_dir, cfg.validation, cfg.seed)
        self._claim_folder()
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
            self._progress(row, results, started)
        self._write_results(results)
        from tf_lth import plots

        plots.plot_results(results, self.out / "plots")
        if cfg.export and results and not (self.out / "export" / f"round_{results[-1]['round']}").exists():
            self._export(ticket, results[-1]["round"])
        self.log(summary_table(results, cfg.controls))
        return {"config": asdict(cfg), "rounds": results}

    def _round(self, ticket: LotteryTicket, r: int) -> dict:
        trained = next((h for h in ticket.history if h["round"] == r), None)
        metrics = {k: v for k, v in trained.items() if k != "curve"} if trained else self._train(ticket, r, "ticket")
        if not trained:
            ticket.save(self.out)
            (self.out / "rounds" / str(r) / "ticket.ckpt.npz").unlink(missing_ok=True)
        row = {
            "round": r,
            "weights_remaining": ticket.weights_remaining,
            "test_accuracy": metrics.get("test_accuracy"),
            "early_stop_iteration": metrics.get("early_stop_iteration"),
            "early_stop_test_accuracy": metrics.get("early_stop_test_accuracy"),
            "iterations": metrics.get("iterations"),
            "supermask_test_accuracy": ticket.supermask_accuracy(self.test, "original"),
            "supermask_signed_constant_test_accuracy": ticket.supermask_accuracy(self.test, "signed_constant"),
            "layers_remaining": {k: 1 - s for k, s in ticket.sparsity().items()},
            "controls": {kind: self._control(ticket, kind, r) for kind in self.config.controls} if r else {},
        }
        return row

    def _export(self, ticket: LotteryTicket | None, r: int) -> None:
        from tf_lth.export import export_ticket, summary

        if ticket is None or ticket.round != r:
            ticket = LotteryTicket.load(self.out, round=r)
        info = export_ticket(ticket.model, self.out / "export" / f"round_{r}", name=self.config.model, round=r,
                             dataset=self.data, formats=self.config.export)
        self.log(summary(info))

    def _progress(self, row: dict, results: list, started: float) -> None:
        left = self.config.rounds - row["round"]
        eta = (time.time() - started) / max(len(results), 1) * left
        controls = "".join(f"  {k} {v.get('test_accuracy', float('nan')):.4f}" for k, v in row["controls"].items())
        self.log(f"round {row['round']}/{self.config.rounds}  weights {100 * row['weights_remaining']:.1f}%  "
                 f"test {row['test_accuracy']:.4f}  early-stop it {row['early_stop_iteration']} "
                 f"({row['early_stop_test_accuracy']:.4f}){controls}  {row['wall_seconds']:.1f} s  "
                 f"ETA {eta / 60:.1f} min")

    def _write_results(self, results: list) -> None:
        write_json(self.out / "results.json", {"config": asdict(self.config), "rounds": results})
        flat = [_flatten(r) for r in results]
        columns = list(dict.fromkeys(k for row in flat for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, columns)
        writer.writeheader()
        writer.writerows(flat)
        atomic_write(self.out / "results.csv", lambda f: f.write(buf.getvalue().encode()))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def summary_table(results: list, controls: tuple) -> str:
    """The end-of-run table: one line per round (smask_sc: untrained supermask over signed constants)."""
    head = f"{'round':>5} {'remain%':>8} {'test':>7} {'es_iter':>8} {'es_test':>8} {'smask_sc':>9}"
    head += "".join(f" {c:>14}" for c in controls)
    lines = [head]
    for r in results:
        line = (f"{r['round']:>5} {100 * r['weights_remaining']:>8.2f} {r['test_accuracy']:>7.4f} "
                f"{r['early_stop_iteration']:>8} {r['early_stop_test_accuracy']:>8.4f} "
                f"{r['supermask_signed_constant_test_accuracy']:>9.4f}")
        line += "".join(f" {r['controls'][c]['test_accuracy']:>14.4f}" if c in r["controls"] else f" {'-':>14}"
                        for c in controls)
        lines.append(line)
    return "\n".join(lines)
