"""Pruning-at-init branches off a finished run (Frankle et al. 2021): a PaI mask at each round's sparsity
(per-layer counts for a layerwise method, the total for a global one) trained from θ0; its shuffle, reinit
and invert ablations; the IMP ticket's ablations (shuffle and reinit are the random_mask and random_reinit
controls, invert keeps the lowest scores of the previous round); one figure with a line per branch; the
command line's one-line errors."""
from dataclasses import replace

import numpy as np
import pytest

from tf_lth import cli
from tf_lth.config.configs import ExperimentConfig
from tf_lth.data import pipeline as data_lib
from tf_lth.errors import TfLthError
from tf_lth.runner import branches, plots
from tf_lth.runner.experiment import Experiment
from tf_lth.ticket import store
from tf_lth.util.io import read_json, read_npz

pytestmark = pytest.mark.heavy  # trains a two-round run and its branches


def quiet(*args):
    pass


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished two-round run on mnist5k (one epoch a round, layerwise), with the random_mask control."""
    out = tmp_path_factory.mktemp("pai")
    cfg = ExperimentConfig.from_dict(dict(rounds=2, epochs=1, controls=("random_mask",), export=()))
    Experiment(cfg, out, verbose=0, log=quiet).run()
    return out


@pytest.fixture(scope="module")
def data(run_dir):
    cfg, _ = branches.read_experiment(run_dir)
    return data_lib.load_config(cfg)


def counts(masks):
    return {k: int(m.sum()) for k, m in masks.items()}


def test_a_pai_branch_trains_at_each_rounds_sparsity(run_dir):
    out = branches.run_branch(run_dir, "at_init", "snip", rounds=[2], log=quiet)
    assert out["branch"] == {"kind": "at_init", "value": "snip", "rounds": [2]}
    for row in out["rounds"]:
        own = read_json(run_dir / "rounds" / str(row["round"]) / "result.json")
        assert row["weights_remaining"] == own["weights_remaining"]  # snip is global: the round's total
        assert row["test_accuracy"] > 0.5  # it learns the digits


def test_the_mask_is_the_methods_at_the_rounds_counts(run_dir, data):
    ticket = store.load(run_dir, round=2)
    layerwise = branches.make_twin(ticket, "at_init", "random", run_dir, data=data)
    assert counts(layerwise.masks) == counts(ticket.masks)  # random is layerwise: each layer's count
    assert layerwise.pending_step == 0 and layerwise.rewind.name == "init"
    for key, i in layerwise.kernels().items():  # trained from θ0
        np.testing.assert_array_equal(layerwise.get_weights()[i], ticket.theta0[i] * layerwise.masks[key])
    synflow = branches.make_twin(ticket, "at_init", "synflow", run_dir, data=data)
    assert sum(counts(synflow.masks).values()) == sum(counts(ticket.masks).values())
    assert counts(synflow.masks) != counts(ticket.masks)  # global: its own per-layer densities


def test_the_pai_ablations(run_dir, data):
    ticket = store.load(run_dir, round=2)
    plain = branches.make_twin(ticket, "at_init", "magnitude_init", run_dir, data=data)
    shuffled = branches.make_twin(ticket, "at_init", "magnitude_init/shuffle", run_dir, data=data)
    assert counts(shuffled.masks) == counts(plain.masks)
    assert all((shuffled.masks[k] != plain.masks[k]).any() for k in plain.masks)
    inverted = branches.make_twin(ticket, "at_init", "magnitude_init/invert", run_dir, data=data)
    assert sum(counts(inverted.masks).values()) == sum(counts(plain.masks).values())
    kept = np.concatenate([np.abs(ticket.theta0[i])[inverted.masks[k]] for k, i in ticket.kernels().items()])
    pruned = np.concatenate([np.abs(ticket.theta0[i])[~inverted.masks[k]] for k, i in ticket.kernels().items()])
    assert kept.max() <= pruned.min()  # the lowest |θ0| over all layers (magnitude_init is global)
    reinit = branches.make_twin(ticket, "at_init", "magnitude_init/reinit", run_dir, data=data)
    assert all(np.array_equal(reinit.masks[k], plain.masks[k]) for k in plain.masks)
    i = ticket.kernels()["fc1/kernel"] if "fc1/kernel" in ticket.kernels() else next(iter(ticket.kernels().values()))
    assert not np.array_equal(reinit.theta0[i], ticket.theta0[i])


def test_the_tickets_invert_ablation_keeps_the_lowest_of_the_previous_round(run_dir):
    ticket = store.load(run_dir, round=2)
    twin = branches.make_twin(ticket, "ablation", "invert", run_dir)
    before = {k.replace("|", "/"): m for k, m in read_npz(run_dir / "rounds" / "1" / "masks.npz").items()}
    trained = read_npz(run_dir / "rounds" / "1" / "weights.npz")
    assert counts(twin.masks) == counts(ticket.masks)
    for key, i in twin.kernels().items():
        assert not (twin.masks[key] & ~before[key]).any()  # drawn from the previous round's alive weights
        final = np.abs(trained[f"w{i}"])
        assert final[twin.masks[key]].max() <= final[before[key] & ~twin.masks[key]].min()  # the lowest kept
        np.testing.assert_array_equal(twin.get_weights()[i], ticket.rewind_source()[i] * twin.masks[key])


@pytest.mark.parametrize("ablation, control", [("shuffle", "random_mask"), ("reinit", "random_reinit")])
def test_shuffle_and_reinit_ablations_are_the_controls(run_dir, ablation, control):
    """The same twin as the run's control (masks and weights), so the same numbers once trained."""
    ticket = store.load(run_dir, round=2)
    twin, own = branches.make_twin(ticket, "ablation", ablation, run_dir), ticket.control(control)
    assert all(np.array_equal(twin.masks[k], own.masks[k]) for k in own.masks)
    assert all(np.array_equal(a, b) for a, b in zip(twin.get_weights(), own.get_weights()))
    assert counts(twin.masks) == counts(ticket.masks)
    if ablation == "shuffle":  # same per-layer counts, other positions
        assert all((twin.masks[k] != ticket.masks[k]).any() for k in ticket.pruned_keys())


def test_the_command_line_and_one_figure_with_a_line_per_branch(run_dir, capsys):
    assert cli.main(["branch", str(run_dir), "--at-init", "random/shuffle", "--rounds", "2", "--quiet"]) == 0
    assert "at_init-random-shuffle" in capsys.readouterr().out
    lines = plots.series(branches.rows_with_branches(run_dir), "test_accuracy")
    folders = {p.name for p in (run_dir / branches.BRANCHES).iterdir()}
    assert "at_init-random-shuffle" in folders
    assert set(lines) == {"ticket", "random_mask"} | folders  # IMP, its control, every branch: one line each
    assert all(len(x) == len(y) > 0 for x, y in lines.values())
    assert (run_dir / "plots" / "accuracy_vs_weights_remaining.png").stat().st_size > 10_000
    # a chosen few on one figure: the run (IMP) and branch folders, each named by its folder
    branch = run_dir / branches.BRANCHES / "at_init-random-shuffle"
    png = run_dir.parent / "few.png"
    assert cli.main(["compare", str(run_dir), str(branch), "-o", str(png)]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.split()[2:] == [run_dir.name, "at_init-random-shuffle"] and png.stat().st_size > 10_000


@pytest.mark.parametrize("argv, words", [
    (["--at-init", "snipp"], "unknown pruning-at-init method"),
    (["--at-init", "snip/flip"], "unknown ablation"),
    (["--ablation", "flip"], "invalid choice"),
])
def test_bad_requests_exit_2_with_one_line(run_dir, capsys, argv, words):
    assert cli.main(["branch", str(run_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_bad_values_are_refused_before_anything_loads():
    for kind, value in (("at_init", "grasp/"), ("at_init", "random/shuffle")):
        branches.check(kind, value)
    with pytest.raises(TfLthError, match="unknown ablation"):
        branches.check("ablation", "invert/shuffle")


def test_an_at_init_branch_of_a_structured_run_is_one_line(run_dir):
    ticket = store.load(run_dir, round=1)
    ticket.config = replace(ticket.config, granularity="unit")  # what a --granularity unit run's ticket holds
    with pytest.raises(TfLthError, match="branch --at-init off a run with --granularity weight") as e:
        branches.make_twin(ticket, "at_init", "magnitude_init", run_dir)
    assert "\n" not in str(e.value)
