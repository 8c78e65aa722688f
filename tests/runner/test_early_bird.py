"""Early-bird and patience stops in the runner (the rules themselves: tests/pruning/test_stopping.py): a real
short run that stops where the rule says, the next masks drawn from the weights at the stop, kill + resume
with early-bird on, the full tail, and folders written before it existed."""
import json

import numpy as np
import pytest

from tf_lth.ticket import store
from tf_lth.config.configs import ExperimentConfig, TrainingConfig
from tf_lth.errors import TfLthError
from tf_lth.runner.experiment import Experiment
from tf_lth.util.io import read_npz
from tf_lth.pruning.stopping import early_bird_stop, mask_distance, val_loss_stop
from tf_lth.keras2.training import EpochCheckpoint

# mnist5k: 70 steps of 50 an epoch, an evaluation every 10 steps, 3 epochs
OPTIONS = dict(rounds=2, epochs=3, batch_size=50, eval_every=10, early_bird=0.015, early_bird_patience=2,
               early_bird_window=1, full_tail=0, controls=(), export=())


class Killed(Exception):
    pass


def test_options_are_checked():
    with pytest.raises(TfLthError, match="early_bird = 1.5"):
        TrainingConfig(early_bird=1.5)
    with pytest.raises(TfLthError, match="patience = 0"):
        TrainingConfig(patience=0)
    with pytest.raises(TfLthError, match="full_tail = -1 must be a whole number >= 0"):
        TrainingConfig(full_tail=-1)


def test_the_last_rounds_before_the_final_one_train_to_the_end(tmp_path):
    """The stop rules apply to every round but the final one, the ``full_tail`` rounds before it (they
    draw the final ticket's mask) and the listed ``full_rounds``."""
    def intermediate(**options):
        config = ExperimentConfig.from_dict({**OPTIONS, "rounds": 5, **options})
        return [r for r in range(6) if Experiment(config, tmp_path, verbose=0).intermediate(r)]

    assert intermediate(full_tail=0) == [0, 1, 2, 3, 4]
    assert intermediate(full_tail=2) == [0, 1, 2]
    assert intermediate(full_tail=2, full_rounds=(0,)) == [1, 2]
    assert intermediate(full_tail=9) == []
    assert TrainingConfig().full_tail == 2  # the default, measured on Fashion-MNIST (README)


@pytest.fixture(scope="module")
def early(tmp_path_factory):
    out = tmp_path_factory.mktemp("early_bird")
    Experiment(ExperimentConfig.from_dict(OPTIONS), out, verbose=0, log=lambda *a: None).run()
    return out, json.loads((out / "results.json").read_text())


def test_intermediate_rounds_stop_where_the_rule_says_and_the_last_trains_to_the_end(early):
    _, results = early
    rows = results["rounds"]
    for row in rows[:-1]:
        distances = [p["distance"] for p in row["mask_distance"]]
        stop = next((i for i in range(1, len(distances) + 1) if early_bird_stop(distances[:i], 0.015, 2)), None)
        assert stop is not None, distances  # the rule fires within the round on this data
        assert row["stopped"] == "early_bird" and row["mask_distance"][stop - 1]["iteration"] == row["iterations"]
        assert len(distances) == stop  # nothing was evaluated after the stop
        assert row["iterations"] < 210
    assert (rows[-1]["stopped"], rows[-1]["iterations"]) == ("end", 210)
    assert results["total_iterations"] == sum(r["iterations"] for r in rows)


def test_the_next_masks_are_drawn_from_the_weights_at_the_stop(early):
    out, _ = early
    ticket = store.load(out, round=0)  # weights: round 0's at its early stop
    drawn = ticket.draw_masks()
    saved = read_npz(out / "rounds" / "1" / "masks.npz")
    for key, mask in drawn.items():
        np.testing.assert_array_equal(mask, saved[key.replace("/", "|")])


@pytest.mark.slow  # ~15 s; resume itself stays in CI (test_resume, the SIGKILL test); `make test-slow`
def test_kill_and_resume_with_early_bird_on_gives_the_same_results(early, tmp_path, monkeypatch):
    _, whole = early
    original = EpochCheckpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if self.path.parent.name == "1" and epoch == 0:
            raise Killed

    cfg = ExperimentConfig.from_dict(OPTIONS)
    monkeypatch.setattr(EpochCheckpoint, "on_epoch_end", on_epoch_end)
    with pytest.raises(Killed):
        Experiment(cfg, tmp_path, verbose=0, log=lambda *a: None).run()
    monkeypatch.undo()
    resumed = Experiment(cfg, tmp_path, verbose=0, log=lambda *a: None).run()
    assert whole["rounds"][1]["iterations"] > 70  # the kill came before round 1's stop
    for a, b in zip(whole["rounds"], resumed["rounds"]):
        a, b = dict(a), dict(b)
        a.pop("wall_seconds"), b.pop("wall_seconds")
        assert a == b


def test_the_comparison_script_reads_both_runs(early, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out, _ = early
    full = tmp_path / "full"
    Experiment(ExperimentConfig.from_dict({**OPTIONS, "early_bird": None}), full, verbose=0, log=lambda *a: None).run()
    script = Path(__file__).resolve().parents[2] / "scripts" / "early_bird.py"
    done = subprocess.run([sys.executable, str(script), str(full), str(out), "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "early_bird.json").read_text())
    assert [r["round"] for r in result["rounds"]] == [0, 1, 2]
    assert result["rounds"][0]["mask_overlap"] == 1.0  # nothing pruned yet in either
    assert 0 < result["rounds"][2]["mask_overlap"] < 1  # masks drawn from other weights differ somewhat
    assert result["total_iterations"]["full"] == 630 and result["iterations_ratio"] < 1
    assert (tmp_path / "early_bird.png").read_bytes()[:4] == b"\x89PNG"


def test_a_window_of_candidates_stops_by_the_rule_and_resumes_the_same(tmp_path, monkeypatch):
    """You et al.'s FIFO: each distance is the largest to the last 3 candidates, no stop before the window
    is full; the checkpoint holds the whole window, so a kill mid-round resumes to the same stops."""
    options = {**OPTIONS, "early_bird": 0.03, "early_bird_window": 3}
    whole = Experiment(ExperimentConfig.from_dict(options), tmp_path / "whole", verbose=0, log=lambda *a: None).run()
    for row in whole["rounds"][:-1]:
        distances = [p["distance"] for p in row["mask_distance"]]
        full = distances[2:]  # points with the window full
        stop = next(i for i in range(1, len(full) + 1) if early_bird_stop(full[:i], 0.03, 2))
        assert row["stopped"] == "early_bird" and len(distances) == stop + 2
    original = EpochCheckpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if self.path.parent.name == "1" and epoch == 0:
            assert sum(k.startswith("candidate2|") for k in read_npz(self.path)) > 0  # three candidates saved
            raise Killed

    monkeypatch.setattr(EpochCheckpoint, "on_epoch_end", on_epoch_end)
    with pytest.raises(Killed):
        Experiment(ExperimentConfig.from_dict(options), tmp_path / "killed", verbose=0, log=lambda *a: None).run()
    monkeypatch.undo()
    resumed = Experiment(ExperimentConfig.from_dict(options), tmp_path / "killed", verbose=0, log=lambda *a: None).run()
    assert whole["rounds"][1]["iterations"] > 70  # the kill came before round 1's stop
    strip = lambda row: {k: v for k, v in row.items() if k != "wall_seconds"}  # noqa: E731
    assert [strip(r) for r in whole["rounds"]] == [strip(r) for r in resumed["rounds"]]


def test_a_callback_reused_for_the_next_round_starts_a_fresh_early_bird_window(mnist5k):
    """The candidates of round 0 hold weights round 1 has pruned: comparing with them would measure the
    pruning, not the round's settling. A reused callback's first point in round 1 has no distance."""
    from tf_lth import keras
    from tf_lth.models import networks
    from tf_lth.ticket.ticket import LotteryTicket
    from tf_lth.keras2.training import LOSS

    x, y = (a[:600] for a in mnist5k.arrays("train"))  # 10 steps of 60 an epoch
    val = tuple(a[:200] for a in mnist5k.arrays("val"))
    keras.utils.set_random_seed(0)
    ticket = LotteryTicket(networks.build("lenet_300_100"), rate=0.5)
    ticket.model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, jit_compile=False)
    callback = ticket.callback(validation_data=val, eval_every=5, early_bird=1e-9, early_bird_window=3)
    for round_ in range(2):
        if round_:
            ticket.next_round()
        ticket.model.fit(x, y, batch_size=60, epochs=2, shuffle=False, verbose=0, callbacks=[callback])
    for entry in ticket.history:  # 4 points a round, the first compared with nothing
        assert [p["iteration"] for p in entry["mask_distance"]] == [10, 15, 20], entry["round"]


def test_a_folder_written_before_the_tail_existed_resumes_with_its_own_rule(tmp_path):
    """Such a folder let every round but the last stop: resuming it with the default tail would change the
    rule half-way, so it is refused in one line naming full_tail; --full-tail 0 resumes it. Without stop
    rules the tail changes nothing and the folder is taken as it is."""
    def old_folder(name, **options):
        config = Experiment(ExperimentConfig.from_dict({**OPTIONS, **options}), tmp_path / name, verbose=0).config
        saved = config.to_dict()
        del saved["training"]["full_tail"]
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(saved))
        (tmp_path / name / "ticket.json").write_text("{}")  # started (a bare config.json is a failed start)

    old_folder("early_bird")
    with pytest.raises(TfLthError, match=r"another config \(training\.full_tail: 0 -> 2\)"):
        Experiment(ExperimentConfig.from_dict({**OPTIONS, "full_tail": 2}), tmp_path / "early_bird", verbose=0).claim_folder()
    Experiment(ExperimentConfig.from_dict(OPTIONS), tmp_path / "early_bird", verbose=0).claim_folder()  # tail 0
    old_folder("plain", early_bird=None)
    Experiment(ExperimentConfig.from_dict({**OPTIONS, "early_bird": None, "full_tail": 2}), tmp_path / "plain",
               verbose=0).claim_folder()
