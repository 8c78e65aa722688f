"""The runner with ``--keras 3``: the paper models built in Keras 3 (same layer names, initializers and
rates as tf_keras), a whole experiment end to end with the results.json of a tf_keras run, resume
after a kill, and one-line refusals of what Keras 3 cannot run."""
import json

import numpy as np
import pytest

from tf_lth import cli
from tf_lth.models import networks
from tf_lth.keras3 import training as training3
from tf_lth.config.configs import ExperimentConfig
from tf_lth.ticket.ticket import LotteryTicket
from tf_lth.runner.results import flatten
from test_resume import rows, run  # the kill-and-resume harness, given Keras 3's checkpoint

RUN = ["--rounds", "1", "--epochs", "2", "--batch-size", "350", "--controls", "random_reinit", "--export", "none",
       "--rate", "0.5", "--no-jit", "--quiet"]  # 10 steps per epoch of mnist5k; tracing without XLA is quicker


@pytest.fixture(scope="module")
def keras3_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("k3") / "whole"
    assert cli.main(["run", "--keras", "3", *RUN, "-o", str(out)]) == 0
    return out


@pytest.mark.parametrize("model", ["lenet_300_100", "conv2", "resnet20"])
def test_one_builder_gives_the_same_ticket_in_both_flavours(model):
    cfg = ExperimentConfig.from_dict({"model": model}).resolved()
    tickets = []
    for flavour in (2, 3):
        keras = networks.keras_of(flavour)
        keras.utils.set_random_seed(0)
        tickets.append(LotteryTicket(networks.build(model, keras=flavour), cfg.ticket))
    tf_keras, keras3 = tickets
    assert (tf_keras.flavour.name, keras3.flavour.name) == ("tf_keras", "keras3")
    assert keras3.kernels() == tf_keras.kernels() and keras3.rates == tf_keras.rates
    assert [w.shape for w in keras3.theta0] == [w.shape for w in tf_keras.theta0]
    if model == "lenet_300_100":  # the same seed draws the same θ0 on the TensorFlow backend
        assert all(np.array_equal(a, b) for a, b in zip(keras3.theta0, tf_keras.theta0))


def test_keras3_run_writes_the_fields_of_a_tf_keras_run(keras3_run, tmp_path):
    assert cli.main(["run", *RUN, "--rounds", "0", "-o", str(tmp_path / "tf_keras")]) == 0  # its dense round
    ours, theirs = (json.loads((folder / "results.json").read_text()) for folder in (keras3_run, tmp_path / "tf_keras"))
    assert set(flatten(ours)) == set(flatten(theirs)) and set(flatten(ours["config"])) == set(flatten(theirs["config"]))
    assert set(flatten(ours["rounds"][0])) == set(flatten(theirs["rounds"][0]))
    assert set(flatten(ours["rounds"][1])) - set(flatten(theirs["rounds"][0])) == {"controls.random_reinit." + k for k in
                                                                            ours["rounds"][1]["controls"]["random_reinit"]}
    assert ours["config"]["keras"] == 3 and theirs["config"]["keras"] == 2
    assert json.loads((keras3_run / "ticket.json").read_text())["flavour"] == "keras3"
    # the same seed, θ0 and batches: the same dense round
    assert ours["rounds"][0]["test_accuracy"] == pytest.approx(theirs["rounds"][0]["test_accuracy"], abs=0.02)
    masks = np.load(keras3_run / "rounds" / "1" / "masks.npz")
    weights = np.load(keras3_run / "rounds" / "1" / "weights.npz")
    kernels = json.loads((keras3_run / "ticket.json").read_text())["kernels"]
    index = dict(zip(kernels, (0, 2, 4)))  # lenet: fc1, fc2, output kernels, each followed by its bias
    assert sorted(index) == ["fc1/kernel", "fc2/kernel", "output/kernel"]
    for key, i in index.items():
        mask = masks[key.replace("/", "|")]
        assert 0 < mask.mean() < 1 and not weights[f"w{i}"][~mask].any(), key


def test_keras3_resume_after_kills_gives_the_same_rows(keras3_run, tmp_path, monkeypatch):
    cfg = cli.run_config(cli.build_parser().parse_args(["run", "--keras", "3", *RUN]))
    out = tmp_path / "killed"
    # killed in round 1 after its first epoch's checkpoint: the next run rebuilds the Keras 3 ticket from the
    # folder, restores weights, optimizer and progress, and trains the second epoch
    run(cfg, out, [("ticket", 1, "after")], monkeypatch, checkpoint=training3.EpochCheckpoint)
    assert rows(out) == rows(keras3_run)
    for k in range(2):
        for name in ("masks.npz", "weights.npz"):
            with np.load(keras3_run / "rounds" / str(k) / name) as x, np.load(out / "rounds" / str(k) / name) as y:
                assert all(np.array_equal(x[n], y[n]) for n in x.files), (k, name)


def test_resuming_with_the_other_flavour_is_one_line(keras3_run, capsys):
    assert cli.main(["run", "--keras", "2", *RUN, "-o", str(keras3_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "keras: 3 -> 2" in err


@pytest.mark.parametrize("flags, needle", [
    (["--strategy", "mirrored"], "--strategy"),
    (["--devices", "CPU:0"], "--strategy"),
    (["--mixed-precision"], "--mixed-precision"),
    (["--keras", "4"], "invalid choice"),
    (["--export", "tflite,int8_qat"], "int8_qat"),
])
def test_unsupported_keras3_option_is_one_line_exit_2(flags, needle, capsys, tmp_path):
    assert cli.main(["run", "--keras", "3", "--export", "none", *flags, "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "x").exists()
