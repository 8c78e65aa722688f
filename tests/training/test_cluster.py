"""Scaling out on tf.distribute (``--strategy``, :mod:`tf_lth.training.cluster`).

- Bad configurations (unknown strategy, malformed or inconsistent ``TF_CONFIG``, devices without
  ``mirrored``, a batch that does not divide over the replicas) are one line and exit 2, answered
  before TensorFlow loads.
- On 2 logical CPUs (set before TensorFlow initialises its devices, hence a subprocess): a mirrored run
  gives the masks of a single-device run from the same θ0 and data order, and every replica's copy of a
  pruned weight is exactly zero after every step (bfloat16 mixed precision too).
- Two worker processes on 127.0.0.1 (``TF_CONFIG``, free loopback ports, bounded time) finish two
  rounds with equal masks and only the chief writes the folder; killing the chief mid-round then
  rerunning both resumes to the same results (~35 s on 2 quiet cores: two more two-process runs).
"""
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tf_lth import cli
from tf_lth.training import cluster as distribute
from tf_lth.config.configs import ExperimentConfig
from tf_lth.errors import TfLthError

ROOT = Path(__file__).resolve().parents[2]
WORKERS = '{"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}, "task": {"type": "worker", "index": %s}}'


# -- TF_CONFIG and the checks made before TensorFlow loads ----------------------------------------
def test_a_cluster_is_read_from_tf_config():
    first = distribute.parse_cluster(WORKERS % 0)
    assert (first.workers, first.task_type, first.task_index, first.is_chief) == (2, "worker", 0, True)
    assert not distribute.parse_cluster(WORKERS % 1).is_chief
    chief = '{"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "%s", "index": %d}}'
    assert distribute.parse_cluster(chief % ("chief", 0)).is_chief
    assert not distribute.parse_cluster(chief % ("worker", 0)).is_chief  # a chief is named: worker 0 is not it
    assert distribute.parse_cluster(chief % ("worker", 1)).workers == 3


BAD_TF_CONFIG = {
    "malformed JSON": ('{"cluster": ', "is not JSON"),
    "not a mapping": ("[1, 2]", "has no \"cluster\""),
    "no cluster": ('{"task": {"type": "worker", "index": 0}}', "has no \"cluster\""),
    "no task": ('{"cluster": {"worker": ["a:1", "b:1"]}}', "has no \"task\""),
    "index out of range": (WORKERS % 2, "task index 2 is out of range"),
    "negative index": (WORKERS % -1, "task index -1 is out of range"),
    "task type not in cluster": ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
                                 "task type 'chief' is not in its cluster"),
    "unknown task type": ('{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "ps", "index": 0}}',
                          "task type(s) 'ps'"),
    "bad address": ('{"cluster": {"worker": ["a", "b:1"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    "address twice": ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}', "twice"),
}


@pytest.mark.parametrize("case", BAD_TF_CONFIG)
def test_a_bad_tf_config_is_one_line_saying_the_fix(case):
    text, needle = BAD_TF_CONFIG[case]
    with pytest.raises(TfLthError) as e:
        distribute.check("multi_worker", environ={"TF_CONFIG": text})
    message = str(e.value)
    assert needle in message and "TF_CONFIG=" in message and "\n" not in message


def test_each_check_made_before_tensorflow():
    with pytest.raises(TfLthError, match="needs TF_CONFIG"):
        distribute.check("multi_worker", environ={})
    with pytest.raises(TfLthError, match="unknown strategy"):
        distribute.check("horovod")
    with pytest.raises(TfLthError, match="are for --strategy mirrored"):
        ExperimentConfig(strategy="default", devices=("GPU:0",))
    with pytest.raises(TfLthError, match="batch size 61 does not divide over the 2 devices.*--batch-size 62"):
        distribute.check("mirrored", ("CPU:0", "CPU:1"), 61)
    with pytest.raises(TfLthError, match="batch size 61 does not divide over the 2 workers"):
        distribute.check("multi_worker", (), 61, environ={"TF_CONFIG": WORKERS % 0})
    assert distribute.check("mirrored", ("CPU:0", "CPU:1"), 60) is None
    assert distribute.per_replica_batch(60, 4) == 15
    config = ExperimentConfig.from_dict({"strategy": "mirrored", "devices": ["GPU:0", "GPU:1"]})
    assert config.devices == ("GPU:0", "GPU:1") and ExperimentConfig.from_dict(config.to_dict()) == config


def test_the_learning_rate_is_kept_or_scaled_linearly_when_asked():
    training = ExperimentConfig.from_dict({"batch_size": 240}).resolved().training  # LeNet's recipe: 60, 1.2e-3
    assert distribute.learning_rate_rule(training, 60) == (training, "kept")
    scaled, rule = distribute.learning_rate_rule(ExperimentConfig.from_dict(
        {"batch_size": 240, "scale_lr": True}).resolved().training, 60)
    assert scaled.learning_rate == pytest.approx(4.8e-3) and rule == "linear: 0.0012 x 240/60"


BAD_RUNS = {
    "unknown strategy": (["--strategy", "horovod"], None, "invalid choice: 'horovod'"),
    "malformed TF_CONFIG": (["--strategy", "multi_worker"], '{"cluster"', "TF_CONFIG is not JSON"),
    "inconsistent TF_CONFIG": (["--strategy", "multi_worker"], WORKERS % 5, "task index 5 is out of range"),
    "missing TF_CONFIG": (["--strategy", "multi_worker"], "", "needs TF_CONFIG"),
    "batch over devices": (["--strategy", "mirrored", "--devices", "CPU:0,CPU:1", "--batch-size", "61"], None,
                           "does not divide over the 2 devices"),
    "batch over workers": (["--strategy", "multi_worker", "--batch-size", "61"], WORKERS % 1,
                           "does not divide over the 2 workers"),
    "devices without mirrored": (["--devices", "GPU:0"], None, "are for --strategy mirrored"),
}


@pytest.mark.heavy
@pytest.mark.parametrize("case", BAD_RUNS)
def test_bad_configurations_are_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    flags, tf_config, needle = BAD_RUNS[case]
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    assert cli.main(["run", *flags, "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.heavy
def test_tf_config_is_checked_before_tensorflow_loads(tmp_path):
    code = ("import sys; from tf_lth import cli; rc = cli.main(['run', '--strategy', 'multi_worker']); "
            "assert 'tensorflow' not in sys.modules; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "TF_CONFIG": WORKERS % 7})
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "out of range" in done.stderr, done.stderr


# -- mirrored over 2 logical CPUs --------------------------------------------------------------------
MIRRORED = r'''
import json, sys
from pathlib import Path
import numpy as np
from tf_lth.keras2 import keras, tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
from tf_lth.data import pipeline as data_lib
from tf_lth.keras2 import distribute
from tf_lth.models import networks
from tf_lth.config.configs import ExperimentConfig
from tf_lth.runner.experiment import Experiment
from tf_lth.ticket.ticket import LotteryTicket
from tf_lth.keras2.training import compile_round, steps_per_epoch, train_round

out = Path(sys.argv[1])
base = dict(rounds=2, epochs=1, controls=(), export=())
for name, extra in (("single", {}), ("mirrored", {"strategy": "mirrored", "devices": ("CPU:0", "CPU:1")})):
    Experiment(ExperimentConfig.from_dict({**base, **extra}), out / name, verbose=0, log=lambda *a: None).run()

# every replica's copy of each pruned weight and mask after every step, under mixed precision
strategy = distribute.make_strategy("mirrored", ("CPU:0", "CPU:1"))
data = data_lib.load("mnist5k")
training = ExperimentConfig.from_dict(dict(epochs=1, steps_per_execution=1)).resolved().training
seen = {"steps": 0, "nonzero": 0, "mask_differences": 0, "replicas": set(), "devices": set()}


class Check(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        seen["steps"] += 1
        for key, i in ticket.kernels().items():
            values = strategy.experimental_local_results(ticket.masked.variables[i])  # float32 under AutoCast
            masks = strategy.experimental_local_results(ticket.masked.keep[key])
            seen["replicas"].add(len(values))
            seen["devices"].update(v.device for v in values)
            for value, mask in zip(values, masks):
                seen["nonzero"] += int(np.count_nonzero(value.numpy()[~ticket.masks[key]]))
                seen["mask_differences"] += int(np.count_nonzero(mask.numpy().astype(bool) != ticket.masks[key]))


with distribute.precision(True) as policy, strategy.scope():
    keras.utils.set_random_seed(0)
    ticket = LotteryTicket(networks.lenet_300_100(), rate=0.5)
    compile_round(ticket, training, steps_per_epoch(data, training))
    train_round(ticket, data, training, callbacks=(Check(),))
    ticket.next_round()
    train_round(ticket, data, training, callbacks=(Check(),))
print("REPORT", json.dumps({**seen, "replicas": sorted(seen["replicas"]), "devices": len(seen["devices"]),
                            "policy": policy, "weights_remaining": ticket.weights_remaining}))
'''


def start(script: Path, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, env={**os.environ, **(env or {})})


@pytest.mark.heavy
def test_mirrored_over_two_devices_draws_the_masks_of_one_device(tmp_path):
    (tmp_path / "mirrored.py").write_text(MIRRORED)
    process = start(tmp_path / "mirrored.py", tmp_path)
    output, _ = process.communicate(timeout=400)
    assert process.returncode == 0, output[-3000:]
    report = json.loads(next(line for line in output.splitlines() if line.startswith("REPORT "))[7:])
    steps = -(-3500 // 60)
    assert report == {"steps": 2 * steps, "nonzero": 0, "mask_differences": 0, "replicas": [2], "devices": 2,
                      "policy": "mixed_bfloat16", "weights_remaining": report["weights_remaining"]}
    assert report["weights_remaining"] < 0.6
    single, mirrored = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("single", "mirrored"))
    assert mirrored["distribution"] == {"strategy": "mirrored", "devices": ["CPU:0", "CPU:1"], "workers": 1,
                                        "replicas": 2, "global_batch": 60, "per_replica_batch": 30,
                                        "learning_rate": 0.0012, "learning_rate_rule": "kept", "precision": "float32"}
    assert single["distribution"]["replicas"] == 1 and single["distribution"]["per_replica_batch"] == 60
    with np.load(tmp_path / "single" / "theta0.npz") as a, np.load(tmp_path / "mirrored" / "theta0.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)  # the same θ0
    agreement = []
    for r in (1, 2):
        with np.load(tmp_path / "single" / "rounds" / str(r) / "masks.npz") as a, \
                np.load(tmp_path / "mirrored" / "rounds" / str(r) / "masks.npz") as b:
            for key in a.files:
                assert a[key].sum() == b[key].sum(), (r, key)  # per-layer kept counts identical
                agreement.append(float(np.mean(a[key] == b[key])))
    assert min(agreement) >= 0.999, agreement
    for a, b in zip(single["rounds"], mirrored["rounds"]):
        assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.01


# -- two worker processes on 127.0.0.1 ----------------------------------------------------------------
WORKER = r'''
import hashlib, json, os, sys
from pathlib import Path
from tf_lth.ticket import store
from tf_lth.keras2 import training
from tf_lth.config.configs import ExperimentConfig
from tf_lth.runner.experiment import Experiment

out, kill_round = Path(sys.argv[1]), sys.argv[2]
save = store.save


def reporting_save(ticket, path):  # each process's masks, as it holds them when it saves the ticket
    digest = hashlib.sha256(b"".join(ticket.masks[k].tobytes() for k in sorted(ticket.masks))).hexdigest()
    print("MASKS", json.dumps([ticket.round, digest]), flush=True)
    return save(ticket, path)


store.save = reporting_save
if kill_round != "-":  # SIGKILL right after the first epoch checkpoint of that round: mid-round
    write = training.EpochCheckpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        write(self, epoch, logs)
        if self.path.parent.name == kill_round and epoch == 0:
            os.kill(os.getpid(), 9)

    training.EpochCheckpoint.on_epoch_end = on_epoch_end
config = ExperimentConfig.from_dict(dict(rounds=1, epochs=2, controls=(), export=(), strategy="multi_worker"))
Experiment(config, out, verbose=0).run()
print("DONE", flush=True)
'''


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(tmp_path: Path, out: Path, kill_chief_in_round: str = "-", timeout: float = 300) -> list:
    """Both workers of a fresh 2-task cluster on 127.0.0.1, each with its own TMPDIR; (returncode,
    output, tmpdir) per worker."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    runs = []
    for i in range(2):
        tmp = tmp_path / f"tmp_{len(list(tmp_path.glob('tmp_*')))}"
        tmp.mkdir()
        env = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}), "TMPDIR": str(tmp)}
        runs.append((start(script, out, kill_chief_in_round if i == 0 else "-", env=env), tmp))
    done = []
    for process, tmp in runs:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        done.append((process.returncode, output, tmp))
    return done


def masks_reported(output: str) -> list:
    return [json.loads(line[6:]) for line in output.splitlines() if line.startswith("MASKS ")]


def rounds_of(out: Path) -> list:
    rows = json.loads((out / "results.json").read_text())["rounds"]
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """One uninterrupted two-worker run: (folder, its parent, (returncode, output, TMPDIR) per worker)."""
    tmp_path = tmp_path_factory.mktemp("workers")
    return tmp_path / "whole", tmp_path, run_workers(tmp_path, tmp_path / "whole")


@pytest.mark.heavy
def test_two_workers_finish_with_equal_masks_and_only_the_chief_writes(two_workers):
    whole, _, ((chief_rc, chief_out, chief_tmp), (worker_rc, worker_out, worker_tmp)) = two_workers
    assert chief_rc == 0 and "DONE" in chief_out, chief_out[-3000:]
    assert worker_rc == 0 and "DONE" in worker_out, worker_out[-3000:]
    reported = masks_reported(chief_out)
    assert [r for r, _ in reported] == [0, 0, 1] and masks_reported(worker_out) == reported  # the workers' masks
    with np.load(whole / "rounds" / "1" / "masks.npz") as saved:
        digest = hashlib.sha256(b"".join(saved[k].tobytes() for k in sorted(saved.files))).hexdigest()
    assert reported[-1][1] == digest  # ... are the chief's saved masks
    results = json.loads((whole / "results.json").read_text())
    assert [row["round"] for row in results["rounds"]] == [0, 1]
    assert results["distribution"]["workers"] == results["distribution"]["replicas"] == 2
    assert results["distribution"]["per_replica_batch"] == 30
    assert not any(chief_tmp.iterdir()) and not any(worker_tmp.iterdir())  # the worker's copy is removed


@pytest.mark.slow  # ~60 s: `make test-slow` runs it (the SIGKILL test in tests/runner/test_experiment.py keeps resume in CI)
def test_a_chief_killed_mid_round_resumes_to_the_same_results(two_workers):
    whole, tmp_path, _ = two_workers
    killed = tmp_path / "killed"
    (chief_rc, chief_out, _), (worker_rc, worker_out, _) = run_workers(tmp_path, killed, "1", timeout=180)
    assert chief_rc == -9 and worker_rc != 0, (chief_out[-2000:], worker_out[-2000:])
    assert (killed / "rounds" / "1" / "ticket.ckpt.npz").exists() and not (killed / "rounds" / "1" / "result.json").exists()
    assert "a worker stopped or cannot be reached" in worker_out  # one line, saying how to go on
    (chief_rc, chief_out, _), (worker_rc, worker_out, _) = run_workers(tmp_path, killed)
    assert chief_rc == 0 and worker_rc == 0, (chief_out[-3000:], worker_out[-3000:])
    assert masks_reported(chief_out) == masks_reported(worker_out)
    assert rounds_of(killed) == rounds_of(whole)
    for r in (0, 1):
        for name in ("masks.npz", "weights.npz"):
            with np.load(whole / "rounds" / str(r) / name) as a, np.load(killed / "rounds" / str(r) / name) as b:
                assert all(np.array_equal(a[k], b[k]) for k in a.files), (r, name)
