#!/usr/bin/env python
"""The lottery-ticket script a tf_keras user writes without tf-lth: the baseline of scripts/bench.py.

    scripts/baseline_tfmot.py [--dense] [--rounds 3] [--epochs 5] [--rate 0.2] [--data-dir DIR]

LeNet-300-100 on Fashion-MNIST, SGD, batch 128: dense training then ``--rounds`` levels of global
magnitude pruning (``--rate`` of the remaining weights, output layer never pruned), rewinding to
the initial weights. TF-MOT ``prune_low_magnitude`` wrappers with a schedule that never prunes
(``UpdatePruningStep`` as TF-MOT requires), masks computed in numpy and written into the wrappers,
rewind by ``set_weights``, a fresh optimizer (recompile) per level, float32 numpy arrays into
``fit``, ``evaluate`` on the test set after every epoch: plain Keras, no tricks. ``--dense`` trains
the same schedule without wrappers or masks. The 5,000 held-out validation images are the ones
tf-lth's runner holds out (``tf_lth.data.load``'s split), so both train on the same 55,000 images.
Prints one JSON line: ``{"levels": [{"level", "weights_remaining", "test_accuracy"}, ...]}``.
It deliberately imports nothing from tf-lth.
"""
import argparse
import gzip
import json
import os
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
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y, self.accuracy = x, y, None

    def on_epoch_end(self, epoch, logs=None):
        self.accuracy = self.model.evaluate(self.x, self.y, verbose=0)[1]


def lenet():
    init = "glorot_normal"
    return keras.Sequential([
        keras.Input((28, 28)), keras.layers.Flatten(),
        keras.layers.Dense(300, activation="relu", kernel_initializer=init),
        keras.layers.Dense(100, activation="relu", kernel_initializer=init),
        keras.layers.Dense(10, kernel_initializer=init, name="output"),
    ])


def prune_globally(kernels: dict, masks: dict, keep: int) -> dict:
    """Keep the ``keep`` largest |w| among the alive weights of all kernels."""
    scores = np.concatenate([np.where(masks[k], np.abs(w), -1.0).ravel() for k, w in kernels.items()])
    threshold = np.sort(scores)[-keep]
    return {k: masks[k] & (np.abs(w) >= threshold) for k, w in kernels.items()}


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
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
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
        model.compile(optimizer=keras.optimizers.SGD(args.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        test = TestEveryEpoch(x_test, y_test)
        callbacks = [test] if args.dense else [tfmot.sparsity.keras.UpdatePruningStep(), test]
        model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, callbacks=callbacks, verbose=0)
        remaining = sum(m.sum() for m in masks.values()) / total if total else 1.0
        levels.append({"level": level, "weights_remaining": round(float(remaining), 4),
                       "test_accuracy": round(float(test.accuracy), 4)})
    print(json.dumps({"dense": args.dense, "levels": levels}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
