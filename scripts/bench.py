#!/usr/bin/env python
"""Speed and memory of tf-lth against the plain tf_keras + TF-MOT script a user would write.

    scripts/bench.py [--parts w epoch ops tflite resnet20] [--repeats 3] [--out bench.json] [--data-dir DIR]
    scripts/bench.py --parts w --repeats 1 --w-rounds 1 --w-epochs 1   # a smoke check of W (numbers meaningless)
    scripts/bench.py --parts resnet20 --resnet-repeats 5               # ResNet-20 round vs plain fit, CPU or GPU
    scripts/bench.py --parts keras3 --repeats 2                        # Keras 3 round vs plain Keras 3 fit; W by flavour
    scripts/bench.py --parts early_bird                                # a round with early-bird candidates vs without

Parts (all by default; 8 minutes on 2 quiet cores with W taking 5 of them before W had its fourth side,
which adds an estimated 1.5 minutes, resnet20 an estimated 3 more and early_bird 1):

w       Work W: LeNet-300-100 on Fashion-MNIST, SGD 0.1, batch 128, a dense round and 3 levels of
        5 epochs, global 20% per level (output layer never pruned), rewind to init, a test pass
        per epoch, run as a fresh process four ways: tf-lth's runner (scripts/run_lth.py), the
        plain TF-MOT script (scripts/baseline_tfmot.py) with Keras' defaults ("tfmot"), the same
        script with the settings tf-lth uses ("tfmot-tuned", ``--tuned``: XLA step,
        steps_per_execution 100, tf_lth.data.pipeline's uint8 pipeline, test pass at batch 1000; TF-MOT's
        own wrapper, mask op and UpdatePruningStep: the strongest fair baseline) and the default
        script without wrappers (``--dense``). Repeat i runs all four with seed i, one after the
        other (interleaved, rotating who goes first). Wall time and peak RSS are the whole
        process's (``wait4``). ``--w-rounds`` / ``--w-epochs`` shrink W for a smoke check.
epoch   Seconds per training epoch of a tf-lth round (the runner's compile settings, input
        pipeline and callback, after one pruning round) against plain ``fit`` of the dense model on
        float32 numpy arrays, in this process, alternating. LeNet-300-100: Fashion-MNIST, W's
        optimizer. Conv-2: Fashion-MNIST images zero-padded to 32x32 and repeated over 3 channels
        (CIFAR-shaped input from real images), the paper's Adam 2e-4 and batch 60, over the first
        ``--conv-images`` training images per epoch.
ops     What the engine does between rounds on LeNet-300-100 (mask computation, rewind, saving
        the ticket, the epoch checkpoint, the two supermask evaluations) and the export the runner
        does once at the end, against the wall time of a round of W run by the runner in this
        process.
tflite  Bytes, latency (batch 1 and 64, one thread) and test accuracy of exported LeNet-300-100
        tickets at several sparsities, fp32 and int8, unstructured and in 1x4 blocks, against the
        dense fp32 file: :func:`tf_lth.export.export_ticket` on tickets pruned in one shot from a
        dense model trained 2 epochs, then fine-tuned 1 epoch under their masks.
resnet20
        Seconds per epoch of a ResNet-20 lottery-ticket round with the model's recipe (SGD momentum
        0.9, step decay at 80/120 epochs, l2 weight decay in the loss, batch 128, augmentation,
        global 20%, rewind iteration:500; compiled by ``training.compile_round``, after
        ``next_round``, trained by ``fit`` with ``ticket.callback()``) against plain ``fit`` of the
        dense Keras ResNet-20 compiled the same way (same optimizer and schedule, loss with the same
        l2 term, XLA setting, steps per execution) on the same augmented ``tf.data`` pipeline: the
        fair baseline. ``--resnet-images`` padded Fashion-MNIST images (32x32x3) per epoch; after a
        warm-up epoch each, the sides alternate (rotating who goes first). Reports the device (the
        CPU, or the GPU's name).

keras3  Keras 3 (TensorFlow backend), issue 12: seconds per epoch of a Keras 3 LeNet-300-100 round (W's
        recipe, built by ``networks.build(..., keras=3)``, compiled by ``training3.compile_round``, after
        ``next_round``, ``fit`` with ``ticket.callback()``) against plain Keras 3 ``fit`` of the dense
        model compiled with the same settings (optimizer, loss, XLA, steps per execution) on the same
        ``tf.data`` pipeline, alternating; and W through the runner (``run_lth.py --keras 3``) beside
        tf_keras (``--keras 2``) as fresh processes, ``--repeats`` each, alternating: examples per second
        of training (iterations x batch over the rounds' wall seconds) and whole-process wall time.

early_bird
        Issue 15: seconds per epoch of a LeNet-300-100 round in the README's Fashion-MNIST reproduction
        (Adam 1.2e-3, batch 60, an evaluation every 100 steps on the validation and test sets, the
        runner's compile settings, after one pruning round) with the early-bird rule on (window 5;
        EPS so small that it never stops, so every point draws a candidate mask and measures it
        against the window) against the same round without it, alternating; and the milliseconds of
        one evaluation point's candidate (``draw_masks`` timed in those epochs, the window's distances)
        beside those of its validation and test passes.

Ratios are medians of same-repeat ratios (the machine is noisy: only those mean anything).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

W = {"rounds": 3, "epochs": 5, "rate": 0.2, "batch_size": 128, "learning_rate": 0.1}
PARTS = ("w", "epoch", "ops", "tflite", "resnet20", "keras3", "early_bird")
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)


def median(values):
    return statistics.median(values) if values else None


def table(rows) -> str:
    from tf_lth.export import format_table

    return format_table([[str(c) for c in row] for row in rows])


# -- 1. work W, four ways, whole processes --------------------------------------------------------
# the sides of W; ratios are taken against both TF-MOT scripts
W_VARIANTS = ("tf-lth", "tfmot", "tfmot-tuned", "dense")
W_BASELINES = {"tfmot": "plain TF-MOT script, Keras' defaults",
               "tfmot-tuned": "plain TF-MOT script, tf-lth's settings (strongest fair baseline)"}


def w_commands(seed: int, out: Path, data_dir: str | None, rounds: int = W["rounds"],
               epochs: int = W["epochs"]) -> dict:
    python = sys.executable
    runner = [python, str(ROOT / "scripts" / "run_lth.py"), "--dataset", "fashion_mnist", "--optimizer", "sgd",
              "--learning-rate", str(W["learning_rate"]), "--batch-size", str(W["batch_size"]),
              "--rounds", str(rounds), "--epochs", str(epochs), "--scope", "global",
              "--rate", str(W["rate"]), "--ignore", "output", "--controls", "none", "--export", "none",
              "--quiet", "--seed", str(seed), "-o", str(out / f"tf-lth-{seed}")]
    plain = [python, str(ROOT / "scripts" / "baseline_tfmot.py"), "--rounds", str(rounds),
             "--epochs", str(epochs), "--rate", str(W["rate"]), "--seed", str(seed)]
    if data_dir:
        runner += ["--data-dir", data_dir]
        plain += ["--data-dir", data_dir]
    return {"tf-lth": runner, "tfmot": plain, "tfmot-tuned": [*plain, "--tuned"], "dense": [*plain, "--dense"]}


def run_process(command: list, log: Path) -> dict:
    """Wall seconds and peak RSS (MiB) of ``command`` as a fresh process; its output goes to ``log``."""
    with open(log, "wb") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{tail}")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def final_accuracy(name: str, seed: int, out: Path, log: Path) -> dict:
    """Test accuracy after the last level, the weights remaining at each level (for the scripts: as
    intended by their masks and as counted in the trained kernels), the seconds of each pruning
    round (tf-lth only) and, for the scripts, their settings."""
    if name == "tf-lth":
        rounds = json.loads((out / f"tf-lth-{seed}" / "results.json").read_text())["rounds"]
        return {"test_accuracy": rounds[-1]["test_accuracy"], "round_s": [r["wall_seconds"] for r in rounds[1:]],
                "weights_remaining": [round(r["weights_remaining"], 4) for r in rounds]}
    line = json.loads([ln for ln in log.read_text().splitlines() if ln.startswith("{")][-1])
    levels = line["levels"]
    result = {"test_accuracy": levels[-1]["test_accuracy"], "round_s": [],
              "weights_remaining": [lv["weights_remaining"] for lv in levels], "settings": line.get("settings")}
    if not line["dense"]:
        measured = [lv["measured_weights_remaining"] for lv in levels]
        result["measured_weights_remaining"] = measured
        result["masks_held"] = measured == result["weights_remaining"]
    return result


def part_w(args) -> dict:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for seed in range(args.repeats):
            commands = list(w_commands(seed, out, args.data_dir, args.w_rounds, args.w_epochs).items())
            first = seed % len(commands)
            commands = commands[first:] + commands[:first]  # rotate who goes first
            for name, command in commands:
                log = out / f"{name}-{seed}.log"
                result = run_process(command, log)
                result.update(final_accuracy(name, seed, out, log))
                runs.append({"variant": name, "seed": seed, **result})
                masks = {True: "  masks held", False: "  MASKS LEAKED"}.get(result.get("masks_held"), "")
                print(f"  W {name:11s} seed {seed}: {result['wall_s']:6.1f} s  {result['peak_rss_mib']:7.1f} MiB  "
                      f"test {result['test_accuracy']:.4f}  weights {100 * result['weights_remaining'][-1]:.1f}%"
                      f"{masks}", flush=True)

    def of(name, key):
        return [r[key] for r in runs if r["variant"] == name]

    def ratio(name, key, baseline):  # median of same-seed ratios
        return median([a / b for a, b in zip(of(name, key), of(baseline, key))])

    summary = {}
    for name in W_VARIANTS:
        summary[name] = {"wall_s": median(of(name, "wall_s")), "peak_rss_mib": median(of(name, "peak_rss_mib")),
                         "test_accuracy_mean": round(statistics.mean(of(name, "test_accuracy")), 4),
                         "final_weights_remaining": median([w[-1] for w in of(name, "weights_remaining")]),
                         "wall_vs_tfmot": ratio(name, "wall_s", "tfmot"),
                         "rss_vs_tfmot": ratio(name, "peak_rss_mib", "tfmot"),
                         "wall_vs_tfmot_tuned": ratio(name, "wall_s", "tfmot-tuned"),
                         "rss_vs_tfmot_tuned": ratio(name, "peak_rss_mib", "tfmot-tuned")}
        held = [r["masks_held"] for r in runs if r["variant"] == name and "masks_held" in r]
        if held:
            summary[name]["masks_held"] = all(held)
        settings = next((r["settings"] for r in runs if r["variant"] == name and r.get("settings")), None)
        if settings:
            summary[name]["settings"] = settings
    round_s = median([s for r in runs if r["variant"] == "tf-lth" for s in r["round_s"]])
    rows = [("variant", "wall s", "x tfmot", "x tfmot-tuned", "peak RSS MiB", "x tfmot", "x tfmot-tuned",
             "final test acc (mean of seeds)", "final weights")]
    for name, s in summary.items():
        rows.append((name, f"{s['wall_s']:.1f}", f"{s['wall_vs_tfmot']:.2f}", f"{s['wall_vs_tfmot_tuned']:.2f}",
                     f"{s['peak_rss_mib']:.0f}", f"{s['rss_vs_tfmot']:.2f}", f"{s['rss_vs_tfmot_tuned']:.2f}",
                     f"{s['test_accuracy_mean']:.4f}", f"{100 * s['final_weights_remaining']:.1f}%"))
    print(table(rows))
    for name, what in W_BASELINES.items():
        print(f"  {name}: {what}; settings {summary[name].get('settings')}")
    tf_lth = summary["tf-lth"]
    print(f"  tf-lth vs plain TF-MOT with Keras' defaults: wall {tf_lth['wall_vs_tfmot']:.2f}x, "
          f"peak RSS {tf_lth['rss_vs_tfmot']:.2f}x")
    print(f"  tf-lth vs plain TF-MOT with tf-lth's settings (strongest fair baseline): "
          f"wall {tf_lth['wall_vs_tfmot_tuned']:.2f}x, peak RSS {tf_lth['rss_vs_tfmot_tuned']:.2f}x")
    reduced = (args.w_rounds, args.w_epochs) != (W["rounds"], W["epochs"])
    if reduced:
        print(f"  (reduced W: {args.w_rounds} levels x {args.w_epochs} epochs; a smoke check, not W's numbers)")
    return {"runs": runs, "summary": summary, "tf_lth_round_s": round_s, "baselines": W_BASELINES,
            "rounds": args.w_rounds, "epochs": args.w_epochs, "reduced": reduced}


# -- 2. seconds per epoch, in process ----------------------------------------------------------------
def padded_rgb(ds, n: int):
    """The first ``n`` training images (and the whole test split) zero-padded to 32x32, 3 channels."""
    import numpy as np

    from tf_lth import data

    def rgb(x):
        return np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)

    return data.Dataset("fashion_mnist_32x32x3", rgb(ds.x_train[:n]), ds.y_train[:n], rgb(ds.x_val[:1000]),
                        ds.y_val[:1000], rgb(ds.x_test[:1000]), ds.y_test[:1000])


def runner_ticket(cfg, ds):
    """A ticket built and compiled exactly as tf-lth's runner does it for ``cfg`` (an
    ExperimentConfig; its model's recipe filled in), and the resolved config."""
    from tf_lth import keras
    from tf_lth.models import networks
    from tf_lth.keras2 import training
    from tf_lth.ticket.ticket import LotteryTicket

    cfg = cfg.resolved()
    keras.utils.set_random_seed(cfg.seed)
    ticket = LotteryTicket(networks.build(cfg.model, ds.input_shape, ds.num_classes), cfg.ticket)
    training.compile_round(ticket, cfg.training, training.steps_per_epoch(ds, cfg.training))
    return ticket, cfg


def epoch_clock(keras=None):
    """A Keras callback (of ``keras``, default tf_keras) whose ``seconds`` are those from the start to the end
    of the (single) epoch of a ``fit``."""
    if keras is None:
        from tf_lth import keras

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    return Clock()


def alternate(sides: dict, reps: int) -> dict:
    """Seconds of ``reps`` calls of each side's ``fn(rep)``, the sides alternating, who goes first
    rotating with the repeat: side -> list of seconds."""
    times = {name: [] for name in sides}
    for rep in range(reps):
        names = list(sides)
        names = names[rep % len(names):] + names[:rep % len(names)]
        for name in names:
            times[name].append(round(sides[name](rep), 3))
    return times


def epoch_ratio(cfg, ds, reps: int) -> dict:
    from tf_lth import keras
    from tf_lth.models import networks
    from tf_lth.keras2 import training

    ticket, cfg = runner_ticket(cfg, ds)
    batch = cfg.training.batch_size
    keras.utils.set_random_seed(cfg.seed)
    plain = networks.build(cfg.model, ds.input_shape, ds.num_classes)
    plain.compile(optimizer=training.make_optimizer(cfg.training), loss=training.LOSS, metrics=["accuracy"])
    x, y = ds.arrays("train")

    def ticket_epoch(rep):
        train, steps = ds.epochs(batch, 1, seed=rep)
        clock = epoch_clock()
        ticket.model.fit(train, epochs=1, steps_per_epoch=steps, callbacks=[ticket.callback(), clock], verbose=0)
        return clock.seconds

    def plain_epoch(rep):
        clock = epoch_clock()
        plain.fit(x, y, batch_size=batch, epochs=1, callbacks=[clock], verbose=0)
        return clock.seconds

    ticket_epoch(1000)  # compile, then a pruning round as in W's levels
    ticket.next_round()
    ticket_epoch(1001)
    plain_epoch(1000)
    times = alternate({"tf-lth": ticket_epoch, "plain": plain_epoch}, reps)
    ratios = [a / b for a, b in zip(times["tf-lth"], times["plain"])]
    return {"images": len(ds.x_train), "batch": batch, "jit_compile": ticket.model.jit_compile,
            "optimizer_jit_compile": ticket.model.optimizer.jit_compile,
            "steps_per_execution": training.steps_per_execution(
                cfg.training, training.steps_per_epoch(ds, cfg.training), ticket.rewind.iteration),
            "times_s": times,
            "tf_lth_s": median(times["tf-lth"]), "plain_s": median(times["plain"]), "ratio": round(median(ratios), 3)}


def w_config(**options):
    """W's LeNet-300-100 run as an ExperimentConfig (``options`` add to or override it)."""
    from tf_lth.config.configs import ExperimentConfig

    return ExperimentConfig.from_dict({"dataset": "fashion_mnist", "optimizer": "sgd",
                                       "learning_rate": W["learning_rate"], "batch_size": W["batch_size"],
                                       "scope": "global", "rate": W["rate"], "ignore": ("output",), "controls": (),
                                       "export": (), **options})


def part_epoch(args, ds) -> dict:
    from tf_lth.config.configs import ExperimentConfig

    out = {"lenet_300_100": epoch_ratio(w_config(), ds, args.epoch_repeats)}
    conv = ExperimentConfig.from_dict({"model": "conv2", "dataset": "fashion_mnist", "controls": (), "export": ()})
    out["conv2"] = epoch_ratio(conv, padded_rgb(ds, args.conv_images), args.epoch_repeats)
    rows = [("model", "images/epoch", "batch", "XLA", "steps/exec", "tf-lth s/epoch", "plain fit s/epoch", "ratio")]
    for name, r in out.items():
        xla = "step" if r["jit_compile"] else "update" if r["optimizer_jit_compile"] else "no"
        rows.append((name, f"{r['images']:,}", r["batch"], xla, r["steps_per_execution"],
                     f"{r['tf_lth_s']:.2f}", f"{r['plain_s']:.2f}", f"{r['ratio']:.2f}"))
    print(table(rows))
    return out


# -- 3. engine operations between rounds -----------------------------------------------------------------
def timed_calls(obj, methods, seconds: list) -> None:
    """Wrap ``obj``'s (public) ``methods`` on this instance so that each call appends its duration to
    ``seconds``: how the rewind's share of ``next_round`` is timed from outside the library."""
    for method in methods:
        def timed(*a, _f=getattr(obj, method), **k):
            start = time.perf_counter()
            result = _f(*a, **k)
            seconds.append(time.perf_counter() - start)
            return result
        setattr(obj, method, timed)


def part_ops(args, ds) -> dict:
    from tf_lth import export
    from tf_lth.ticket import store
    from tf_lth.keras2 import supermask
    from tf_lth.keras2 import training
    from tf_lth.keras2.callback import RoundProgress
    from tf_lth.runner.experiment import Experiment

    cfg = w_config(data_dir=args.data_dir, rounds=1, epochs=W["epochs"])
    times = {k: [] for k in ("prune (masks)", "rewind", "save", "epoch checkpoint", "supermask evals (2)")}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        experiment = Experiment(cfg, run, verbose=0, log=lambda *a: None)
        results = experiment.run()
        round_s = results["rounds"][1]["wall_seconds"]
        ticket = store.load(run)
        train_cfg = experiment.config.training  # resolved, as the runner compiled with it
        training.compile_round(ticket, train_cfg, training.steps_per_epoch(experiment.data, train_cfg))
        ticket.model.optimizer.build(ticket.model.trainable_variables)
        test = ds.pipeline("test", 1000)
        rewind = []
        timed_calls(ticket, ("rewind_to", "reset_optimizer"), rewind)
        callback = ticket.callback().resume(RoundProgress(start=0))  # as if a round had begun at step 0
        checkpoint = training.EpochCheckpoint(ticket, Path(tmp) / "ckpt.npz", callback)
        checkpoint.set_model(ticket.model)
        for _ in range(args.ops_repeats):
            rewind.clear()
            start = time.perf_counter()
            ticket.next_round()
            total = time.perf_counter() - start
            times["rewind"].append(sum(rewind))
            times["prune (masks)"].append(total - sum(rewind))
            for name, fn in (("save", lambda: store.save(ticket, Path(tmp) / "saved")),
                             ("epoch checkpoint", lambda: checkpoint.on_epoch_end(0)),
                             ("supermask evals (2)", lambda: [supermask.untrained_accuracy(ticket, test, s)
                                                              for s in ("original", "signed_constant")])):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        export_s = {}
        for benchmark in (True, False):
            start = time.perf_counter()
            export.export_ticket(ticket.model, Path(tmp) / f"export-{benchmark}", name="lenet_300_100",
                                 round=ticket.round, dataset=ds, benchmark=benchmark)
            export_s[benchmark] = time.perf_counter() - start
    per_round = {k: median(v) for k, v in times.items()}
    between = per_round["prune (masks)"] + per_round["rewind"] + per_round["save"]
    rows = [("operation", "seconds", "% of a round")]
    for name, s in per_round.items():
        rows.append((name, f"{s:.4f}", f"{100 * s / round_s:.2f}"))
    rows.append(("prune + rewind + save", f"{between:.4f}", f"{100 * between / round_s:.2f}"))
    for benchmark, s in export_s.items():
        what = "with" if benchmark else "without"
        rows.append((f"export, {what} latency runs (once per run)", f"{s:.2f}", f"{100 * s / round_s:.1f}"))
    print(f"a LeNet-300-100 round of W (5 epochs, val + test per epoch, in this process): {round_s:.2f} s")
    print(table(rows))
    return {"round_s": round_s, "seconds": per_round, "between_rounds_s": round(between, 4),
            "between_rounds_fraction": round(between / round_s, 4),
            "export_s": {"with_latency": round(export_s[True], 2), "without_latency": round(export_s[False], 2)}}


# -- 4. exported tickets -----------------------------------------------------------------------------------
def part_tflite(args, ds) -> dict:
    from tf_lth import export, keras
    from tf_lth.models import networks
    from tf_lth.ticket.ticket import LotteryTicket
    from tf_lth.export.tflite import BLOCK_STRUCTURES
    from tf_lth.keras2.training import LOSS

    def train(model, epochs, callbacks=()):
        model.compile(optimizer=keras.optimizers.SGD(W["learning_rate"]), loss=LOSS, metrics=["accuracy"])
        model.fit(ds.pipeline("train", W["batch_size"], shuffle=True), epochs=epochs, callbacks=list(callbacks),
                  verbose=0)

    keras.utils.set_random_seed(0)
    dense = networks.build("lenet_300_100", ds.input_shape)
    train(dense, 2)
    tickets, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for structure, block in BLOCK_STRUCTURES.items():
            for sparsity in args.sparsity:
                trained = dense.get_weights()
                # one shot from the trained weights, which it keeps (finetune): θ0 = θ_final = trained
                ticket = LotteryTicket.one_shot(keras.models.clone_model(dense), trained, trained, rewind="finetune",
                                                block_size=block, rates={"dense": sparsity, "output": sparsity})
                train(ticket.model, 1, [ticket.callback()])
                info = export.export_ticket(ticket.model, Path(tmp) / f"{structure}-{sparsity}",
                                            name="lenet_300_100", round=1, dataset=ds, formats=("tflite", "int8"))
                dense_us = info["dense"]["latency_us"].values()
                fastest = {b: min(lat[b] for lat in dense_us) for b in ("batch1", "batch32")}
                for kind, r in info["formats"].items():
                    t = {"structure": structure, "sparsity": sparsity, "format": kind, "bytes": r["bytes"],
                         "bytes_vs_dense": r["bytes_vs_dense"], "resolver": r["resolver"],
                         "latency_us": r["latency_us"], "speedup_vs_dense_same_resolver": r["speedup_vs_dense"],
                         "speedup_vs_fastest_dense": {b: round(fastest[b] / r["latency_us"][b], 3) for b in fastest},
                         "keras_test_accuracy": info["keras_test_accuracy"], "test_accuracy": r["test_accuracy"]}
                    tickets.append(t)
                    rows.append((structure, f"{sparsity:.2f}", kind, f"{t['bytes']:,}", f"{t['bytes_vs_dense']:.3f}",
                                 f"{t['latency_us']['batch1']:.1f}", f"{t['speedup_vs_fastest_dense']['batch1']:.2f}",
                                 f"{t['speedup_vs_dense_same_resolver']['batch1']:.2f}",
                                 f"{t['latency_us']['batch32']:.1f}", f"{t['speedup_vs_fastest_dense']['batch32']:.2f}",
                                 f"{t['keras_test_accuracy']:.4f}", f"{t['test_accuracy']:.4f}", t["resolver"]))
    reference = {"bytes": info["dense"]["bytes"], "latency_us": info["dense"]["latency_us"]}
    print(f"dense fp32: {reference['bytes']:,} bytes; " + "; ".join(
        f"{res}: {lat['batch1']:.1f} us (batch 1), {lat['batch32']:.1f} us (batch 32)"
        for res, lat in reference["latency_us"].items()))
    print(table([("structure", "sparsity", "format", "bytes", "x dense", "us b1", "x faster b1", "(same resolver)",
                  "us b32", "x faster b32", "keras acc", "tflite acc", "resolver"), *rows]))
    return {"dense": reference, "tickets": tickets}


# -- 5. ResNet-20: a lottery-ticket round's epoch against plain fit, same recipe ---------------------------
RESNET_BASELINE = ("plain fit of the dense Keras ResNet-20, same optimizer and schedule, same loss with the l2 "
                   "term, same XLA setting and steps per execution, same augmented tf.data pipeline (the fair "
                   "baseline)")


def device_name() -> str:
    """The GPU's name where TensorFlow sees one, else the CPU's model (and its core count)."""
    from tf_lth.keras2 import has_gpu, tf

    if has_gpu():
        gpu = tf.config.list_physical_devices("GPU")[0]
        return "GPU " + tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu} ({os.cpu_count()} cores)"


def part_resnet20(args, ds) -> dict:
    """Seconds per epoch of a pruned ResNet-20 round against plain fit of the dense model (module docstring)."""
    from tf_lth import keras
    from tf_lth import data
    from tf_lth.models import networks
    from tf_lth.keras2 import training
    from tf_lth.config.configs import ExperimentConfig

    n = args.resnet_images
    # fitted as data.load(..., image_size=(32, 32), channels=3, resize="pad") fits them
    fit = lambda x: data.fit_images(x, (32, 32), 3, "pad")  # noqa: E731
    ds = data.Dataset("fashion_mnist_32x32x3", fit(ds.x_train[:n]), ds.y_train[:n], fit(ds.x_val[:1000]),
                      ds.y_val[:1000], fit(ds.x_test[:1000]), ds.y_test[:1000])
    cfg = ExperimentConfig.from_dict({"model": "resnet20", "dataset": "fashion_mnist", "image_size": (32, 32),
                                      "channels": 3, "resize": "pad", "controls": (), "export": ()})
    ticket, cfg = runner_ticket(cfg, ds)  # the model's recipe, resolved; compiled by training.compile_round
    tr, batch = cfg.training, cfg.training.batch_size
    steps = training.steps_per_epoch(ds, tr)
    per_execution = training.steps_per_execution(tr, steps, ticket.rewind.iteration)

    keras.utils.set_random_seed(cfg.seed)
    plain = networks.build(cfg.model, ds.input_shape, ds.num_classes)
    optimizer = training.make_optimizer(tr, steps, training.round_steps(tr, steps))
    optimizer.jit_compile = ticket.model.optimizer.jit_compile
    loss = training.LOSS
    if tr.weight_decay and tr.weight_decay_kind == "l2":
        loss = training.with_l2(training.LOSS, plain, tr.weight_decay)
    plain.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=ticket.model.jit_compile,
                  steps_per_execution=per_execution)

    def epoch(model, callbacks, rep):
        train, n_steps = ds.epochs(batch, 1, seed=rep, augment=bool(tr.augment))
        clock = epoch_clock()
        model.fit(train, epochs=1, steps_per_epoch=n_steps, callbacks=[*callbacks, clock], verbose=0)
        return clock.seconds

    def ticket_epoch(rep):
        return epoch(ticket.model, [ticket.callback()], rep)

    def plain_epoch(rep):
        return epoch(plain, [], rep)

    warmup = {"round 0 (compiles)": ticket_epoch(1000)}
    if ticket.thetak is None:  # round 0 was shorter than the rewind step: θk is taken at its end instead
        ticket.record_thetak()  # (where the weights rewind to does not change what a step costs)
    start = time.perf_counter()
    ticket.next_round()  # global 20% of the convolutions, rewind to θk, optimizer reset to step K
    warmup["next_round"] = time.perf_counter() - start
    warmup["round 1"] = ticket_epoch(1001)
    warmup["plain (compiles)"] = plain_epoch(1000)
    times = alternate({"tf-lth": ticket_epoch, "plain": plain_epoch}, args.resnet_repeats)
    ratios = [a / b for a, b in zip(times["tf-lth"], times["plain"])]
    result = {"device": device_name(), "images": n, "batch": batch, "steps_per_epoch": steps,
              "jit_compile": bool(ticket.model.jit_compile),
              "optimizer_jit_compile": bool(ticket.model.optimizer.jit_compile),
              "steps_per_execution": per_execution, "weight_decay": [tr.weight_decay, tr.weight_decay_kind],
              "schedule": [tr.schedule, list(tr.milestones or ())], "rewind": cfg.ticket.rewind,
              "weights_remaining": round(sum(int(ticket.masks[k].sum()) for k in ticket.pruned_keys())
                                         / sum(ticket.masks[k].size for k in ticket.pruned_keys()), 4),
              "warmup_s": {k: round(v, 3) for k, v in warmup.items()}, "times_s": times,
              "tf_lth_s": median(times["tf-lth"]), "plain_s": median(times["plain"]),
              "ratio": round(median(ratios), 3), "baseline": RESNET_BASELINE}
    xla = "step" if result["jit_compile"] else "update" if result["optimizer_jit_compile"] else "no"
    print(f"device: {result['device']}")
    print(table([("model", "images/epoch", "batch", "XLA", "steps/exec", "tf-lth round s/epoch",
                  "plain fit s/epoch", "ratio"),
                 ("resnet20", f"{n:,}", batch, xla, per_execution, f"{result['tf_lth_s']:.2f}",
                  f"{result['plain_s']:.2f}", f"{result['ratio']:.3f}")]))
    print(f"  baseline: {RESNET_BASELINE}")
    print(f"  tf-lth side: round {ticket.round} after next_round ({100 * result['weights_remaining']:.1f}% of the "
          f"pruned weights left), {cfg.ticket.rewind} rewinding, per-epoch seconds {times['tf-lth']}; plain {times['plain']}")
    return result


# -- 6. Keras 3 (issue 12) ---------------------------------------------------------------------------------------
def keras3_epoch_ratio(ds, reps: int) -> dict:
    """A Keras 3 round's epoch (the runner's build, compile and callback, after a pruning round) against plain
    Keras 3 ``fit`` of the dense model with the same compile settings, on the same pipeline, alternating."""
    from tf_lth.models import networks
    from tf_lth.keras3 import training as training3
    from tf_lth.keras3 import keras
    from tf_lth.ticket.ticket import LotteryTicket

    cfg = w_config(keras=3).resolved()
    batch, steps = cfg.training.batch_size, training3.steps_per_epoch(ds, cfg.training)
    keras.utils.set_random_seed(cfg.seed)
    ticket = LotteryTicket(networks.build(cfg.model, ds.input_shape, ds.num_classes, keras=3), cfg.ticket)
    training3.compile_round(ticket, cfg.training, steps)
    keras.utils.set_random_seed(cfg.seed)
    plain = networks.build(cfg.model, ds.input_shape, ds.num_classes, keras=3)
    plain.compile(optimizer=training3.make_optimizer(cfg.training, steps, steps), loss=training3.LOSS,
                  metrics=["accuracy"], jit_compile=ticket.model.jit_compile,
                  steps_per_execution=ticket.model.steps_per_execution)

    def epoch(model, callbacks, rep):
        train, n = ds.epochs(batch, 1, seed=rep)
        clock = epoch_clock(keras)
        model.fit(train, epochs=1, steps_per_epoch=n, callbacks=[*callbacks, clock], verbose=0, shuffle=False)
        return clock.seconds

    def ticket_epoch(rep):
        return epoch(ticket.model, [ticket.callback()], rep)

    def plain_epoch(rep):
        return epoch(plain, [], rep)

    ticket_epoch(1000)  # compile, then a pruning round as in W's levels
    ticket.next_round()
    ticket_epoch(1001)
    plain_epoch(1000)
    times = alternate({"keras3 ticket": ticket_epoch, "keras3 plain": plain_epoch}, reps)
    ratios = [a / b for a, b in zip(times["keras3 ticket"], times["keras3 plain"])]
    return {"images": len(ds.x_train), "batch": batch, "jit_compile": ticket.model.jit_compile,
            "steps_per_execution": ticket.model.steps_per_execution, "times_s": times,
            "ticket_s": median(times["keras3 ticket"]), "plain_s": median(times["keras3 plain"]),
            "ratio": round(median(ratios), 3)}


def keras3_w(args) -> dict:
    """W through the runner with --keras 2 and --keras 3, fresh processes, alternating: training examples per
    second (iterations x batch over the rounds' wall seconds) and the process's wall time."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for seed in range(args.repeats):
            flavours = [2, 3] if seed % 2 == 0 else [3, 2]
            for flavour in flavours:
                command = w_commands(seed, out / f"k{flavour}", args.data_dir, args.w_rounds, args.w_epochs)["tf-lth"]
                (out / f"k{flavour}").mkdir(exist_ok=True)
                result = run_process([*command, "--keras", str(flavour)], out / f"k{flavour}-{seed}.log")
                rows = json.loads((out / f"k{flavour}" / f"tf-lth-{seed}" / "results.json").read_text())["rounds"]
                examples = sum(r["iterations"] for r in rows) * W["batch_size"]
                result.update({"keras": flavour, "seed": seed, "test_accuracy": rows[-1]["test_accuracy"],
                               "examples_per_s": round(examples / sum(r["wall_seconds"] for r in rows), 1)})
                runs.append(result)
                print(f"  W --keras {flavour} seed {seed}: {result['wall_s']:6.1f} s  {result['examples_per_s']:8,.0f} "
                      f"examples/s  test {result['test_accuracy']:.4f}", flush=True)

    def of(flavour, key):
        return [r[key] for r in runs if r["keras"] == flavour]

    summary = {f"keras{k}": {"wall_s": median(of(k, "wall_s")), "examples_per_s": median(of(k, "examples_per_s")),
                             "peak_rss_mib": median(of(k, "peak_rss_mib")),
                             "test_accuracy_mean": round(statistics.mean(of(k, "test_accuracy")), 4)} for k in (2, 3)}
    summary["keras3_vs_keras2_examples_per_s"] = round(median(
        [a / b for a, b in zip(of(3, "examples_per_s"), of(2, "examples_per_s"))]), 3)
    summary["keras3_vs_keras2_wall"] = round(median([a / b for a, b in zip(of(3, "wall_s"), of(2, "wall_s"))]), 3)
    return {"runs": runs, "summary": summary, "reduced": (args.w_rounds, args.w_epochs) != (W["rounds"], W["epochs"])}


def part_keras3(args, ds) -> dict:
    out = {"epoch": keras3_epoch_ratio(ds, args.epoch_repeats)}
    e = out["epoch"]
    print(table([("LeNet-300-100, Keras 3", "images/epoch", "batch", "XLA", "steps/exec", "ticket s/epoch",
                  "plain fit s/epoch", "ratio"),
                 ("", f"{e['images']:,}", e["batch"], e["jit_compile"], e["steps_per_execution"], f"{e['ticket_s']:.2f}",
                  f"{e['plain_s']:.2f}", f"{e['ratio']:.2f}")]))
    out["w"] = keras3_w(args)
    s = out["w"]["summary"]
    print(table([("W through the runner", "wall s", "examples/s", "peak RSS MiB", "test acc (mean)"),
                 *((f"--keras {k}", f"{s[f'keras{k}']['wall_s']:.1f}", f"{s[f'keras{k}']['examples_per_s']:,.0f}",
                    f"{s[f'keras{k}']['peak_rss_mib']:.0f}", f"{s[f'keras{k}']['test_accuracy_mean']:.4f}") for k in (2, 3))]))
    print(f"  --keras 3 / --keras 2: examples/s {s['keras3_vs_keras2_examples_per_s']:.2f}x, wall "
          f"{s['keras3_vs_keras2_wall']:.2f}x (medians of same-seed ratios; a noisy shared machine)")
    return out


# -- 7. early-bird candidates ------------------------------------------------------------------------------
def part_early_bird(args, ds) -> dict:
    from tf_lth.pruning import stopping
    from tf_lth.config.configs import ExperimentConfig

    cfg = ExperimentConfig.from_dict({"dataset": "fashion_mnist", "eval_every": 100, "controls": (), "export": ()})
    ticket, cfg = runner_ticket(cfg, ds)
    batch, every = cfg.training.batch_size, cfg.training.eval_every
    val, test = ds.pipeline("val", 1000), ds.pipeline("test", 1000)

    def side(early_bird):
        def epoch(rep):
            train, steps = ds.epochs(batch, 1, seed=rep)
            clock = epoch_clock()
            callback = ticket.callback(test_data=test, validation_data=val, eval_every=every, early_bird=early_bird,
                                       early_bird_window=5)
            ticket.model.fit(train, epochs=1, steps_per_epoch=steps, callbacks=[callback, clock], verbose=0)
            return clock.seconds
        return epoch

    with_candidates, without = side(1e-12), side(None)  # EPS 1e-12: the rule runs at every point, never stops
    with_candidates(1000)  # compile, then a pruning round as in the reproduction's rounds
    ticket.next_round()
    with_candidates(1001), without(1001)
    drawn: list = []  # seconds of each draw_masks the callbacks make while training
    timed_calls(ticket, ["draw_masks"], drawn)
    times = alternate({"early-bird": with_candidates, "without": without}, args.epoch_repeats)
    ratios = [a / b for a, b in zip(times["early-bird"], times["without"])]

    def ms(fn, n=20):
        fn()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return round((time.perf_counter() - start) / n * 1000, 2)

    window = [ticket.draw_masks() for _ in range(5)]
    alive = {k: ticket.masks[k] for k in window[0]}
    costs = {"draw_masks_ms_in_fit": round(median(drawn) * 1000, 2),
             "five_distances_ms": ms(lambda: [stopping.mask_distance(old, window[0], alive) for old in window]),
             "validation_pass_ms": ms(lambda: ticket.model.evaluate(val, verbose=0), 5),
             "test_pass_ms": ms(lambda: ticket.model.evaluate(test, verbose=0), 5)}
    out = {"images": len(ds.x_train), "batch": batch, "eval_every": every,
           "points_per_epoch": len(ds.x_train) // batch // every,
           "times_s": times, "early_bird_s": median(times["early-bird"]), "without_s": median(times["without"]),
           "ratio": round(median(ratios), 3), **costs}
    point_s = (costs["draw_masks_ms_in_fit"] + costs["five_distances_ms"]) / 1000
    out["candidate_share_of_epoch"] = round(point_s * out["points_per_epoch"] / out["without_s"], 4)
    print(table([("side", "s/epoch (median)", "points/epoch"),
                 ("early-bird on (window 5)", f"{out['early_bird_s']:.2f}", out["points_per_epoch"]),
                 ("early-bird off", f"{out['without_s']:.2f}", out["points_per_epoch"])]))
    print(f"ratio {out['ratio']:.3f}; candidates {out['candidate_share_of_epoch']:.1%} of an epoch; one point: "
          f"draw_masks {costs['draw_masks_ms_in_fit']} ms (median in fit), 5 distances {costs['five_distances_ms']} ms, "
          f"validation pass {costs['validation_pass_ms']} ms, test pass {costs['test_pass_ms']} ms")
    return out


# -- acceptance ------------------------------------------------------------------------------------------------
def acceptance(report: dict) -> dict:
    checks = {}
    if "w" in report and report["w"]["reduced"]:
        print("  (no W checks: W was reduced)")
    elif "w" in report:
        s = report["w"]["summary"]
        checks["1. W: tf-lth wall <= 0.60x tfmot"] = s["tf-lth"]["wall_vs_tfmot"] <= 0.60
        checks["1. W: tf-lth peak RSS <= 1,000 MiB"] = s["tf-lth"]["peak_rss_mib"] <= 1000
        checks["1. W: accuracy within 0.5 pp of tfmot"] = abs(
            s["tf-lth"]["test_accuracy_mean"] - s["tfmot"]["test_accuracy_mean"]) <= 0.005
    if "epoch" in report:
        checks["2. epoch: LeNet-300-100 <= 0.80x plain fit"] = report["epoch"]["lenet_300_100"]["ratio"] <= 0.80
        checks["2. epoch: Conv-2 <= 1.0x plain fit"] = report["epoch"]["conv2"]["ratio"] <= 1.0
    if "ops" in report:
        checks["3. prune + rewind + save <= 5% of a LeNet round"] = report["ops"]["between_rounds_fraction"] <= 0.05
    if "tflite" in report:
        at90 = [t for t in report["tflite"]["tickets"] if t["sparsity"] == 0.9]
        checks["4. 90% ticket >= 2x the fastest dense fp32 at batch 1, accuracy within 0.5 pp"] = any(
            t["speedup_vs_fastest_dense"]["batch1"] >= 2 and abs(t["test_accuracy"] - t["keras_test_accuracy"]) <= 0.005
            for t in at90)
    if "resnet20" in report:
        checks["5. resnet20: a ResNet-20 round's epoch <= 1.05x plain fit, same recipe"] = (
            report["resnet20"]["ratio"] <= 1.05)
    if "keras3" in report:
        checks["6. keras3: a Keras 3 round's epoch <= 1.10x plain Keras 3 fit, same compile settings"] = (
            report["keras3"]["epoch"]["ratio"] <= 1.10)
    if "early_bird" in report:
        checks["7. early_bird: a round's epoch with early-bird candidates <= 1.03x without"] = (
            report["early_bird"]["ratio"] <= 1.03)
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--repeats", type=int, default=3, help="runs of W per variant (seeds 0..N-1)")
    parser.add_argument("--w-rounds", type=int, default=W["rounds"], help="pruning levels of W (smoke checks only)")
    parser.add_argument("--w-epochs", type=int, default=W["epochs"], help="epochs per level of W (smoke checks only)")
    parser.add_argument("--epoch-repeats", type=int, default=5, help="timed epochs per side and model")
    parser.add_argument("--conv-images", type=int, default=3000, help="training images per Conv-2 epoch")
    parser.add_argument("--ops-repeats", type=int, default=5)
    parser.add_argument("--resnet-repeats", type=int, default=5, help="timed ResNet-20 epochs per side")
    parser.add_argument("--resnet-images", type=int, default=5120,
                        help="padded Fashion-MNIST training images per ResNet-20 epoch (40 steps of 128)")
    parser.add_argument("--sparsity", type=float, nargs="+", default=list(SPARSITIES))
    parser.add_argument("--data-dir", help="folder of Fashion-MNIST's IDX files (default: the system copy)")
    parser.add_argument("--out", default="bench.json")
    args = parser.parse_args(argv)

    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "args": vars(args), "seconds": {}}
    started = time.perf_counter()
    ds = None
    for part in PARTS:
        if part not in args.parts:
            continue
        print(f"== {part}", flush=True)
        t0 = time.perf_counter()
        if part == "w":
            report[part] = part_w(args)
        else:
            if ds is None:
                from tf_lth import data
                from tf_lth.keras2 import tf

                tf.get_logger().setLevel("ERROR")  # export's reloads warn about metrics they do not need
                ds = data.load("fashion_mnist", args.data_dir)
            report[part] = {"epoch": part_epoch, "ops": part_ops, "tflite": part_tflite,
                            "resnet20": part_resnet20, "keras3": part_keras3,
                            "early_bird": part_early_bird}[part](args, ds)
        report["seconds"][part] = round(time.perf_counter() - t0, 1)
    report["seconds"]["total"] = round(time.perf_counter() - started, 1)
    print("== acceptance")
    report["acceptance"] = acceptance(report)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['seconds']['total'] / 60:.1f} min; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
