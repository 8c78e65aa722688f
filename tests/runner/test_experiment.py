"""The experiment runner: config precedence, one-line errors, folder layout, resume after SIGKILL."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from types import SimpleNamespace

import numpy as np
import pytest

from tf_lth import cli
from tf_lth.models import networks
from tf_lth.keras2 import training
from tf_lth.pruning import rewind as rewind_lib
from tf_lth.errors import TfLthError
from tf_lth.config.configs import ExperimentConfig
from tf_lth.runner.experiment import Experiment
from tf_lth.ticket.ticket import LotteryTicket

ROOT = Path(__file__).resolve().parents[2]
RUN_LTH = ROOT / "scripts" / "run_lth.py"
TINY = ["--rounds", "2", "--epochs", "3", "--controls", "random_reinit", "--export", "none", "--quiet"]


def parse(argv):
    return cli.run_config(cli.build_parser().parse_args(["run", *argv]))


def test_defaults_are_the_embedded_demo():
    cfg = parse([])
    assert (cfg.model, cfg.dataset, cfg.rounds, cfg.controls) == ("lenet_300_100", "mnist5k", 10, ("random_reinit",))
    assert cfg.ticket.rates is None and cfg.resolved().ticket.rates == {"dense": 0.2, "output": 0.1}  # the paper's
    ticket = LotteryTicket(networks.build(cfg.model), cfg.resolved().ticket)
    # after the 10 rounds: fc 784x300 and 300x100 keep 0.8^10, the 100x10 output 0.9^10 of its weights
    kept = ticket.target_counts(cfg.rounds)
    assert kept == {"fc1/kernel": 25254, "fc2/kernel": 3221, "output/kernel": 349}
    assert sum(kept.values()) / 266_200 == pytest.approx(0.1083, abs=1e-4)  # the README's "10.8% of the weights"


@pytest.mark.parametrize("suffix, text", [
    (".json", '{"rounds": 3, "rate": 0.3, "controls": ["random_mask"], "block-size": [4, 1]}'),
    (".yaml", "rounds: 3\nrate: 0.3\ncontrols: [random_mask]\nblock-size: [4, 1]\n"),
])
def test_config_file_then_flags_override(tmp_path, suffix, text):
    path = tmp_path / f"exp{suffix}"
    path.write_text(text)
    cfg = parse(["--config", str(path)])
    assert (cfg.rounds, cfg.ticket.rate, cfg.controls, cfg.ticket.block_size) == (3, 0.3, ("random_mask",), (4, 1))
    cfg = parse(["--config", str(path), "--rounds", "5", "--controls", "none"])
    assert (cfg.rounds, cfg.ticket.rate, cfg.controls) == (5, 0.3, ())


def test_flag_types():
    cfg = parse(["--rates", "dense=0.3,output=0.15", "--m-by-n", "2:4", "--ignore", "output", "--rewind",
                 "iteration:100", "--no-jit"])
    assert cfg.ticket.rates == {"dense": 0.3, "output": 0.15} and cfg.ticket.m_by_n == (2, 4)
    assert cfg.ticket.ignore == ("output",) and cfg.ticket.rewind == "iteration:100" and cfg.training.jit_compile is False
    cfg = parse(["--jit", "--steps-per-execution", "20", "--eval-every", "100"])
    assert (cfg.training.jit_compile, cfg.training.steps_per_execution) == (True, 20)
    assert parse([]).training.jit_compile is None and parse([]).training.steps_per_execution is None  # automatic


@pytest.mark.parametrize("argv, needle", [
    (["--model", "resnet"], "--model"),
    (["--rate", "1.5"], "strictly between 0 and 1"),
    (["--rounds", "-2"], "rounds = -2"),
    (["--epochs", "2", "--iterations", "100"], "not both"),
    (["--dataset", "fashion_mnist", "--data-dir", "/no/such/folder"], "does not exist"),
    (["--controls", "random_reinit,lucky"], "unknown control 'lucky'"),
    (["--rewind", "iteration:soon"], "unknown rewind"),
    (["--steps-per-execution", "30", "--eval-every", "100"], "must divide eval_every"),
    (["--block-size", "4by1"], "4x1"),
    (["--config", "/no/such/file.json"], "cannot read config file"),
])
def test_bad_flag_is_one_line_exit_2(argv, needle, capsys, tmp_path):
    assert cli.main(["run", "-o", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_unknown_config_key_and_bad_yaml(tmp_path, capsys):
    (tmp_path / "a.json").write_text('{"epoks": 3}')
    (tmp_path / "b.yaml").write_text("rounds: [1,\n")
    for name, needle in (("a.json", "unknown config key(s) epoks"), ("b.yaml", "cannot parse config file")):
        assert cli.main(["run", "--config", str(tmp_path / name)]) == 2
        assert needle in capsys.readouterr().err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny finished experiment (in process): LeNet on mnist5k, 2 rounds, random-mask control."""
    out = tmp_path_factory.mktemp("exp")
    cfg = ExperimentConfig.from_dict(dict(rounds=2, epochs=1, controls=("random_mask",), export=("tflite",)))
    Experiment(cfg, out, verbose=0, log=lambda *a: None).run()
    return out, cfg


@pytest.mark.heavy
def test_output_folder_layout(finished):
    out, cfg = finished
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["rounds"] == 2 and [r["round"] for r in results["rounds"]] == [0, 1, 2]
    for row in results["rounds"]:
        for key in ("weights_remaining", "test_accuracy", "early_stop_iteration", "early_stop_test_accuracy",
                    "supermask_test_accuracy", "controls", "wall_seconds"):
            assert key in row, key
        assert row["test_accuracy"] > 0.8
        assert set(row["controls"]) == ({"random_mask"} if row["round"] else set())
    assert abs(results["rounds"][2]["layers_remaining"]["fc1/kernel"] - 0.64) < 1e-3
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert "controls.random_mask.test_accuracy" in header
    for k in range(3):
        assert (out / "rounds" / str(k) / "masks.npz").exists() and (out / "rounds" / str(k) / "weights.npz").exists()
        assert not list((out / "rounds" / str(k)).glob("*.ckpt.npz"))  # checkpoints go once a round is done
    for name in ("accuracy_vs_weights_remaining.png", "early_stop_vs_weights_remaining.png"):
        png = (out / "plots" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert (out / "export" / "round_2" / "ticket.tflite").exists()


@pytest.mark.heavy
def test_finished_run_is_skipped_and_other_config_refused(finished):
    out, cfg = finished
    before = (out / "results.json").read_text()
    Experiment(cfg, out, verbose=0, log=lambda *a: None).run()
    assert (out / "results.json").read_text() == before
    other = ExperimentConfig.from_dict(dict(rounds=3, epochs=1, controls=("random_mask",)))
    with pytest.raises(TfLthError, match="another config .*rounds: 2 -> 3"):
        Experiment(other, out, verbose=0).run()


@pytest.mark.heavy
def test_corrupt_checkpoint_is_named_and_restart_round_recovers(finished, tmp_path):
    out, cfg = finished
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    (copy / "rounds" / "2" / "result.json").unlink()
    (copy / "rounds" / "2" / "masks.npz").write_bytes(b"not a zip")
    with pytest.raises(TfLthError, match=r"masks.npz is corrupt.*--restart-round"):
        Experiment(cfg, copy, verbose=0, log=lambda *a: None).run()
    Experiment(cfg, copy, verbose=0, log=lambda *a: None).run(restart_round=2)
    a = json.loads((out / "results.json").read_text())["rounds"][2]
    b = json.loads((copy / "results.json").read_text())["rounds"][2]
    assert a["test_accuracy"] == b["test_accuracy"] and a["controls"] == b["controls"]


def _run(out, *extra):
    return subprocess.Popen([sys.executable, str(RUN_LTH), *TINY, "-o", str(out), *extra], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _rounds(out):
    rows = json.loads((out / "results.json").read_text())["rounds"]
    for row in rows:
        row.pop("wall_seconds")
    return rows


@pytest.mark.heavy
def test_resume_after_sigkill_mid_round_gives_identical_results(tmp_path):
    """A real SIGKILL mid-round, on a structured run (unit granularity, the random_mask control): the
    checkpoint and resume machinery is the same for every granularity (tests/runner/test_resume.py resumes
    every rewind mode of weight-level runs in-process), and this run also covers units and their control."""
    extra = ["--granularity", "unit", "--controls", "random_mask"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = _run(whole, *extra)
    victim = _run(killed, *extra)
    checkpoint = killed / "rounds" / "1" / "ticket.ckpt.npz"
    deadline = time.time() + 240
    while not checkpoint.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before round 1 started: nothing was interrupted"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed / "rounds" / "1" / "result.json").exists()
    resumed = _run(killed, *extra)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    a, b = _rounds(whole), _rounds(killed)
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b):
        assert ra["test_accuracy"] == pytest.approx(rb["test_accuracy"], abs=1e-6)
        assert ra["controls"] == rb["controls"] and ra["early_stop_iteration"] == rb["early_stop_iteration"]
        assert ra["macs_remaining"] == rb["macs_remaining"] and ra.get("units_kept") == rb.get("units_kept")
    assert a[2]["units_kept"] == {"fc1": [192, 300], "fc2": [64, 100], "output": [10, 10]}  # 0.8 ** 2 of each
    for k in range(3):
        with np.load(whole / "rounds" / str(k) / "masks.npz") as ma, np.load(killed / "rounds" / str(k) / "masks.npz") as mb:
            assert all(np.array_equal(ma[n], mb[n]) for n in ma.files)


# --- steps_per_execution --------------------------------------------------------------------------


@pytest.mark.heavy
def test_steps_per_execution_is_checked_and_free_on_resume(tmp_path):
    with pytest.raises(TfLthError, match=r"steps_per_execution = 30 must divide eval_every \(100\)"):
        ExperimentConfig.from_dict(dict(steps_per_execution=30, eval_every=100))
    with pytest.raises(TfLthError, match=r"must divide the rewind step \(50\)"):
        ExperimentConfig.from_dict(dict(steps_per_execution=20, rewind="iteration:50"))
    with pytest.raises(TfLthError, match="steps_per_execution = 0 must be a whole number >= 1"):
        ExperimentConfig.from_dict(dict(steps_per_execution=0))
    Experiment(ExperimentConfig.from_dict(dict(steps_per_execution=10)), tmp_path).claim_folder()
    Experiment(ExperimentConfig.from_dict(dict(steps_per_execution=None)), tmp_path).claim_folder()  # same experiment


@pytest.mark.parametrize("train, batch, options, expected", [
    (3500, 50, {}, 100),  # 70 steps an epoch, nothing else to stop at: the cap
    (3500, 50, {"eval_every": 35}, 35),
    (3500, 50, {"eval_every": 20}, 10),
    (3500, 50, {"rewind": "iteration:28"}, 14),
    (3500, 50, {"eval_every": 20, "steps_per_execution": 5}, 5),  # given: kept
    (55000, 60, {"eval_every": 100}, 1),  # Fashion in the README: 917 steps an epoch, prime to 100
    (55000, 128, {}, 100),  # 430 steps an epoch
    (55000, 128, {"eval_every": 100}, 10),  # gcd(430, 100)
    (45000, 60, {"eval_every": 250}, 50),  # 750 steps: gcd 250, its largest divisor up to 100
    (60000, 60, {"eval_every": 200, "rewind": "iteration:500"}, 100),  # 1,000 steps, gcd 100
])
def test_steps_per_execution_keeps_every_callback_step(train, batch, options, expected):
    cfg = ExperimentConfig.from_dict(dict(batch_size=batch, **options)).resolved()
    data = SimpleNamespace(x_train=range(train))  # only its length counts
    steps = training.steps_per_epoch(data, cfg.training)
    rewind = rewind_lib.parse(cfg.ticket.rewind).iteration
    assert training.steps_per_execution(cfg.training, steps, rewind) == expected


@pytest.mark.heavy
def test_callback_sees_the_same_steps_with_steps_per_execution(mnist5k):
    from tf_lth import keras
    from tf_lth.keras2.training import LOSS

    x, y = (a[:600] for a in mnist5k.arrays("train"))  # 10 steps of 60 an epoch
    val = tuple(a[:200] for a in mnist5k.arrays("val"))

    def train(every, eval_every=5):
        keras.utils.set_random_seed(0)
        ticket = LotteryTicket(networks.build("lenet_300_100"), rate=0.5, rewind="iteration:10")
        ticket.model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, metrics=["accuracy"],
                             steps_per_execution=every, jit_compile=False)
        ticket.model.fit(x, y, batch_size=60, epochs=2, shuffle=False, verbose=0,
                         callbacks=[ticket.callback(validation_data=val, eval_every=eval_every)])
        return ticket

    one, five = train(1), train(5)
    assert [p["iteration"] for p in five.history[0]["curve"]] == [5, 10, 15, 20]
    for a, b in zip(one.history[0]["curve"], five.history[0]["curve"]):
        assert a["iteration"] == b["iteration"] and a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    for a, b in zip(one.thetak, five.thetak):  # θk taken after step 10 either way
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(TfLthError, match=r"steps_per_execution = 3 must divide the steps per epoch \(10\) and "
                                         r"eval_every \(5\)"):
        train(3)


@pytest.mark.heavy
def test_mid_epoch_evaluation_keeps_the_epoch_training_metrics(mnist5k):
    from tf_lth import keras
    from tf_lth.keras2.training import LOSS

    x, y = (a[:600] for a in mnist5k.arrays("train"))
    val = tuple(a[:200] for a in mnist5k.arrays("val"))

    def epoch_logs(eval_every):
        keras.utils.set_random_seed(0)
        ticket = LotteryTicket(networks.build("lenet_300_100"), rate=0.5)
        ticket.model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, metrics=["accuracy"], jit_compile=False)
        callback = ticket.callback(validation_data=val, eval_every=eval_every) if eval_every else ticket.callback()
        history = ticket.model.fit(x, y, batch_size=60, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
        return history.history

    plain, evaluated = epoch_logs(None), epoch_logs(3)  # 10 steps: evaluations after steps 3, 6 and 9
    assert evaluated["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    assert evaluated["accuracy"] == pytest.approx(plain["accuracy"], rel=1e-6)


KERAS = "Keras' own choice"  # the optimizer's jit_compile as Keras sets it (True on GPUs only)


@pytest.mark.parametrize("gpu, model, jit, step, update", [
    (False, "lenet_300_100", None, True, KERAS),
    (False, "conv2", None, False, True),  # XLA's CPU convolutions are slow: only the update is compiled
    (False, "conv2", False, False, KERAS),
    (True, "lenet_300_100", None, True, KERAS),
    (True, "conv2", None, True, KERAS),
    (True, "conv2", False, False, KERAS),
    (True, "lenet_300_100", False, False, KERAS),
])
@pytest.mark.heavy
def test_xla_by_default_but_for_convolutions_on_cpu(mnist5k, tmp_path, monkeypatch, gpu, model, jit, step, update):
    monkeypatch.setattr(training, "has_gpu", lambda: gpu)
    monkeypatch.setattr(training, "can_jit_compile", lambda: True)
    cfg = ExperimentConfig.from_dict(dict(model=model, jit_compile=jit)).resolved()
    ticket = LotteryTicket(networks.build(model, mnist5k.input_shape), cfg.ticket)
    training.compile_round(ticket, cfg.training, training.steps_per_epoch(mnist5k, cfg.training))
    keras_default = training.make_optimizer(cfg.training).jit_compile
    expected = (step, keras_default if update == KERAS else update)
    assert (ticket.model.jit_compile, ticket.model.optimizer.jit_compile) == expected
