"""Branches off a finished experiment: a branch repeating one of the experiment's controls gives its
very numbers, the experiment's files are never rewritten, a survivors branch keeps the round's masks,
a rerun trains nothing, and bad requests are one-line errors."""
import numpy as np
import pytest

from tf_lth.runner import branches
from tf_lth.ticket import store
from tf_lth.keras2 import training
from tf_lth.config.configs import ExperimentConfig
from tf_lth.errors import TfLthError
from tf_lth.runner.experiment import Experiment
from tf_lth.util.io import read_json, read_npz
from tf_lth.pruning.rewind import signed_constant


def quiet(*args):
    pass


def snapshot(run_dir):
    """Bytes and mtime of every file the experiment wrote (its plots aside: a branch redraws those)."""
    paths = [p for p in run_dir.rglob("*") if p.is_file()
             and p.relative_to(run_dir).parts[0] not in ("plots", branches.BRANCHES)]
    return {p.relative_to(run_dir).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished two-round experiment on mnist5k (one epoch a round) with the random_reinit control,
    and the snapshot of its files taken before any branch ran."""
    out = tmp_path_factory.mktemp("exp")
    cfg = ExperimentConfig.from_dict(dict(rounds=2, epochs=1, controls=("random_reinit",), export=()))
    Experiment(cfg, out, verbose=0, log=quiet).run()
    return out, snapshot(out)


@pytest.fixture(scope="module")
def control_branch(run_dir):
    return branches.run_branch(run_dir[0], "control", "random_reinit", rounds=[2], log=quiet)


@pytest.fixture(scope="module")
def survivors_branch(run_dir):
    return branches.run_branch(run_dir[0], "survivors", "signed_constant", rounds="1", log=quiet)


def test_a_branch_repeating_a_control_gives_its_very_numbers(run_dir, control_branch):
    own = read_json(run_dir[0] / "rounds" / "2" / "random_reinit.json")
    assert control_branch["branch"] == {"kind": "control", "value": "random_reinit", "rounds": [2]}
    (mine,) = control_branch["rounds"]
    assert mine["round"] == 2 and mine["test_accuracy"] == own["test_accuracy"]
    assert (mine["early_stop_iteration"], mine["early_stop_test_accuracy"]) == \
        (own["early_stop_iteration"], own["early_stop_test_accuracy"])
    assert {k: v for k, v in mine.items() if k != "wall_seconds"} == own  # every metric, not only those
    folder = run_dir[0] / branches.BRANCHES / "control-random_reinit"
    assert read_json(folder / "results.json") == control_branch
    assert not list(folder.rglob("*.ckpt.npz"))


def test_the_experiment_files_are_never_rewritten(run_dir, control_branch, survivors_branch):
    out, before = run_dir
    assert snapshot(out) == before  # rounds/**, results.json, ticket.json, theta0.npz: bytes and mtimes
    assert (out / "plots" / "accuracy_vs_weights_remaining.png").exists()


def test_the_plots_draw_every_branch_beside_the_controls(run_dir, control_branch, survivors_branch):
    rows = {r["round"]: r for r in branches.rows_with_branches(run_dir[0])}
    assert set(rows[2]["controls"]) == {"random_reinit", "control-random_reinit"}
    assert {"random_reinit", "survivors-signed_constant"} <= set(rows[1]["controls"])
    assert rows[0]["controls"] == {}
    assert "control-random_reinit" not in read_json(run_dir[0] / "results.json")["rounds"][2]["controls"]


def test_a_survivors_branch_keeps_the_rounds_masks(run_dir, survivors_branch):
    out = run_dir[0]
    (row,) = survivors_branch["rounds"]
    own = read_json(out / "rounds" / "1" / "result.json")
    assert row["round"] == 1 and row["weights_remaining"] == own["weights_remaining"]
    ticket = store.load(out, round=1)
    twin = branches.make_twin(ticket, "survivors", "signed_constant")
    saved = {k.replace("|", "/"): m for k, m in read_npz(out / "rounds" / "1" / "masks.npz").items()}
    assert sorted(twin.masks) == sorted(saved)
    for key, mask in saved.items():
        np.testing.assert_array_equal(twin.masks[key], mask)
    theta0, weights = ticket.theta0, twin.get_weights()
    for key, i in twin.kernels().items():
        np.testing.assert_array_equal(weights[i], np.where(saved[key], signed_constant(theta0[i]), 0))
    kernels = set(twin.kernels().values())
    for i, (w, w0) in enumerate(zip(weights, theta0)):  # biases: rewound to θ0 as the ticket's are
        if i not in kernels:
            np.testing.assert_array_equal(w, w0)


def test_a_rerun_trains_nothing(run_dir, control_branch, monkeypatch):
    folder = run_dir[0] / branches.BRANCHES / "control-random_reinit"
    done = folder / "rounds" / "2" / "result.json"
    mtime = done.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a finished branch round was trained again")

    monkeypatch.setattr(training, "train_round", no_training)
    monkeypatch.setattr(training, "compile_round", no_training)
    again = branches.run_branch(run_dir[0], "control", "random_reinit", rounds=[2], log=quiet)
    assert again == control_branch and done.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("kind, value, rounds, words", [
    ("control", "random_reinit", [5], "choose from 1, 2"),
    ("control", "random_reinit", [0], "choose from 1, 2"),
    ("control", "random_reinit", "x", "round numbers"),
    ("controls", "random_reinit", None, "unknown branch kind"),
    ("control", "random_rinit", None, "unknown control"),
    ("survivors", "signed", None, "unknown survivors action"),
])
def test_bad_requests_are_one_line_errors(run_dir, kind, value, rounds, words):
    with pytest.raises(TfLthError) as e:
        branches.run_branch(run_dir[0], kind, value, rounds=rounds, log=quiet)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_folder_that_is_no_experiment_is_refused(tmp_path):
    with pytest.raises(TfLthError) as e:
        branches.run_branch(tmp_path, "control", "random_mask", log=quiet)
    assert "not a tf-lth run folder" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / branches.BRANCHES).exists()


def test_a_survivors_branch_of_the_experiments_own_action_repeats_its_round(run_dir):
    """The twin starts where the ticket's round started (masks, rewind point, optimizer step): with the
    ticket's own action (original) it trains to the ticket's very numbers."""
    out = run_dir[0]
    (mine,) = branches.run_branch(out, "survivors", "original", rounds=[1], log=quiet)["rounds"]
    own = read_json(out / "rounds" / "1" / "result.json")
    for key in ("weights_remaining", "test_accuracy", "early_stop_iteration", "early_stop_test_accuracy", "iterations"):
        assert mine[key] == own[key], key


def test_a_rewind_branch_restarts_the_rounds_masks_from_the_previous_rounds_weights(run_dir):
    run_dir, _ = run_dir
    ticket = store.load(run_dir, round=2)
    twin = branches.make_twin(ticket, "rewind", "lr", run_dir)
    previous = read_npz(run_dir / "rounds" / "1" / "weights.npz")
    masks = read_npz(run_dir / "rounds" / "2" / "masks.npz")
    weights = twin.get_weights()
    for key, i in twin.kernels().items():
        assert np.array_equal(twin.masks[key], masks[key.replace("/", "|")])
        np.testing.assert_array_equal(weights[i], previous[f"w{i}"] * masks[key.replace("/", "|")])
    assert twin.pending_step == 0  # lr: the learning-rate schedule restarts, the weights do not
    with pytest.raises(TfLthError, match="needs θk at step 5"):
        branches.make_twin(ticket, "rewind", "iteration:5", run_dir)
    with pytest.raises(TfLthError, match="unknown rewind"):
        branches.check("rewind", "sometime")
