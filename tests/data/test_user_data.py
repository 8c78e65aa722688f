"""A user's own data (``npz:PATH``, ``folder:PATH``), images fitted to a model's input, and the seeded
training augmentation (random crop after 4-pixel padding, horizontal flip)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tf_lth.data import augment
from tf_lth import data
from tf_lth.data import specs as datasets
from tf_lth.data import user as user_data
from tf_lth.errors import TfLthError

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("zero", "one", "two")  # folder names, sorted as Keras sorts them: one, two, zero


@pytest.fixture(scope="session")
def digits(mnist5k):
    """Real digits: 300 train and 100 test images (uint8 28x28x1) with their labels."""
    return (mnist5k.x_train[:300], mnist5k.y_train[:300]), (mnist5k.x_test[:100], mnist5k.y_test[:100])


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


def digits_npz(tmp_path, digits, **changes):
    """``digits`` as an npz, (N, H, W) uint8 images, with ``changes`` to its arrays."""
    (x_train, y_train), (x_test, y_test) = digits
    arrays = dict(x_train=x_train[..., 0], y_train=y_train.astype(np.int64), x_test=x_test[..., 0], y_test=y_test)
    arrays.update(changes)
    return save_npz(tmp_path / "digits.npz", **{k: v for k, v in arrays.items() if v is not None})


def rows(x):
    return sorted(image.tobytes() for image in x)


def one_line_error(name, **kwargs):
    with pytest.raises(TfLthError) as info:
        data.load(name, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- npz:PATH ----------------------------------------------------------------------------------


def test_npz_uint8_round_trip(tmp_path, digits):
    (x_train, y_train), (x_test, y_test) = digits
    name = digits_npz(tmp_path, digits)
    ds = data.load(name, validation=30, seed=5)
    assert ds.name == name and ds.num_classes == 10 and ds.input_shape == (28, 28, 1)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (270, 30, 100)
    np.testing.assert_array_equal(ds.x_test, x_test)
    np.testing.assert_array_equal(ds.y_test, y_test)
    for x, y in (ds.split(s) for s in ("train", "val", "test")):
        assert x.dtype == np.uint8 and y.dtype == np.uint8 and x.flags.c_contiguous
    # train + validation are the npz's train images, each with its own label, split by the seed
    x, y = np.concatenate([ds.x_train, ds.x_val]), np.concatenate([ds.y_train, ds.y_val])
    where = {image.tobytes(): i for i, image in enumerate(x_train)}
    order = [where[image.tobytes()] for image in x]
    assert sorted(order) == list(range(300))
    np.testing.assert_array_equal(y, y_train[order])
    assert not np.array_equal(data.load(name, validation=30, seed=6).x_val, ds.x_val)


@pytest.mark.parametrize("kind", ["float32 in [0, 1]", "float64 in [0, 255]", "(N, H, W, C) int64"])
def test_npz_float_and_other_types_become_the_same_uint8(tmp_path, digits, kind):
    (x_train, y_train), (x_test, y_test) = digits
    convert = {"float32 in [0, 1]": lambda x: (x[..., 0] / 255.0).astype(np.float32),
               "float64 in [0, 255]": lambda x: x[..., 0].astype(np.float64),
               "(N, H, W, C) int64": lambda x: x.astype(np.int64)}[kind]
    name = save_npz(tmp_path / "d.npz", x_train=convert(x_train), y_train=y_train.astype(np.float32),
                    x_test=convert(x_test), y_test=y_test.reshape(-1, 1))
    ds = data.load(name, validation=0)
    np.testing.assert_array_equal(ds.x_test, x_test)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert rows(ds.x_train) == rows(x_train) and ds.x_train.dtype == np.uint8


def test_resolve_npz_reads_shapes_and_classes(tmp_path, digits):
    (x_train, y_train), (x_test, y_test) = digits
    name = save_npz(tmp_path / "rgb.npz", x_train=np.repeat(x_train, 3, axis=3), y_train=y_train % 4,
                    x_test=np.repeat(x_test, 3, axis=3), y_test=y_test % 4)
    spec = user_data.resolve(name)
    assert spec.name == name and spec.source == str(tmp_path / "rgb.npz")
    assert spec.shape == (28, 28, 3) and spec.num_classes == 4
    assert spec.sizes == (270, 30, 100)  # default validation: VALIDATION_FRACTION of train
    ds = data.load(name)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == spec.sizes
    assert ds.input_shape == spec.shape and ds.num_classes == spec.num_classes


def test_registered_names_resolve_to_their_spec():
    for name in datasets.DATASETS.names():
        assert user_data.resolve(name) is datasets.DATASETS.get(name)
    with pytest.raises(TfLthError, match="unknown dataset 'nope:x' .*: choose one of mnist5k"):
        user_data.resolve("nope:x")


@pytest.mark.heavy
def test_resolve_imports_no_tensorflow(tmp_path, digits):
    name = digits_npz(tmp_path, digits)
    folder = write_folder(tmp_path / "images", digits, split=False)
    code = (f"import sys, types; p = types.ModuleType('tf_lth'); p.__path__ = [{str(ROOT / 'tf_lth')!r}]; "
            "sys.modules['tf_lth'] = p\n"
            "from tf_lth.data import user as user_data\n"
            f"print(user_data.resolve({name!r}).shape, user_data.resolve({'folder:' + str(folder)!r}).num_classes)\n"
            "assert 'tensorflow' not in sys.modules, 'resolve loaded tensorflow'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(28,", "28,", "1)", "3"]


# --- folder:PATH -------------------------------------------------------------------------------


def write_folder(root, digits, split=True, per_class=10, rgb=False):
    """Digits 0, 1, 2 as PNG files in class folders (zero/, one/, two/), under train/ and test/ when
    ``split``; returns the folder. Colour images put the digit in red and its negative in blue."""
    (x_train, y_train), (x_test, y_test) = digits
    parts = {"train": (x_train, y_train), "test": (x_test, y_test)} if split else {"": (x_train, y_train)}
    for part, (x, y) in parts.items():
        for label, cls in enumerate(CLASSES):
            folder = root / part / cls
            folder.mkdir(parents=True)
            for i, image in enumerate(x[y == label][:per_class, ..., 0]):
                if rgb:
                    image = np.stack([image, np.zeros_like(image), 255 - image], axis=-1)
                Image.fromarray(image, "RGB" if rgb else "L").save(folder / f"{i:03d}.png")
    return root


def expected_images(x, y, per_class, rgb=False):
    """The images ``write_folder`` saved and their class ids, in Keras' order: by sorted folder name
    (one, two, zero: class ids 0, 1, 2 for the digits 1, 2, 0), then by file name."""
    digits = [CLASSES.index(cls) for cls in sorted(CLASSES)]
    images = np.concatenate([x[y == digit][:per_class] for digit in digits])
    if rgb:
        images = np.concatenate([images, np.zeros_like(images), 255 - images], axis=-1)
    ids = np.concatenate([np.full(min(per_class, (y == digit).sum()), i) for i, digit in enumerate(digits)])
    return images, ids.astype(np.uint8)


@pytest.mark.parametrize("rgb", [False, True], ids=["gray", "rgb"])
def test_folder_with_train_and_test(tmp_path, digits, rgb):
    (x_train, y_train), (x_test, y_test) = digits
    name = f"folder:{write_folder(tmp_path, digits, rgb=rgb, per_class=6)}"
    spec = user_data.resolve(name)
    channels = 3 if rgb else 1
    assert spec.shape == (28, 28, channels) and spec.num_classes == 3 and spec.sizes == (17, 1, 18)
    ds = data.load(name, validation=3)
    assert ds.input_shape == (28, 28, channels) and ds.num_classes == 3
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (15, 3, 18)
    want_x, want_y = expected_images(x_test, y_test, 6, rgb)
    np.testing.assert_array_equal(ds.x_test, want_x)  # PNG is lossless: the very pixels, in Keras' order
    np.testing.assert_array_equal(ds.y_test, want_y)
    want_x, _ = expected_images(x_train, y_train, 6, rgb)
    assert rows(np.concatenate([ds.x_train, ds.x_val])) == rows(want_x)


def test_folder_without_test_holds_a_fixed_fraction_of_each_class_out(tmp_path, digits):
    (x_train, y_train), _ = digits
    name = f"folder:{write_folder(tmp_path, digits, split=False, per_class=10)}"
    spec = user_data.resolve(name)
    assert spec.sizes == (22, 2, 6)  # 20% of each class of 10 is test; 10% of the rest validation
    ds = data.load(name, seed=1)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == spec.sizes
    assert np.bincount(ds.y_test, minlength=3).tolist() == [2, 2, 2]
    want_x, want_y = expected_images(x_train, y_train, 10)
    label_of = {image.tobytes(): label for image, label in zip(want_x, want_y)}
    everything = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    assert rows(everything) == rows(want_x)
    for x, y in (ds.split(s) for s in ("train", "val", "test")):
        assert [label_of[image.tobytes()] for image in x] == y.tolist()
    other = data.load(name, seed=2)
    np.testing.assert_array_equal(other.x_test, ds.x_test)  # every seed is scored on the same images
    assert rows(other.x_val) != rows(ds.x_val)


def test_folder_read_at_the_asked_size(tmp_path, digits):
    name = f"folder:{write_folder(tmp_path, digits, per_class=4)}"
    small = data.load(name, validation=0, image_size=(14, 14))
    assert small.input_shape == (14, 14, 1) and small.x_test.dtype == np.uint8
    full = data.load(name, validation=0)
    # Keras' bilinear resize at read time: close to our own rescale of the full-size images
    ours = data.fit_images(full.x_test, (14, 14)).astype(float)
    assert np.abs(small.x_test.astype(float) - ours).mean() < 20
    padded = data.load(name, validation=0, image_size=(32, 32), channels=3, resize="pad")
    assert padded.input_shape == (32, 32, 3)
    np.testing.assert_array_equal(padded.x_test[:, 2:30, 2:30, :], np.repeat(full.x_test, 3, axis=3))


# --- fitting images to a model's input ----------------------------------------------------------


def test_fashion_style_padding_to_32x32x3(mnist5k):
    ds = data.load("mnist5k", image_size=(32, 32), channels=3, resize="pad")
    assert ds.input_shape == (32, 32, 3) and ds.x_train.dtype == np.uint8
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (3500, 500, 1000)
    for channel in range(3):  # the 28x28 digit in the centre, 2 pixels of zeros around
        np.testing.assert_array_equal(ds.x_test[:, 2:30, 2:30, channel], mnist5k.x_test[..., 0])
        np.testing.assert_array_equal(ds.x_val[:, 2:30, 2:30, channel], mnist5k.x_val[..., 0])
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not ds.x_train[:, border].any()


def test_fit_images_modes(digits):
    (x, _), _ = digits
    assert data.fit_images(x) is x
    half = data.fit_images(x, (14, 14))
    assert half.shape == (300, 14, 14, 1) and half.dtype == np.uint8
    assert abs(half.mean() - x.mean()) < 2  # antialiased: brightness kept
    np.testing.assert_array_equal(data.fit_images(x, (20, 24), resize="pad"), x[:, 4:24, 2:26])  # centre crop
    rgb = data.fit_images(x, channels=3)
    assert rgb.shape == (300, 28, 28, 3) and (rgb == x).all()
    np.testing.assert_array_equal(data.fit_images(rgb, channels=1), x)  # luminance of gray is the gray
    red = np.zeros((1, 2, 2, 3), np.uint8)
    red[..., 0] = 255
    assert (data.fit_images(red, channels=1) == 76).all()  # 0.299 * 255


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(image_size=(32,)), "must be (height, width)"),
    (dict(image_size=(0, 32)), "must be (height, width)"),
    (dict(image_size=(32.5, 32)), "must be (height, width)"),
    (dict(channels=2), "channels=2: use 1 or 3"),
    (dict(resize="stretch"), "resize='stretch': choose one of scale, pad"),
])
def test_bad_fit_arguments(kwargs, fragment):
    assert fragment in one_line_error("mnist5k", **kwargs)


def test_fit_images_refuses_other_channel_counts():
    with pytest.raises(TfLthError, match="cannot make 3-channel images from 4-channel ones"):
        data.fit_images(np.zeros((1, 4, 4, 4), np.uint8), channels=3)


# --- bad npz files: one line saying what is wrong and how to fix it ------------------------------
N = 300  # train images of the digits fixture


def bad_npz_cases(digits):
    """case -> (changes to the digits' arrays, what the one-line error says)."""
    (x_train, y_train), (x_test, y_test) = digits
    y_bad = y_train.astype(np.int64).copy()
    marked = np.arange(N) == 7
    return {
        "missing key": (dict(x_test=None),
                        "lacks x_test (it holds x_train, y_test, y_train): save it with numpy.savez"),
        "rank": (dict(x_train=x_train.reshape(N, -1)),
                 "x_train has shape (300, 784): images must be (N, H, W) or (N, H, W, C)"),
        "length": (dict(y_train=y_train[:-1]),
                   "x_train has 300 images but y_train 299 labels: give one label per image"),
        "shapes differ": (dict(x_test=x_test[:, :27]), "train images are (28, 28, 1) but test images (27, 28, 1)"),
        "one-hot": (dict(y_train=np.eye(10)[y_train]),
                    "y_train has shape (300, 10): labels must be class ids (N,), not one-hot"),
        "negative": (dict(y_train=np.where(marked, -1, y_bad)), "y_train holds the label -1: labels must be class ids"),
        "fractional": (dict(y_train=y_train + 0.5), "y_train holds labels that are not whole numbers"),
        "too many classes": (dict(y_train=np.where(marked, 300, y_bad)), "holds the label 300: at most 256 classes"),
        "one class": (dict(y_train=np.zeros(N, np.int64), y_test=np.zeros(100, np.int64)),
                      "y_train holds one class only"),
        "unseen test label": (dict(y_train=y_train % 5),
                              "y_test holds the labels 5, 6, 7, 8, 9 that no train image has"),
        "empty test": (dict(x_test=x_test[:0, ..., 0], y_test=y_test[:0]), "x_test is empty"),
        "text images": (dict(x_train=np.full((N, 2, 2), "a")), "x_train holds <U1: images must be uint8, or floats"),
        "standardised": (dict(x_train=(x_train[..., 0] - 128.0) / 64),
                         "x_train holds pixels from -2 to 1.98438: images must be uint8"),
        "over 255": (dict(x_test=x_test[..., 0] * 2.0), "x_test holds pixels from 0 to 510"),
        "nan": (dict(x_test=np.where(x_test[..., 0] > 0, np.nan, 0.0)), "x_test holds NaN or infinite pixels"),
        "int over 255": (dict(x_train=x_train[..., 0].astype(np.int16) * 3), "x_train holds pixels from 0 to 765"),
    }


BAD_NPZ = ("missing key", "rank", "length", "shapes differ", "one-hot", "negative", "fractional", "too many classes",
           "one class", "unseen test label", "empty test", "text images", "standardised", "over 255", "nan",
           "int over 255")


def test_every_bad_npz_case_is_run(digits):
    assert tuple(bad_npz_cases(digits)) == BAD_NPZ


@pytest.mark.parametrize("case", BAD_NPZ)
def test_bad_npz_is_one_line(tmp_path, digits, case):
    changes, fragment = bad_npz_cases(digits)[case]
    name = digits_npz(tmp_path, digits, **changes)
    message = one_line_error(name)
    assert message.startswith(str(tmp_path / "digits.npz")) and fragment in message, message


def test_npz_file_missing_or_not_an_npz(tmp_path):
    assert "does not exist: npz:PATH names an .npz made by numpy.savez(" in one_line_error(f"npz:{tmp_path}/no.npz")
    (tmp_path / "text.npz").write_text("x_train,y_train\n1,2\n")
    message = one_line_error(f"npz:{tmp_path}/text.npz")
    assert message.startswith(f"cannot read {tmp_path}/text.npz as an .npz (") and "numpy.savez(" in message
    assert "names no path: use npz:PATH" in one_line_error("npz:")


def test_bad_npz_is_caught_by_resolve_before_any_reading(tmp_path, digits):
    (x_train, y_train), _ = digits
    with pytest.raises(TfLthError, match="no train image has"):
        user_data.resolve(digits_npz(tmp_path, digits, y_train=y_train % 5))


# --- bad image folders ---------------------------------------------------------------------------


def test_bad_folders_are_one_line(tmp_path, digits):
    assert "is not a folder: folder:PATH names a folder" in one_line_error(f"folder:{tmp_path}/nowhere")
    (tmp_path / "empty").mkdir()
    message = one_line_error(f"folder:{tmp_path}/empty")
    assert message.startswith(f"{tmp_path}/empty has no class sub-folders: put each class's images in")

    root = write_folder(tmp_path / "no_images", digits, split=False, per_class=3)
    (root / "three").mkdir()
    (root / "three" / "notes.txt").write_text("not an image")
    message = one_line_error(f"folder:{root}")
    assert f"class folder {root}/three has no images (.bmp, .gif, .jpeg, .jpg, .png)" in message

    root = write_folder(tmp_path / "one_class", digits, split=False, per_class=3)
    for cls in ("one", "two"):
        for f in (root / cls).iterdir():
            f.unlink()
        (root / cls).rmdir()
    assert "has one class folder only (zero): a classifier needs at least two" in one_line_error(f"folder:{root}")

    root = write_folder(tmp_path / "mismatch", digits, per_class=2)
    (root / "test" / "three").mkdir()
    message = one_line_error(f"folder:{root}")
    assert message.startswith(f"{root}/test has the class folders one, three, two, zero but {root}/train has "
                              f"one, two, zero: give both the same class folders")

    root = write_folder(tmp_path / "tiny", digits, split=False, per_class=2)
    assert "has too few images to hold a test split out (20% of each class)" in one_line_error(f"folder:{root}")
    assert "names no path: use folder:PATH" in one_line_error("folder:")


def test_undecodable_images_are_named(tmp_path, digits):
    root = write_folder(tmp_path / "late", digits, per_class=3)
    (root / "train" / "two" / "009.png").write_bytes(b"not a png at all")
    message = one_line_error(f"folder:{root}")
    # TensorFlow's own reason, without the pipeline's wrapping of it
    assert message.startswith(f"cannot decode the image {root}/train/two/009.png (Unknown image file format")
    assert message.endswith("required.): replace or remove it") and "function_node" not in message

    root = write_folder(tmp_path / "first", digits, per_class=3)
    (root / "train" / "one" / "000.png").write_bytes(b"not a png at all")
    message = one_line_error(f"folder:{root}")
    assert message.startswith(f"cannot read the image {root}/train/one/000.png (")


# --- augmentation ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(mnist5k):
    """256 real training digits as a Dataset (validation and test are stand-ins)."""
    x, y = mnist5k.x_train[:256], mnist5k.y_train[:256]
    return data.Dataset("digits", x, y, x[:1], y[:1], x[:1], y[:1])


def batches(ds, batch_size=64, epochs=1, **kwargs):
    pipeline, _ = ds.epochs(batch_size, epochs, **kwargs)
    return [(x.numpy(), y.numpy()) for x, y in pipeline]


def test_augmentation_is_seeded(small):
    first = batches(small, seed=3, augment=True)
    again = batches(small, seed=3, augment=True)
    other = batches(small, seed=4, augment=True)
    assert len(first) == 4
    for (x, y), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert not any(np.array_equal(x, x2) for (x, _), (x2, _) in zip(first, other))
    # off by default; on, the same examples in the same order (only the images change)
    plain = batches(small, seed=3)
    for (x, y), (xp, yp), (xo, yo) in zip(first, plain, batches(small, seed=3, augment=False)):
        np.testing.assert_array_equal(xp, xo)
        np.testing.assert_array_equal(y, yp)
        assert x.shape == xp.shape == (64, 28, 28, 1) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0 and not np.array_equal(x, xp)


def test_augmentation_resumes_and_ignores_the_batch_size(small):
    whole = batches(small, epochs=3, seed=7, augment=True)
    resumed = batches(small, epochs=3, seed=7, augment=True, initial_epoch=2)
    for (x, y), (x2, y2) in zip(whole[8:], resumed):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    epoch = lambda size: np.concatenate([x for x, _ in batches(small, size, seed=7, augment=True)])  # noqa: E731
    np.testing.assert_array_equal(epoch(64), epoch(100))
    assert not np.array_equal(np.concatenate([x for x, _ in whole[:4]]), np.concatenate([x for x, _ in whole[4:8]]))


def transforms(source, augmented, pad=augment.AUGMENT_PAD):
    """Every ``(row, column, flip)`` whose crop (and flip) of the zero-padded ``source`` is ``augmented``."""
    height, width = source.shape[:2]
    padded = np.pad(source, ((pad, pad), (pad, pad), (0, 0)))
    found = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy:dy + height, dx:dx + width]
            found += [(dy, dx, flip) for flip in (0, 1) if np.array_equal(crop[:, ::-1] if flip else crop, augmented)]
    return found


def test_augmentation_crops_and_flips(small):
    plain = np.concatenate([x for x, _ in batches(small, seed=1)])
    augmented = np.concatenate([x for x, _ in batches(small, seed=1, augment=True)])
    plain, augmented = (np.rint(a * 255).astype(np.uint8) for a in (plain, augmented))
    found = [transforms(p, a) for p, a in zip(plain, augmented)]
    assert all(found)  # each image is exactly a crop of its padded self, flipped or not
    flipped = sum(all(f for *_, f in options) for options in found)
    kept = sum(not any(f for *_, f in options) for options in found)
    assert 0.35 * len(found) < flipped < 0.65 * len(found) and kept > 0.35 * len(found)
    offsets = {options[0][:2] for options in found if len(options) == 1}
    assert len(offsets) > 40  # of the 81 crops: they vary from image to image


def test_crop_and_flip_by_hand(small):
    x = small.x_train[:2]
    pad = augment.AUGMENT_PAD
    centre, flip, corner = ([[pad, pad, 0]] * 2, [[pad, pad, 1]] * 2, [[0, 0, 0]] * 2)
    run = lambda draws: augment.crop_and_flip(x, np.array(draws, np.int32)).numpy()  # noqa: E731
    np.testing.assert_array_equal(run(centre), x)
    np.testing.assert_array_equal(run(flip), x[:, :, ::-1])
    shifted = run(corner)  # the window's top-left is the padding's: the image moves down and right
    np.testing.assert_array_equal(shifted[:, pad:, pad:], x[:, :-pad, :-pad])
    assert not shifted[:, :pad].any() and not shifted[:, :, :pad].any()
    draws = augment.augment_draws(5, 2, 1000).numpy()
    assert draws.shape == (1000, 3) and draws[:, :2].min() == 0 and draws[:, :2].max() == 2 * pad
    assert set(draws[:, 2]) == {0, 1}
    np.testing.assert_array_equal(draws, augment.augment_draws(5, 2, 1000).numpy())
    assert not np.array_equal(draws, augment.augment_draws(5, 3, 1000).numpy())
