"""A user's image folder (``folder:PATH``): its layout, checked, and its images read by Keras'
``image_dataset_from_directory`` (see :mod:`tf_lth.data.user`). Pillow reads headers only; TensorFlow
is imported only when the images are read.
"""
from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tf_lth.data.specs import SPLIT_SEED, DatasetSpec
from tf_lth.errors import TfLthError

VALIDATION_FRACTION = 0.1  # of a user dataset's train split, held out as validation by default
MAX_CLASSES = 256  # labels are kept as uint8
CONVERT_ROWS = 4096  # images converted to uint8 at a time: no float copy of a whole split
TEST_FRACTION = 0.2  # of each class of an image folder without PATH/train, held out as the test split
IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what image_dataset_from_directory reads
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")  # Pillow modes read as one channel


def validation_size(train: int) -> int:
    """The default validation split of a user dataset (npz or folder) with ``train`` training images."""
    return int(train * VALIDATION_FRACTION)


@dataclass(frozen=True)
class ImageFolder:
    """The layout of ``folder:PATH``: where train (and test) images are, and the classes."""

    root: Path
    train: Path
    test: Path | None
    classes: tuple[str, ...]
    train_counts: tuple[int, ...]
    test_counts: tuple[int, ...] | None

    def held_out(self) -> tuple[int, ...]:
        """Per class, how many train images become test images (none where ``test`` exists):
        :data:`TEST_FRACTION` rounded, always leaving one to train on."""
        if self.test is not None:
            return (0,) * len(self.classes)
        return tuple(min(int(n * TEST_FRACTION + 0.5), n - 1) for n in self.train_counts)


def class_folders(folder: Path) -> list[str]:
    """The class sub-folders of ``folder`` as Keras sees them: sorted, hidden ones skipped."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """The images below ``folder`` (any depth) that ``image_dataset_from_directory`` reads."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_FORMATS and p.is_file())


def count_images(folder: Path, classes) -> tuple[int, ...]:
    counts = tuple(len(image_files(folder / c)) for c in classes)
    for c, n in zip(classes, counts):
        if n == 0:
            raise TfLthError(f"class folder {folder / c} has no images ({', '.join(IMAGE_FORMATS)}): "
                             f"add some or remove the folder")
    return counts


def image_folder(root: Path) -> ImageFolder:
    """The layout of ``root``, checked: class folders, each with images, the same in train and test."""
    if not root.is_dir():
        raise TfLthError(f"{root} is not a folder: folder:PATH names a folder with a sub-folder of images per class")
    train = root / "train" if (root / "train").is_dir() else root
    test = root / "test" if train != root and (root / "test").is_dir() else None
    classes = class_folders(train)
    if not classes:
        raise TfLthError(f"{train} has no class sub-folders: put each class's images in {train}/<class>/ "
                         f"(or use {root}/train/<class>/ and {root}/test/<class>/)")
    if len(classes) < 2:
        raise TfLthError(f"{train} has one class folder only ({classes[0]}): a classifier needs at least two")
    if len(classes) > MAX_CLASSES:
        raise TfLthError(f"{train} has {len(classes)} class folders: at most {MAX_CLASSES} are supported")
    test_counts = None
    if test is not None:
        test_classes = class_folders(test)
        if test_classes != classes:
            raise TfLthError(f"{test} has the class folders {', '.join(test_classes) or '(none)'} but {train} has "
                             f"{', '.join(classes)}: give both the same class folders")
        test_counts = count_images(test, classes)
    layout = ImageFolder(root, train, test, tuple(classes), count_images(train, classes), test_counts)
    if test is None and sum(layout.held_out()) == 0:
        raise TfLthError(f"{root} has too few images to hold a test split out ({TEST_FRACTION:.0%} of each class): "
                         f"add images, or give {root}/train and {root}/test")
    return layout


def image_shape(path: Path) -> tuple[int, int, int]:
    """``(H, W, C)`` of the image at ``path`` from its header (Pillow): C is 1 for grayscale, else 3."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            (width, height), mode = image.size, image.mode
    except (OSError, ValueError) as e:
        raise TfLthError(f"cannot read the image {path} ({e}): replace or remove it") from None
    return height, width, 1 if mode in GRAY_MODES else 3


def folder_spec(name: str, root: Path) -> DatasetSpec:
    """The spec of ``folder:PATH``: classes from the folders, image shape from the first image."""
    layout = image_folder(root)
    shape = image_shape(image_files(layout.train / layout.classes[0])[0])
    held = sum(layout.held_out())
    train = sum(layout.train_counts) - held
    test = held if layout.test_counts is None else sum(layout.test_counts)
    return DatasetSpec(name, shape=shape, num_classes=len(layout.classes),
                       sizes=(train - validation_size(train), validation_size(train), test),
                       reader=read_image_folder, source=str(root), resizes=True)


def read_images(spec: DatasetSpec, folder: Path, classes) -> tuple[np.ndarray, np.ndarray]:
    """Every image below ``folder``'s class folders at ``spec.shape``, with its class id, in Keras'
    order (class, then path); an image that cannot be decoded is a one-line error naming it."""
    from tf_lth.ticket import flavours
    from tf_lth.util.tensorflow import tensorflow
    tf, keras = tensorflow(), flavours.in_use().keras  # the reader is the same in both flavours

    height, width, channels = spec.shape
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints "Found N files belonging to K classes."
        ds = keras.utils.image_dataset_from_directory(
            str(folder), labels="inferred", label_mode="int", class_names=list(classes),
            color_mode="grayscale" if channels == 1 else "rgb", batch_size=CONVERT_ROWS // 16,
            image_size=(height, width), shuffle=False, interpolation="bilinear")
    xs, ys = [], []
    batches = iter(ds)
    while True:
        try:
            x, y = next(batches)
        except StopIteration:
            break
        except tf.errors.OpError as e:
            done = sum(len(batch) for batch in xs)
            bad = ((p, decode_error(p, tf)) for p in ds.file_paths[done:])
            path, why = next(((p, why) for p, why in bad if why), (f"one of the images of {folder}", e.message))
            raise TfLthError(f"cannot decode the image {path} ({why.splitlines()[0]}): replace or remove it") from None
        xs.append(np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8))
        ys.append(y.numpy().astype(np.uint8))
    return np.concatenate(xs), np.concatenate(ys)


def decode_error(path: str, tf) -> str | None:
    """Why TensorFlow cannot decode the image at ``path``, or None if it can (to name the file that
    broke a batch, with TensorFlow's own reason rather than the pipeline's wrapping of it)."""
    try:
        tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except tf.errors.OpError as e:  # "{{function_node ...}} <reason> [Op:DecodeImage] ...": the reason
        return re.sub(r"^\{\{.*?\}\}\s*|\s*\[Op:.*$", "", e.message, flags=re.S) or e.message
    return None


def read_image_folder(spec: DatasetSpec, data_dir=None) -> tuple:
    """``spec.source`` as an image folder (see :func:`image_folder`), every image at ``spec.shape``:
    its test folder, else :data:`TEST_FRACTION` of each class drawn with ``SPLIT_SEED``."""
    layout = image_folder(Path(spec.source))
    x_train, y_train = read_images(spec, layout.train, layout.classes)
    if layout.test is not None:
        return (x_train, y_train), read_images(spec, layout.test, layout.classes)
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.zeros(len(x_train), bool)
    for c, k in enumerate(layout.held_out()):
        test[rng.permutation(np.flatnonzero(y_train == c))[:k]] = True
    return (x_train[~test], y_train[~test]), (x_train[test], y_train[test])
