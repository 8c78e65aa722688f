"""Your own model and data through ``tf-lth run``: a module's function, a saved .keras file, an npz of
arrays and a folder of images (real MNIST digits) each run end to end, and each bad input is one line
and exit code 2."""
import json
import textwrap

import numpy as np
import pytest

from tf_lth import cli, keras
from tf_lth.models import specs as models
from tf_lth.config.configs import ExperimentConfig
from tf_lth.errors import TfLthError

RUN = ["--rounds", "1", "--epochs", "3", "--batch-size", "50", "--controls", "none", "--export", "none"]
MODULE = """
from tf_lth import keras

def small_net(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(64, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="output")(x))

def fixed_net(num_classes):  # built for 28x28x1 whatever the data
    return small_net((28, 28, 1), num_classes)

def not_a_model():
    return 42
"""


@pytest.fixture(scope="module")
def digits(mnist5k):
    """600 train and 300 test real digits (uint8)."""
    return mnist5k.x_train[:600], mnist5k.y_train[:600], mnist5k.x_test[:300], mnist5k.y_test[:300]


@pytest.fixture
def npz(tmp_path, digits):
    path = tmp_path / "digits.npz"
    x_train, y_train, x_test, y_test = digits
    np.savez(path, x_train=x_train[..., 0], y_train=y_train, x_test=x_test[..., 0], y_test=y_test)
    return path


@pytest.fixture
def module(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.chdir(tmp_path)  # `tf-lth run --model my_nets:small_net` from the module's folder
    return "my_nets"


def run(tmp_path, *flags) -> dict:
    out = tmp_path / "out"
    assert cli.main(["run", "-o", str(out), *RUN, *flags]) == 0
    return json.loads((out / "results.json").read_text())


def test_a_modules_function_on_an_npz_dataset(tmp_path, npz, module, capsys):
    results = run(tmp_path, "--model", f"{module}:small_net", "--dataset", f"npz:{npz}")
    assert results["model_source"] == f"the user's function {module}:small_net"
    assert results["config"]["dataset"] == f"npz:{npz}"
    ticket, pruned = results["rounds"][0], results["rounds"][-1]
    assert ticket["test_accuracy"] > 0.6  # 600 real digits, 3 epochs: well above chance (0.1)
    assert pruned["weights_remaining"] < 1


def test_a_saved_keras_file_on_an_image_folder(tmp_path, digits):
    from PIL import Image

    x_train, y_train, x_test, y_test = digits
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        for i, (image, label) in enumerate(zip(x, y)):
            (tmp_path / "images" / split / f"digit{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0]).save(tmp_path / "images" / split / f"digit{label}" / f"{i}.png")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    hidden = keras.layers.Dense(64, activation="relu", name="hidden")(keras.layers.Flatten()(inputs))
    saved = tmp_path / "net.keras"
    keras.Model(inputs, keras.layers.Dense(10, name="output")(hidden)).save(saved)
    results = run(tmp_path, "--model", str(saved), "--dataset", f"folder:{tmp_path / 'images'}")
    assert results["model_source"] == f"the user's saved model {saved}"
    assert results["rounds"][0]["test_accuracy"] > 0.6


def test_images_resized_to_the_model(tmp_path, npz, module):
    cfg = ExperimentConfig.from_dict({"dataset": f"npz:{npz}", "image_size": "32x32", "channels": 3, "resize": "pad"})
    assert (cfg.image_size, cfg.channels, cfg.resize) == ((32, 32), 3, "pad")
    results = run(tmp_path, "--model", f"{module}:small_net", "--dataset", f"npz:{npz}", "--image-size", "32x32",
                  "--channels", "3", "--resize", "pad", "--rounds", "0")
    assert results["rounds"][0]["test_accuracy"] > 0.6


@pytest.mark.parametrize("flags, message", [
    (["--model", "no_such_module:net"], "cannot import no_such_module"),
    (["--model", "my_nets:missing"], "has no function missing"),
    (["--model", "my_nets:not_a_model"], "not a tf_keras model"),
    (["--model", "missing.keras"], "does not exist"),
    (["--model", "resnet21"], "unknown model 'resnet21' (--model)"),
    (["--model", "my_nets:small_net", "--dataset", "npz:missing.npz"], "missing.npz"),
    (["--dataset", "folder:empty"], "no class sub-folders"),
    (["--dataset", "npz:bad_labels.npz"], "label"),
    (["--model", "my_nets:fixed_net", "--dataset", "npz:digits.npz", "--image-size", "32x32"], "takes inputs of shape"),
    (["--iterations", "5ep"], "counts iterations"),
    (["--milestones", "80,120"], "unit"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, npz, module, capsys, flags, message):
    (tmp_path / "empty").mkdir()
    x = np.load(npz)
    np.savez(tmp_path / "bad_labels.npz", x_train=x["x_train"], y_train=x["y_train"].astype(np.int64) - 1,
             x_test=x["x_test"], y_test=x["y_test"])
    assert cli.main(["run", "-o", str(tmp_path / "out"), *RUN, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_user_models_are_told_apart_from_registered_ones(tmp_path):
    assert models.user_model("resnet20") is None and models.user_model("pkg.mod:build_net") == "function"
    assert models.user_model("nets.py:build") == "function" and models.user_model("x.keras") == "file"
    assert models.user_model("vgg") is None
    with pytest.raises(TfLthError, match="module:function"):
        models.spec("vgg")
