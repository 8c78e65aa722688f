"""A user's own data, named by its path: ``npz:PATH`` and ``folder:PATH`` (:func:`resolve`).

A user's own data is named by its path instead, and :func:`resolve` makes its spec from the files
(checked at once, so that a bad file is a one-line error before any training starts):

- ``npz:PATH``: an ``.npz`` (``numpy.savez``) with arrays ``x_train``, ``y_train``, ``x_test``,
  ``y_test``. Images are ``(N, H, W)`` (one channel) or ``(N, H, W, C)``; uint8 (or any integer type
  within 0-255), or floats, read as [0, 1] when the largest value of the float arrays among
  ``x_train`` and ``x_test`` (one scale for both) is at most 1 and as [0, 255] otherwise, then
  rounded to uint8, the type every split is kept in. Labels are integer class ids ``(N,)`` or ``(N, 1)``; ``num_classes`` is the largest
  train label + 1, and a test label that no train image has is an error.
- ``folder:PATH``: a sub-folder of images per class (``.bmp``, ``.gif``, ``.jpeg``, ``.jpg``,
  ``.png``, at any depth below it), read by ``keras.utils.image_dataset_from_directory``; class ids
  follow the sorted folder names. Where ``PATH/train`` exists the classes are its sub-folders and
  ``PATH/test`` (the same class folders), if present, is the test split; otherwise (no ``train``,
  or no ``test`` beside it) :data:`TEST_FRACTION` of each class's images (drawn with
  ``SPLIT_SEED``: the same for every seed) are held out as test. The
  image size and channels (1 if the first image is grayscale, else 3; alpha is dropped) are the
  first image's; images of another size are resized to it (bilinear) as they are read.

Either way the default validation split is :data:`VALIDATION_FRACTION` of train, held out by the
seeded permutation as for the named datasets; ``data_dir`` is not used (the path is in the name).
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from tf_lth.data.specs import DATASETS, DatasetSpec, as_images
from tf_lth.errors import TfLthError
from tf_lth.data.image_folders import CONVERT_ROWS, MAX_CLASSES, folder_spec, validation_size

RESIZE_MODES = ("scale", "pad")  # to a wanted image size: bilinear rescale, or centre zero-pad / crop
USER_KINDS = ("npz", "folder")  # ``npz:PATH`` and ``folder:PATH``: a user's own data (see resolve)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_HOWTO = "numpy.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...)"


def resolve(name: str) -> DatasetSpec:
    """The spec of ``name``: a registered dataset, or one made from the files of ``npz:PATH`` or
    ``folder:PATH`` (checked now: shapes, labels, class folders; the images are read by its reader).

    TensorFlow-free, so the config can validate ``--dataset`` at once; an npz's images are not read
    here (only their headers and the labels), an image folder's only its first image's header.
    """
    kind, colon, path = name.partition(":")
    if not colon or kind not in USER_KINDS:
        if name not in DATASETS.entries:
            raise TfLthError(f"unknown dataset {name!r} (--dataset): choose one of {', '.join(DATASETS.names())}, "
                             "or npz:PATH, folder:PATH")
        return DATASETS.get(name)
    if not path:
        raise TfLthError(f"dataset {name!r} names no path: use {kind}:PATH")
    return (npz_spec if kind == "npz" else folder_spec)(name, Path(path).expanduser())


def load_arrays(name: str, data_dir=None) -> tuple:
    """``((x_train, y_train), (x_test, y_test))`` of any dataset ``name`` (registered, ``npz:PATH`` or
    ``folder:PATH``) as uint8 numpy arrays, images ``(N, H, W, C)`` in 0-255, without TensorFlow (for Keras 3
    on JAX, or any framework): no validation split is held out."""
    return resolve(name).read(data_dir)


def npz_headers(path: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """``key -> (shape, dtype)`` of the four arrays of an npz, read from their headers alone."""
    if not path.is_file():
        raise TfLthError(f"{path} does not exist: npz:PATH names an .npz made by {NPZ_HOWTO}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {n[:-4]: n for n in archive.namelist() if n.endswith(".npy")}
            missing = [key for key in NPZ_KEYS if key not in members]
            if missing:
                held = ", ".join(sorted(members)) or "no arrays"
                raise TfLthError(f"{path} lacks {', '.join(missing)} (it holds {held}): save it with {NPZ_HOWTO}")
            headers = {}
            for key in NPZ_KEYS:
                with archive.open(members[key]) as f:
                    version = np.lib.format.read_magic(f)  # 2.0 and 3.0 headers differ only in encoding
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                headers[key] = (tuple(shape), np.dtype(dtype))
    except TfLthError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as e:
        raise TfLthError(f"cannot read {path} as an .npz ({e}): save it with {NPZ_HOWTO}") from None
    return headers


def npz_image_shape(path: Path, headers: dict) -> tuple[int, int, int]:
    """One image's ``(H, W, C)``, checking the ranks, types and lengths of the four arrays."""
    shapes = {}
    for split in ("train", "test"):
        (x_shape, x_type), (y_shape, y_type) = headers[f"x_{split}"], headers[f"y_{split}"]
        if len(x_shape) not in (3, 4) or 0 in x_shape[1:]:
            raise TfLthError(f"{path}: x_{split} has shape {x_shape}: images must be (N, H, W) or (N, H, W, C)")
        if x_type.kind not in "uif":
            raise TfLthError(f"{path}: x_{split} holds {x_type}: images must be uint8, or floats in [0, 1] or [0, 255]")
        if len(y_shape) == 2 and y_shape[1] > 1:
            raise TfLthError(f"{path}: y_{split} has shape {y_shape}: labels must be class ids (N,), "
                             f"not one-hot (save y.argmax(1))")
        if len(y_shape) not in (1, 2) or y_type.kind not in "uif":
            raise TfLthError(f"{path}: y_{split} has shape {y_shape} and type {y_type}: labels must be "
                             f"integer class ids of shape (N,)")
        if x_shape[0] != y_shape[0]:
            raise TfLthError(f"{path}: x_{split} has {x_shape[0]} images but y_{split} {y_shape[0]} labels: "
                             f"give one label per image")
        if x_shape[0] == 0:
            raise TfLthError(f"{path}: x_{split} is empty: give at least one {split} image")
        shapes[split] = tuple(x_shape[1:]) + ((1,) if len(x_shape) == 3 else ())
    if shapes["train"] != shapes["test"]:
        raise TfLthError(f"{path}: train images are {shapes['train']} but test images {shapes['test']}: "
                         f"give both splits the same image shape")
    return shapes["train"]


def class_ids(where: str, y: np.ndarray) -> np.ndarray:
    """``y`` as uint8 class ids ``(N,)``, or a one-line error (not whole numbers, negative, too many)."""
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind == "f" and not np.array_equal(y, np.floor(y)):
        raise TfLthError(f"{where} holds labels that are not whole numbers: labels must be class ids 0, 1, 2, ...")
    if y.min() < 0:
        raise TfLthError(f"{where} holds the label {y.min():g}: labels must be class ids 0, 1, 2, ... (not negative)")
    if y.max() >= MAX_CLASSES:
        raise TfLthError(f"{where} holds the label {y.max():g}: at most {MAX_CLASSES} classes (ids 0 .. "
                         f"{MAX_CLASSES - 1}) are supported")
    return y.astype(np.uint8)


def check_labels(where: str, y_train: np.ndarray, y_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(y_train, y_test, num_classes)``: uint8 class ids, ``num_classes`` = largest train label + 1;
    at least two classes, and no test label that the train split lacks."""
    y_train, y_test = class_ids(f"{where}: y_train", y_train), class_ids(f"{where}: y_test", y_test)
    num_classes = int(y_train.max()) + 1
    if num_classes < 2:
        raise TfLthError(f"{where}: y_train holds one class only (0): a classifier needs at least two")
    unseen = sorted(set(np.unique(y_test).tolist()) - set(np.unique(y_train).tolist()))
    if unseen:
        raise TfLthError(f"{where}: y_test holds the labels {', '.join(map(str, unseen))} that no train image has: "
                         f"label both splits with the same class ids (0 .. {num_classes - 1})")
    return y_train, y_test, num_classes


def npz_spec(name: str, path: Path) -> DatasetSpec:
    """The spec of ``npz:PATH``: shapes from the array headers, classes from the labels."""
    headers = npz_headers(path)
    shape = npz_image_shape(path, headers)
    with np.load(path, allow_pickle=False) as f:
        _, _, num_classes = check_labels(str(path), f["y_train"], f["y_test"])
    train, test = headers["x_train"][0][0], headers["x_test"][0][0]
    return DatasetSpec(name, shape=shape, num_classes=num_classes,
                       sizes=(train - validation_size(train), validation_size(train), test),
                       reader=read_npz, source=str(path))


def images_as_uint8(where: str, x: np.ndarray, scale: float) -> np.ndarray:
    """Images as uint8: integers kept, floats times ``scale`` rounded (a chunk at a time)."""
    scale = scale if x.dtype.kind == "f" else 1.0
    low, high = x.min(), x.max()
    if x.dtype.kind == "f" and not (np.isfinite(low) and np.isfinite(high)):
        raise TfLthError(f"{where} holds NaN or infinite pixels: replace them")
    if low < 0 or high * scale > 255.5:
        raise TfLthError(f"{where} holds pixels from {low:g} to {high:g}: images must be uint8, or floats in "
                         f"[0, 1] or [0, 255] (undo any standardisation; tf-lth scales to [0, 1] itself)")
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind in "ui":
        return x.astype(np.uint8)
    out = np.empty(x.shape, np.uint8)
    for start in range(0, len(x), CONVERT_ROWS):
        chunk = x[start:start + CONVERT_ROWS]
        out[start:start + CONVERT_ROWS] = np.clip(np.rint(chunk * scale), 0, 255)
    return out


def read_npz(spec: DatasetSpec, data_dir=None) -> tuple:
    """``spec.source`` as an npz: float images in [0, 1] (the largest float pixel of both splits at most
    1) are scaled by 255, others taken as 0-255; ``data_dir`` is not used (the path is in the name)."""
    path = Path(spec.source)
    npz_image_shape(path, npz_headers(path))
    with np.load(path, allow_pickle=False) as f:
        x_train, y_train, x_test, y_test = (f[key] for key in NPZ_KEYS)
    y_train, y_test, _ = check_labels(str(path), y_train, y_test)
    floats = [x for x in (x_train, x_test) if x.dtype.kind == "f"]
    scale = 255.0 if floats and max(x.max() for x in floats) <= 1.0 else 1.0
    x_train = images_as_uint8(f"{path}: x_train", x_train, scale)
    x_test = images_as_uint8(f"{path}: x_test", x_test, scale)
    return (as_images(spec, x_train), y_train), (as_images(spec, x_test), y_test)


