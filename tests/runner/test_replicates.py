"""Replicates (one run folder per seed, then mean/min/max per round), resume of an interrupted
replicate run, and comparisons labelled by what differs; aggregating and comparing need no TensorFlow."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tf_lth import cli
from tf_lth.runner import replicates
from tf_lth.runner import results
from tf_lth.config.configs import ExperimentConfig
from tf_lth.errors import TfLthError
from tf_lth.runner.experiment import run_replicates
from tf_lth.keras2.training import EpochCheckpoint

ROOT = Path(__file__).resolve().parents[2]
SEEDS = (0, 1, 2)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    """Three seeds of a tiny mnist5k experiment, the second killed in its pruned round and rerun."""
    out = tmp_path_factory.mktemp("replicates")
    cfg = ExperimentConfig.from_dict(dict(rounds=1, epochs=1, controls=("random_reinit",), export=()))
    original = EpochCheckpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if self.path.parent.parent.parent.name == "seed_1" and self.path.parent.name == "1":
            raise Killed

    mp = pytest.MonkeyPatch()
    mp.setattr(EpochCheckpoint, "on_epoch_end", on_epoch_end)
    with pytest.raises(Killed):
        run_replicates(cfg, out, SEEDS, verbose=0, log=lambda *a: None)
    mp.undo()
    finished = {p: p.stat().st_mtime_ns for p in (out / "seed_0").rglob("*") if p.is_file()}
    assert not (out / "seed_2").exists() and (out / "seed_1" / "rounds" / "1" / "ticket.ckpt.npz").exists()
    agg = run_replicates(cfg, out, SEEDS, verbose=0, log=lambda *a: None)
    return out, agg, finished


def test_rerun_resumes_only_what_is_missing(replicated):
    out, agg, finished = replicated
    for path, mtime in finished.items():
        if path.name not in ("results.json", "results.csv") and "plots" not in path.parts \
                and "tensorboard" not in path.parts:
            assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten: seed 0 was retrained"
    assert agg["seeds"] == list(SEEDS)
    for s in SEEDS:
        assert (out / f"seed_{s}" / "rounds" / "1" / "result.json").exists()


def test_aggregate_is_mean_min_max_of_the_seeds(replicated):
    out, agg, _ = replicated
    runs = {s: json.loads((out / f"seed_{s}" / "results.json").read_text()) for s in SEEDS}
    assert [r["seed"] for r in (run["config"] for run in runs.values())] == list(SEEDS)
    on_disk = json.loads((out / "aggregate.json").read_text())
    assert on_disk == json.loads(json.dumps(agg))
    for row in agg["rounds"]:
        k = row["round"]
        for key in ("test_accuracy", "early_stop_iteration", "weights_remaining", "controls.random_reinit.test_accuracy"):
            if k == 0 and key.startswith("controls"):
                assert key not in row  # no control in the dense round
                continue
            values = [results.flatten(next(r for r in runs[s]["rounds"] if r["round"] == k))[key] for s in SEEDS]
            assert row[key]["mean"] == pytest.approx(sum(values) / 3)
            assert (row[key]["min"], row[key]["max"], row[key]["n"]) == (min(values), max(values), 3)
    accuracies = [run["rounds"][1]["test_accuracy"] for run in runs.values()]
    assert len(set(accuracies)) > 1  # the seeds really differ
    for name in ("accuracy_vs_weights_remaining.png", "early_stop_vs_weights_remaining.png"):
        assert (out / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    assert "test_accuracy.mean" in (out / "aggregate.csv").read_text().splitlines()[0]


def test_compare_labels_runs_by_what_differs(replicated, tmp_path):
    out, _, _ = replicated
    configs = [{"model": "lenet", "seed": 0, "ticket": {"rewind": "init", "rate": 0.2}},
               {"model": "lenet", "seed": 0, "ticket": {"rewind": "lr", "rate": 0.2}}]
    assert results.labels(configs) == ["rewind=init", "rewind=lr"]
    assert results.labels([configs[0], configs[0]]) == ["run 1", "run 2"]
    png = tmp_path / "cmp.png"
    assert cli.main(["compare", str(out), str(out / "seed_1"), "-o", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    table, _ = replicates.compare([out, out / "seed_1"], path=png)
    head, *rows = table.splitlines()
    assert "seeds=0,1,2" in head and "seed=1" in head  # the aggregate vs one of its seeds
    assert len(rows) == 2 and "[" in rows[1]  # the aggregate's cell shows its min-max


def test_aggregate_and_compare_need_no_tensorflow(replicated, tmp_path):
    out, _, _ = replicated
    script = ("import sys; from tf_lth import replicates, cli; replicates.aggregate_folder(sys.argv[1]); "
              "assert cli.main(['compare', sys.argv[1], '-o', sys.argv[2]]) == 0; "
              "print('TF' if 'tensorflow' in sys.modules else 'no TF')")
    result = subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "c.png")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "no TF"


@pytest.mark.parametrize("text, seeds", [("0-4", (0, 1, 2, 3, 4)), ("0,3,7", (0, 3, 7)), ([1, 2], (1, 2))])
def test_seed_lists(text, seeds):
    assert results.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["4-0", "a", "1,1", ""])
def test_bad_seed_lists(text):
    with pytest.raises(TfLthError, match="seeds"):
        results.parse_seeds(text)


def test_runs_of_different_experiments_are_not_aggregated():
    row = {"round": 0, "weights_remaining": 1.0, "test_accuracy": 0.9, "controls": {}}
    run = {"config": {"seed": 0, "rounds": 1, "ticket": {"seed": 0, "rewind": "init"}}, "rounds": [row]}
    other = {"config": {"seed": 1, "rounds": 1, "ticket": {"seed": 1, "rewind": "lr"}}, "rounds": [row]}
    same = {"config": {"seed": 1, "rounds": 1, "ticket": {"seed": 1, "rewind": "init"}}, "rounds": [row]}
    assert results.aggregate({0: run, 1: same})["config"] == {"rounds": 1, "ticket": {"rewind": "init"}, "seeds": [0, 1]}
    with pytest.raises(TfLthError, match="different experiments"):
        results.aggregate({0: run, 1: other})
