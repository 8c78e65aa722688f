"""Helpers tests in several folders share (importable from any test: tests/ is on the path through
conftest.py): hand-made IDX dataset files, and the outputs of an exported TFLite file."""
import gzip
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_idx(path, array, compress=None):
    """Write ``array`` (uint8) as an IDX file: 0, 0, type 0x08, ndim, big-endian sizes, data."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    raw = header + array.tobytes()
    if compress if compress is not None else str(path).endswith(".gz"):
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def write_mnist_folder(folder, n_train=50, n_test=20, gz=True, seed=0):
    """A folder of hand-made IDX files named like the standard (Fashion-)MNIST files."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in zip(arrays, MNIST_FILES):  # train images, train labels, test images, test labels
        write_idx(folder / (stem + (".gz" if gz else "")), arrays[key])
    return arrays


def tflite_logits(path, kind, info, x):
    """Logits of the exported ``kind`` file under the op resolver ticket.json records for it."""
    from tf_lth.export import tflite
    interpreter, _ = tflite.open_tflite(path / tflite.TFLITE[kind][0], info["formats"][kind]["resolver"])
    return tflite.run_tflite(interpreter, x)


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
