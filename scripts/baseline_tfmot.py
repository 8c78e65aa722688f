#!/usr/bin/env python
"""The lottery-ticket script a tf_keras user writes without tf-lth: the baseline of scripts/bench.py.

    scripts/baseline_tfmot.py [--dense] [--rounds 3] [--epochs 5] [--rate 0.2] [--data-dir DIR]
                              [--tuned | --jit --steps-per-execution N|auto --uint8-pipeline --eval-batch N]

LeNet-300-100 on Fashion-MNIST, SGD, batch 128: dense training then ``--rounds`` levels of global
magnitude pruning (``--rate`` of the remaining weights, output layer never pruned), rewinding to
the initial weights. TF-MOT ``prune_low_magnitude`` wrappers with a schedule that never prunes
(``UpdatePruningStep`` as TF-MOT requires), masks computed in numpy and written into the wrappers,
rewind by ``set_weights``, a fresh optimizer (recompile) per level, float32 numpy arrays into
``fit``, ``evaluate`` on the test set after every epoch: plain Keras, no tricks. ``--dense`` trains
the same schedule without wrappers or masks. The 5,000 held-out validation images are the ones
tf-lth's runner holds out (``tf_lth.data.pipeline.load``'s split), so both train on the same 55,000 images.

By default it uses Keras' defaults and imports nothing from tf-lth. ``--tuned`` keeps the same
plain TF-MOT procedure (the standard wrapper, its own per-step mask op, ``UpdatePruningStep``) but
gives it the settings tf-lth's runner uses, each also a flag of its own:

``--jit``                       ``compile(jit_compile=True)``: XLA for the whole step (tf-lth does
                                this on dense models)
``--steps-per-execution auto``  the value tf-lth's runner picks: the largest divisor <= its
                                ``MAX_STEPS_PER_EXECUTION`` (100) of the steps it must stop at
                                (``eval_every``, the rewind step); W has neither, so 100 (Keras
                                still ends every execution at an epoch end)
``--uint8-pipeline``            tf-lth's own input pipeline (``tf_lth.data.pipeline``: uint8 arrays shared
                                with TensorFlow, batches gathered and normalised in ``tf.data``;
                                the same split and loader as the runner), for training and test
``--eval-batch 1000``           the test pass at batch 1000 (Keras' default is 32)

Only ``--uint8-pipeline`` and ``--steps-per-execution auto`` import tf-lth (``tf_lth.data.pipeline``, and
one public constant of ``tf_lth.keras2.training``): its engine, wrapper and callbacks are never used. Prints one JSON line: ``{"dense", "settings", "levels": [{"level",
"weights_remaining", "measured_weights_remaining", "test_accuracy"}, ...]}`` where
``measured_weights_remaining`` counts the non-zero weights of the pruned kernels after training.
"""
import argparse
import gzip
import importlib
import json
import os
import sys
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3]))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(shape)


def load(data_dir: str, validation: int, seed: int):
    def files(stem):
        return read_idx(next(p for p in (Path(data_dir) / stem, Path(data_dir) / f"{stem}.gz") if p.exists()))

    x, y = files("train-images-idx3-ubyte").astype("float32") / 255, files("train-labels-idx1-ubyte").astype("int32")
    x_test = files("t10k-images-idx3-ubyte").astype("float32") / 255
    y_test = files("t10k-labels-idx1-ubyte").astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    train, val = order[: len(x) - validation], order[len(x) - validation:]
    return (x[train], y[train]), (x[val], y[val]), (x_test, y_test)


class NeverPrune(tfmot.sparsity.keras.PruningSchedule):
    """Masks are set by hand between levels; TF-MOT must never change them."""

    def __call__(self, step):
        return tf.constant(False), tf.constant(0.0)

    def get_config(self):
        return {}


class TestEveryEpoch(keras.callbacks.Callback):
    def __init__(self, x, y, **options):
        super().__init__()
        self.x, self.y, self.options, self.accuracy = x, y, options, None

    def on_epoch_end(self, epoch, logs=None):
        self.accuracy = self.model.evaluate(self.x, self.y, verbose=0, **self.options)[1]


def lenet(input_shape=(28, 28)):
    init = "glorot_normal"
    return keras.Sequential([
        keras.Input(input_shape), keras.layers.Flatten(),
        keras.layers.Dense(300, activation="relu", kernel_initializer=init),
        keras.layers.Dense(100, activation="relu", kernel_initializer=init),
        keras.layers.Dense(10, kernel_initializer=init, name="output"),
    ])


def prune_globally(kernels: dict, masks: dict, keep: int) -> dict:
    """Keep the ``keep`` largest |w| among the alive weights of all kernels."""
    scores = np.concatenate([np.where(masks[k], np.abs(w), -1.0).ravel() for k, w in kernels.items()])
    threshold = np.sort(scores)[-keep]
    return {k: masks[k] & (np.abs(w) >= threshold) for k, w in kernels.items()}


class TestPipelineEveryEpoch(keras.callbacks.Callback):
    def __init__(self, data):
        super().__init__()
        self.data, self.accuracy = data, None

    def on_epoch_end(self, epoch, logs=None):
        self.accuracy = self.model.evaluate(self.data, verbose=0)[1]


def tf_lth(module: str):
    """A module of tf-lth from this checkout (found as scripts/run_lth.py finds it): tuned runs only."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"tf_lth.{module}")


def auto_steps_per_execution() -> int:
    """What tf-lth's runner picks for this schedule: no ``eval_every`` and no rewind step to stop
    at (rewinding to init), so its maximum."""
    return tf_lth("training").MAX_STEPS_PER_EXECUTION


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense", action="store_true", help="no wrappers, no pruning (same schedule)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--validation", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=DATA_DIR)
    tuned = parser.add_argument_group("tf-lth's settings (default: Keras' defaults)")
    tuned.add_argument("--tuned", action="store_true",
                       help="all four below: --jit --steps-per-execution auto --uint8-pipeline --eval-batch 1000")
    tuned.add_argument("--jit", action="store_true", help="compile(jit_compile=True): XLA for the whole step")
    tuned.add_argument("--steps-per-execution", default="1", metavar="N|auto",
                       help="Keras' steps_per_execution; auto: the value tf-lth's runner picks for this schedule")
    tuned.add_argument("--uint8-pipeline", action="store_true",
                       help="tf_lth.data.pipeline's pipelines over the uint8 arrays instead of float32 arrays into fit")
    tuned.add_argument("--eval-batch", type=int, help="batch size of the test pass (Keras' default: 32)")
    args = parser.parse_args(argv)
    if args.tuned:
        args.jit, args.steps_per_execution, args.uint8_pipeline = True, "auto", True
        args.eval_batch = args.eval_batch or 1000
    if args.steps_per_execution == "auto":
        steps_per_execution = auto_steps_per_execution()
    elif args.steps_per_execution.isdigit() and int(args.steps_per_execution) >= 1:
        steps_per_execution = int(args.steps_per_execution)
    else:
        parser.error(f"--steps-per-execution {args.steps_per_execution}: a whole number >= 1 or auto")
    settings = {"jit_compile": args.jit, "steps_per_execution": steps_per_execution,
                "uint8_pipeline": args.uint8_pipeline, "eval_batch": args.eval_batch}

    keras.utils.set_random_seed(args.seed)
    if args.uint8_pipeline:
        ds = tf_lth("data").load("fashion_mnist", data_dir=args.data_dir, validation=args.validation,
                                 seed=args.seed)  # the runner's loader and split
        test_data = ds.pipeline("test", args.eval_batch or 32)
        model = lenet(ds.input_shape)
    else:
        (x, y), _, (x_test, y_test) = load(args.data_dir, args.validation, args.seed)
        model = lenet()
    if not args.dense:
        model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=NeverPrune())
    theta0 = model.get_weights()
    # the pruned kernels: every wrapped kernel but the output layer's
    pruned = {layer.layer.name: (weight, mask) for layer in model.layers if isinstance(layer, PruneLowMagnitude)
              for weight, mask, _ in layer.pruning_vars if layer.layer.name != "output"}
    masks = {k: np.ones(w.shape, bool) for k, (w, _) in pruned.items()}
    total = sum(m.size for m in masks.values())
    levels = []
    for level in range(args.rounds + 1):
        if level:
            if pruned:
                masks = prune_globally({k: w.numpy() for k, (w, _) in pruned.items()}, masks,
                                       int(round(total * (1 - args.rate) ** level)))
            model.set_weights(theta0)
            for k, (weight, mask) in pruned.items():
                mask.assign(masks[k].astype(np.float32))
                weight.assign(weight * mask)
        tuned_options = {"jit_compile": True} if args.jit else {}
        if steps_per_execution != 1:
            tuned_options["steps_per_execution"] = steps_per_execution
        model.compile(optimizer=keras.optimizers.SGD(args.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                      **tuned_options)
        if args.uint8_pipeline:
            test = TestPipelineEveryEpoch(test_data)
        elif args.eval_batch:
            test = TestEveryEpoch(x_test, y_test, batch_size=args.eval_batch)
        else:
            test = TestEveryEpoch(x_test, y_test)
        callbacks = [test] if args.dense else [tfmot.sparsity.keras.UpdatePruningStep(), test]
        if args.uint8_pipeline:
            train, steps = ds.epochs(args.batch_size, args.epochs, seed=args.seed * 1000 + level)
            model.fit(train, epochs=args.epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=0)
        else:
            model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, callbacks=callbacks, verbose=0)
        remaining = sum(m.sum() for m in masks.values()) / total if total else 1.0
        # what training left in the kernels (TF-MOT re-masks them at every epoch end)
        alive = sum(int(np.count_nonzero(w.numpy())) for w, _ in pruned.values())
        levels.append({"level": level, "weights_remaining": round(float(remaining), 4),
                       "measured_weights_remaining": round(alive / total, 4) if total else 1.0,
                       "test_accuracy": round(float(test.accuracy), 4)})
    print(json.dumps({"dense": args.dense, "settings": settings, "levels": levels}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
