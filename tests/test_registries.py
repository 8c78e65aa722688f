"""A new choice is one registered definition: a rewind mode, a control or a scope added in a test
works through the config, the ticket and the command line without touching anything else."""
from dataclasses import dataclass

import numpy as np
import pytest

from tf_lth import cli
from tf_lth.pruning import controls
from tf_lth.pruning import selection as masks
from tf_lth.models import networks
from tf_lth.pruning import rewind
from tf_lth.config.configs import ExperimentConfig, TicketConfig
from tf_lth.errors import TfLthError
from tf_lth.keras2 import keras
from tf_lth.ticket.ticket import LotteryTicket
from tf_lth.registry import Registry


@dataclass(frozen=True)
class HalfStep(rewind.Rewind):
    """Rewind to θ0 with the optimizer at half the step the last round ended at."""

    name = "halfstep"

    def optimizer_iteration(self, ended: int) -> int:
        return ended // 2


def test_registry_errors_name_the_choices():
    r = Registry("thing")
    r.add("a", 1)
    with pytest.raises(TfLthError, match="unknown thing 'b': choose one of a"):
        r.get("b")
    with pytest.raises(TfLthError, match="registered twice"):
        r.add("a", 2)


def test_a_rewind_mode_is_one_definition(monkeypatch):
    monkeypatch.setitem(rewind.REWINDS.entries, "halfstep", HalfStep)
    assert "halfstep" in rewind.forms()
    TicketConfig(rewind="halfstep")  # the config validates through the registry
    keras.utils.set_random_seed(0)
    ticket = LotteryTicket(networks.build("lenet_300_100"), rewind="halfstep")
    ticket.model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    ticket.steps[0] = [0, 40]  # as if round 0 had ended at step 40
    ticket.next_round()
    assert ticket.pending_step == 20
    for key, i in ticket.kernels().items():
        np.testing.assert_array_equal(ticket.get_weights()[i], ticket.theta0[i] * ticket.masks[key])


def test_a_control_and_a_scope_are_one_definition(monkeypatch):
    def same_masks_zero_init(ticket, twin, rng):
        twin.theta0 = [np.zeros_like(w) for w in ticket.theta0]
        twin.masks = {k: m.copy() for k, m in ticket.masks.items()}
        return twin.theta0

    monkeypatch.setitem(controls.CONTROLS.entries, "zeros", same_masks_zero_init)
    monkeypatch.setitem(masks.SCOPES.entries, "first_layer_only",
                        lambda score, alive, rates, rounds, block: {
                            k: masks.select_layerwise(score, {k: m}, masks.keep_counts({k: m}, rates, rounds))[k]
                            if k == "fc1/kernel" else m for k, m in alive.items()})
    argv = ["run", "--controls", "zeros", "--scope", "first_layer_only"]  # the flags' choices follow too
    cfg = cli.run_config(cli.build_parser().parse_args(argv))
    assert cfg.controls == ("zeros",) and cfg == ExperimentConfig.from_dict({"controls": ["zeros"],
                                                                             "scope": "first_layer_only"})
    keras.utils.set_random_seed(0)
    ticket = LotteryTicket(networks.build("lenet_300_100"), cfg.resolved().ticket)
    ticket.next_round()
    assert ticket.masks["fc1/kernel"].mean() == pytest.approx(0.8, abs=1e-3) and ticket.masks["fc2/kernel"].all()
    twin = controls.make(ticket, "zeros")
    assert not any(np.any(w) for w in twin.get_weights())
