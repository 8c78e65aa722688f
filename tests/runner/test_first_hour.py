"""What a new user meets in the first hour (issue 25): the trained ticket cannot be lost, a model that
scales its own input is fed raw pixels, a failed start leaves its folder as it was, an extreme ticket
still exports every file that is right, and the runner says what it does."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tf_lth
from tf_lth import cli, export, keras
from tf_lth.data import input_scale
from tf_lth.errors import TfLthError, TfLthWarning
from tf_lth.keras2.training import LOSS

ROOT = Path(__file__).resolve().parents[2]
MODULE = """
from tf_lth import keras

def cnn(input_shape, num_classes, rescale=False):
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs) if rescale else inputs
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="output")(x))

def plain(input_shape, num_classes):
    return cnn(input_shape, num_classes)

def scaled(input_shape, num_classes):
    return cnn(input_shape, num_classes, rescale=True)

def keras3_net(input_shape, num_classes):
    import keras as keras3
    return keras3.Sequential([keras3.Input(input_shape), keras3.layers.Flatten(), keras3.layers.Dense(num_classes)])
"""


@pytest.fixture
def module(tmp_path):
    path = tmp_path / "my_nets.py"
    path.write_text(textwrap.dedent(MODULE))
    return path


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """mnist5k's 4,000 training and 1,000 test digits (real MNIST) as an npz of uint8 images."""
    path = tmp_path_factory.mktemp("npz") / "digits.npz"
    (x_train, y_train), (x_test, y_test) = tf_lth.load_arrays("mnist5k")
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def lenet_ticket():
    keras.utils.set_random_seed(0)
    ticket = tf_lth.LotteryTicket(tf_lth.networks.lenet_300_100(), rate=0.5)
    ticket.model.compile(optimizer=keras.optimizers.Adam(1.2e-3), loss=LOSS, metrics=["accuracy"])
    return ticket


# --- 1. the trained ticket cannot be lost -----------------------------------------------------------------


def test_after_next_round_the_trained_round_is_what_gets_exported(mnist5k, tmp_path):
    ticket = lenet_ticket()
    assert ticket.at_rewind_point  # θ0, untrained
    for _ in range(2):
        ticket.model.fit(mnist5k.pipeline("train", 60, shuffle=True), epochs=1, verbose=0,
                         callbacks=[ticket.callback(test_data=mnist5k.pipeline("test", 1000))])
        trained_accuracy, trained_weights = ticket.history[-1]["test_accuracy"], ticket.get_weights()
        ticket.next_round()
    assert ticket.at_rewind_point and ticket.round == 2
    r, masks, weights = ticket.trained_weights()
    assert r == 1 and all(np.array_equal(a, b) for a, b in zip(weights, trained_weights))
    with pytest.warns(TfLthWarning, match="holds round 2's rewound weights.*round 1, the last trained"):
        rewound = export.export_ticket(ticket.model, tmp_path / "model", dataset=mnist5k, formats=("tflite",),
                                       benchmark=False, verbose=0)
    info = export.export_ticket(ticket, tmp_path / "ticket", dataset=mnist5k, formats=("tflite",), benchmark=False,
                                verbose=0)
    assert info["round"] == 1 and info["keras_test_accuracy"] == pytest.approx(trained_accuracy, abs=1e-6)
    assert info["formats"]["tflite"]["test_accuracy"] == pytest.approx(trained_accuracy, abs=0.002)
    assert rewound["keras_test_accuracy"] < trained_accuracy - 0.03  # what the old README example shipped
    plain = ticket.trained_model()
    assert not any("Prune" in type(layer).__name__ for layer in plain.layers)
    assert all(np.array_equal(a, b) for a, b in zip(plain.get_weights(), trained_weights))
    with pytest.raises(TfLthError, match="round 0 is trained and in memory"):
        ticket.trained_model(round=0)


def test_keras3_save_at_a_rewind_point_warns_and_the_trained_model_is_plain(mnist5k, tmp_path):
    import keras as keras3
    keras3.utils.set_random_seed(0)
    (x, y), (xt, yt) = mnist5k.arrays("train"), mnist5k.arrays("test")
    model = keras3.Sequential([keras3.Input((28, 28, 1)), keras3.layers.Flatten(),
                               keras3.layers.Dense(100, activation="relu", name="fc1"),
                               keras3.layers.Dense(10, name="output")])
    ticket = tf_lth.LotteryTicket(model, rate=0.5)
    ticket.model.compile(keras3.optimizers.Adam(1.2e-3), keras3.losses.SparseCategoricalCrossentropy(from_logits=True),
                         metrics=["accuracy"])
    ticket.model.fit(x, y, batch_size=60, epochs=1, verbose=0, callbacks=[ticket.callback(test_data=(xt, yt))])
    trained, trained_weights = ticket.history[-1]["test_accuracy"], ticket.get_weights()
    ticket.next_round()
    with pytest.warns(TfLthWarning, match="saving ticket.model while it holds round 1's rewound weights"):
        ticket.model.save(tmp_path / "rewound.keras")
    ticket.trained_model().save(tmp_path / "ticket.keras")
    loaded = keras3.saving.load_model(tmp_path / "ticket.keras")
    accuracy = float(np.mean(np.argmax(loaded.predict(xt, verbose=0), -1) == yt))
    assert accuracy == pytest.approx(trained, abs=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), trained_weights))
    rewound = keras3.saving.load_model(tmp_path / "rewound.keras")  # what the old README example shipped
    assert all(np.array_equal(a, b) for a, b in zip(rewound.get_weights(), ticket.get_weights()))  # θ0, masked


# --- 2. a model that scales its own input is fed raw pixels ---------------------------------------------


def test_detect_reads_the_first_layers():
    inputs = keras.Input((8, 8, 1))
    scaled = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Rescaling(1 / 255)(keras.layers.Flatten()(inputs))))
    assert input_scale.detect(scaled).scale == "raw"
    norm = keras.layers.Normalization(axis=None)
    norm.adapt(np.random.default_rng(0).uniform(0, 255, (20, 8, 8, 1)))
    assert input_scale.detect(keras.Sequential([keras.Input((8, 8, 1)), norm, keras.layers.Dense(2)])).scale == "raw"
    unit = keras.layers.Normalization(axis=None)
    unit.adapt(np.random.default_rng(0).uniform(0, 1, (20, 8, 8, 1)))
    assert input_scale.detect(keras.Sequential([keras.Input((8, 8, 1)), unit, keras.layers.Dense(2)])).scale == "unit"
    assert input_scale.detect(tf_lth.networks.lenet_300_100()).scale == "unit"
    assert input_scale.decide(scaled, "unit").scale == "unit"  # the user's override wins, and is said
    assert "the model alone would say raw" in input_scale.decide(scaled, "unit").reason
    with pytest.raises(TfLthError, match="input scale 'percent'"):
        input_scale.check("percent")


def test_a_rescaling_model_learns_as_well_as_the_same_model_without_it(module, digits_npz, tmp_path, capsys):
    results = {}
    for name in ("plain", "scaled"):
        out = tmp_path / name
        assert cli.main(["run", "--model", f"{module}:{name}", "--dataset", f"npz:{digits_npz}", "--rounds", "0",
                         "--epochs", "2", "--controls", "none", "--export", "tflite", "-o", str(out)]) == 0
        results[name] = json.loads((out / "results.json").read_text())
        exported = json.loads((out / "export" / "round_0" / "ticket.json").read_text())
        assert exported["input"]["scale"] == results[name]["input"]["scale"]
        # the exported file is fed as ticket.json says, and computes what Keras computed
        assert exported["formats"]["tflite"]["test_accuracy"] == pytest.approx(exported["keras_test_accuracy"], abs=0.002)
    assert results["plain"]["input"]["scale"] == "unit" and results["scaled"]["input"]["scale"] == "raw"
    assert "Rescaling 'rescale'" in results["scaled"]["input"]["reason"]
    plain, scaled = (results[n]["rounds"][0]["test_accuracy"] for n in ("plain", "scaled"))
    assert plain > 0.85 and abs(scaled - plain) <= 0.01, (plain, scaled)  # fed [0, 1] twice-scaled it made ~0.4
    assert "input: the model starts with Rescaling 'rescale'" in capsys.readouterr().out


# --- 3. a failed start leaves the folder as it was -------------------------------------------------------


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else None


def test_a_failed_start_leaves_the_folder_as_it_was(module, digits_npz, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["run", "--dataset", f"npz:{digits_npz}", "--rounds", "1", "--epochs", "1", "--controls", "none",
            "--export", "none", "-o", str(out)]
    for model in (f"{module}:plian", f"{module}:keras3_net"):  # a typo; a Keras 3 model without --keras 3
        assert cli.main([*base, "--model", model]) == 2
        assert listing(out) is None, model
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli.main([*base, "--model", f"{module}:plian"]) == 2
    assert listing(out) == ["notes.txt"]
    capsys.readouterr()
    # a folder a failed start of an older version left (config.json alone) takes the corrected command
    (out / "config.json").write_text(json.dumps({"model": "lenet_300_100", "rounds": 7}))
    assert cli.main([*base, "--model", f"{module}:plain"]) == 0
    assert json.loads((out / "config.json").read_text())["model"] == f"{module}:plain"
    # a started experiment refuses another config, and says how to start over; --restart-round 0 does
    assert cli.main([*base, "--model", f"{module}:plain", "--epochs", "2"]) == 2
    assert "--restart-round 0 to discard its rounds" in capsys.readouterr().err
    assert cli.main([*base, "--model", f"{module}:plain", "--epochs", "2", "--restart-round", "0"]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["training"]["epochs"] == 2


def test_a_damaged_config_json_is_one_line_saying_what_to_do(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "ticket.json").write_text("{}")
    (out / "config.json").write_text('{"model": "lenet_30')
    assert cli.main(["run", "-o", str(out), "--rounds", "1", "--epochs", "1", "--export", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tf-lth: error: {out}/config.json is damaged (not JSON): delete it to resume with this command's "
                   "config (the rounds stay), or use another --output"]


# --- 4. an extreme ticket exports every file that is right -----------------------------------------------


def test_a_ticket_at_1_6_percent_exports_saved_model_fp32_and_a_correct_int8(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "--dataset", "mnist5k", "--rounds", "6", "--rate", "0.5", "--criterion",
                     "large_final_same_sign", "--epochs", "1", "--controls", "none", "-o", str(out)]) == 0
    info = json.loads((out / "export" / "round_6" / "ticket.json").read_text())
    assert info["parameters"]["nonzero"] / info["parameters"]["total"] <= 0.02
    assert set(info["formats"]) == {"saved_model", "tflite", "int8"} and "failed" not in info
    assert sorted(os.listdir(out / "export" / "round_6")) == ["saved_model", "ticket.json", "ticket.tflite",
                                                              "ticket_int8.tflite"]
    int8 = info["formats"]["int8"]
    assert int8["argmax_agreement_beyond_ties"] >= 0.99 and abs(int8["test_accuracy"] - info["keras_test_accuracy"]) <= 0.02
    assert int8["storage_choice"]["dense"]["check"] == "passed"


def test_a_conv_ticket_at_2_percent_exports_a_correct_int8(mnist5k, tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten()(x)
    net = keras.Model(inputs, keras.layers.Dense(10, name="output")(x))
    w = net.get_weights()
    sizes = {"conv1/kernel": 288, "conv2/kernel": 9216, "output/kernel": 46080}
    rates = tf_lth.masks.level_rates(sizes, {k: 0.2 for k in sizes}, 0.02)
    ticket = tf_lth.LotteryTicket.one_shot(net, w, w, rates={k.split("/")[0]: r for k, r in rates.items()})
    assert ticket.weights_remaining <= 0.021
    ticket.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS)
    ticket.model.fit(mnist5k.pipeline("train", 60, shuffle=True), epochs=1, verbose=0, callbacks=[ticket.callback()])
    info = export.export_ticket(ticket, tmp_path / "conv", dataset=mnist5k, formats=("tflite", "int8"),
                                benchmark=False, verbose=0)
    assert set(info["formats"]) == {"tflite", "int8"} and "failed" not in info
    int8 = info["formats"]["int8"]
    assert int8["argmax_agreement_beyond_ties"] >= 0.99 and abs(int8["test_accuracy"] - info["keras_test_accuracy"]) <= 0.02


def test_storage_follows_the_rule_when_it_cannot_measure():
    from tf_lth.export.tflite import expected_faster
    sparse = {"ops": ["DENSIFY", "FULLY_CONNECTED"], "resolver": "AUTO"}
    assert expected_faster("tflite", {"sparse": sparse, "dense": {"resolver": "AUTO"}})[0] == "sparse"
    assert expected_faster("int8_full", {"sparse": sparse, "dense": {"resolver": "AUTO"}})[0] == "dense"
    builtin = {**sparse, "resolver": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}
    assert expected_faster("int8", {"sparse": builtin, "dense": {"resolver": "AUTO"}})[0] == "dense"
    assert expected_faster("int8", {"sparse": {"ops": ["FULLY_CONNECTED"], "resolver": "AUTO"},
                                    "dense": {"resolver": "AUTO"}})[0] == "sparse"  # 1x4 blocks: read sparse


# --- 6. the runner says what it does, and the exported file runs ------------------------------------------


def test_run_prints_a_labelled_line_per_network_and_how_to_run_the_export(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "--rounds", "2", "--epochs", "1", "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"lenet_300_100 on mnist5k (3,500/500/1,000 train/val/test), 2 pruning rounds")
    assert lines[1].startswith("input: the model has no leading Rescaling")
    networks = [line.split()[:3] for line in lines if line.startswith("round ") and "% of weights" in line]
    assert networks == [["round", "0/2", "ticket"], ["round", "1/2", "ticket"], ["round", "1/2", "random_reinit"],
                        ["round", "2/2", "ticket"], ["round", "2/2", "random_reinit"]]
    assert any(line.startswith("best_it: iteration of minimum validation loss") for line in lines)
    assert f"exported round 2 to {out}/export/round_2/" in "\n".join(lines)
    assert lines[-1].startswith(f"run the exported ticket: tf-lth predict {out}/export/round_2/ticket.tflite")
    assert len(lines) <= 30
    # the file runs as that line says, fed as its ticket.json says
    tflite_file = out / "export" / "round_2" / "ticket.tflite"
    assert cli.main(["predict", str(tflite_file), "--dataset", "mnist5k"]) == 0
    accuracy = json.loads((out / "export" / "round_2" / "ticket.json").read_text())["formats"]["tflite"]["test_accuracy"]
    assert f"mnist5k test split: accuracy {accuracy:.4f} on 1,000 images" in capsys.readouterr().out
    from PIL import Image
    (x, y), paths = tf_lth.data.load("mnist5k").split("test"), []
    for i in range(3):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(x[i, ..., 0]).save(paths[-1])
    assert cli.main(["predict", str(tflite_file), *map(str, paths)]) == 0
    from tf_lth.export.predict import Runner
    expected = Runner(tflite_file)(x[:3]).argmax(-1)
    printed = [int(line.split("class ")[1].split()[0]) for line in capsys.readouterr().out.splitlines()[1:]]
    assert printed == expected.tolist()
    # resuming says so
    assert cli.main(["run", "--rounds", "2", "--epochs", "1", "-o", str(out)]) == 0
    assert "resuming: rounds 0-2 finished (read back)" in capsys.readouterr().out


def test_early_bird_alone_takes_the_measured_eps():
    from tf_lth.config.configs import EARLY_BIRD_EPS
    parse = lambda *argv: cli.run_config(cli.build_parser().parse_args(["run", *argv]))  # noqa: E731
    assert parse("--early-bird").training.early_bird == EARLY_BIRD_EPS == 0.105
    assert parse("--early-bird", "0.2").training.early_bird == 0.2
    assert parse().training.early_bird is None


def test_ctrl_c_says_how_to_resume(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "run_lth.py"), "--rounds", "3", "--epochs", "3",
                             "-o", str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    for line in proc.stdout:  # interrupted once round 0 is done
        if line.startswith("round 0/3 ticket"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == (
        f"tf-lth: interrupted: rerun the same command to resume ({tmp_path / 'run'}/ keeps every finished round and "
        "the last epoch checkpoint of the one in progress)")
