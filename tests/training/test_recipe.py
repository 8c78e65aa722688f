"""The training recipe: lengths (160ep / 63000it), learning-rate schedules replayed under rewinding,
weight decay of both kinds keeping pruned weights zero, exact iteration counts, and the deep models'
recipes filled in from their specs."""
import numpy as np
import pytest

from tf_lth.training import recipe
from tf_lth.keras2 import training
from tf_lth.config.configs import ExperimentConfig, TrainingConfig
from tf_lth.errors import TfLthError
from tf_lth.keras2 import keras
from tf_lth.ticket.ticket import LotteryTicket
from tf_lth.models.networks import lenet_300_100


def test_lengths_are_read_with_their_units():
    assert recipe.length("160ep") == "160ep" and recipe.length(" 63000it ") == "63000it"
    assert recipe.length("500", "it") == 500 and recipe.length("7ep", "ep") == 7
    assert recipe.lengths("80ep,120ep") == ("80ep", "120ep")
    assert recipe.steps("80ep", 391) == 31280 and recipe.steps("32000it", 391) == 32000 and recipe.steps(5, 9) == 5
    assert TrainingConfig(epochs="160ep").epochs == 160 and TrainingConfig(iterations="63000it").iterations == 63000
    for bad, match in [(dict(epochs="63000it"), "counts epochs"), (dict(milestones="80,120"), "unit"),
                       (dict(warmup="5 epochs"), "not a length"), (dict(weight_decay_kind="adamw"), "weight_decay_kind"),
                       (dict(schedule="linear"), "schedule"), (dict(weight_decay=-1.0), "weight_decay")]:
        with pytest.raises(TfLthError, match=match):
            TrainingConfig(**bad)


def test_schedules_in_numpy():
    step = np.arange(10)
    decay = recipe.Schedule("step", 0.1, milestones=(4, 7), gamma=0.1)(step)
    np.testing.assert_allclose(decay, [0.1] * 4 + [0.01] * 3 + [0.001] * 3)
    warm = recipe.Schedule("constant", 0.4, warmup=4)(step)
    np.testing.assert_allclose(warm[:5], [0.1, 0.2, 0.3, 0.4, 0.4])
    cos = recipe.Schedule("cosine", 1.0, total=8)(step)
    assert cos[0] == pytest.approx(1.0) and cos[4] == pytest.approx(0.5) and cos[8] == pytest.approx(0.0) == cos[9]
    with pytest.raises(TfLthError, match="milestones"):
        recipe.Schedule("step", 0.1)


def test_deep_models_take_their_papers_recipe_unless_told():
    cfg = ExperimentConfig.from_dict({"model": "resnet20"}).resolved()
    tr, t = cfg.training, cfg.ticket
    assert (tr.optimizer, tr.learning_rate, tr.momentum, tr.batch_size, tr.epochs) == ("sgd", 0.1, 0.9, 128, 160)
    assert (tr.schedule, tr.milestones, tr.gamma, tr.weight_decay, tr.weight_decay_kind, tr.augment) == (
        "step", ("80ep", "120ep"), 0.1, 1e-4, "l2", True)
    assert (t.scope, t.ignore, t.rewind, t.rate, t.rates) == ("global", ("output",), "iteration:500", 0.2, None)
    assert ExperimentConfig.from_dict({"model": "vgg16"}).resolved().ticket.rewind == "iteration:1000"
    mine = ExperimentConfig.from_dict({"model": "resnet20", "rewind": "lr", "scope": "layerwise", "momentum": 0.0,
                                       "augment": False, "iterations": "63000it"}).resolved()
    assert (mine.ticket.rewind, mine.ticket.scope, mine.training.momentum, mine.training.augment) == ("lr", "layerwise", 0.0, False)
    assert (mine.training.iterations, mine.training.epochs) == (63000, None)
    plain = ExperimentConfig.from_dict({}).resolved().training  # LeNet: the paper's Adam, nothing else
    assert (plain.schedule, plain.momentum, plain.weight_decay, plain.augment) == ("constant", 0.0, 0.0, False)


class RateRecorder(keras.callbacks.Callback):
    """The learning rate each step of a round was taken with (steps_per_execution=1)."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate.numpy()))


# mnist5k: 70 steps of 50 an epoch; 90 iterations a round = an epoch and 20 steps
RECIPE = TrainingConfig(iterations=90, batch_size=50, optimizer="sgd", learning_rate=0.05, momentum=0.9,
                        schedule="step", milestones=("40it", "1ep"), gamma=0.5, warmup="10it", weight_decay=1e-3,
                        steps_per_execution=1)


def two_rounds(data, rewind: str, training_config: TrainingConfig, pruned: str = "zero"):
    keras.utils.set_random_seed(0)
    ticket = LotteryTicket(lenet_300_100(), rewind=rewind, pruned=pruned)
    rates, after = [], []
    for _ in range(2):
        recorder = RateRecorder()
        training.compile_round(ticket, training_config, training.steps_per_epoch(data, training_config))
        training.train_round(ticket, data, training_config, callbacks=(recorder,))
        rates.append(recorder.rates)
        after.append(int(ticket.model.optimizer.iterations.numpy()))
        if ticket.round == 0:
            ticket.next_round()
    return ticket, rates, after


@pytest.mark.heavy
@pytest.mark.parametrize("rewind, start", [("lr", 0), ("iteration:20", 20)])
def test_the_schedule_replays_from_the_rewind_step(mnist5k, rewind, start):
    ticket, (first, second), (end0, end1) = two_rounds(mnist5k, rewind, RECIPE)
    assert len(first) == len(second) == 90  # exactly the iterations asked, not whole epochs
    assert (end0, end1) == (90, start + 90)
    expected = recipe.Schedule("step", 0.05, (40, 70), 0.5, 10)(np.arange(200))
    np.testing.assert_allclose(first, expected[:90], rtol=1e-6)
    np.testing.assert_allclose(second, expected[start:start + 90], rtol=1e-6)  # = round 0's from the rewind step
    assert first[0] < first[9] == pytest.approx(0.05) and first[45] == pytest.approx(0.025)


def decayed_rounds(data, weight_decay, kind="l2", pruned="zero"):
    cfg = TrainingConfig(**{**RECIPE.__dict__, "weight_decay": weight_decay, "weight_decay_kind": kind, "iterations": 30})
    return two_rounds(data, "init", cfg, pruned=pruned)[0]


@pytest.fixture(scope="module")
def undecayed(mnist5k):
    ticket = decayed_rounds(mnist5k, 0.0)
    return {key: ticket.kernel(key) for key in ticket.kernels()}


@pytest.mark.heavy
@pytest.mark.parametrize("kind, pruned", [("l2", "zero"), ("decoupled", "zero"), ("l2", "frozen")])
def test_weight_decay_keeps_pruned_weights_at_their_value(mnist5k, undecayed, kind, pruned):
    ticket = decayed_rounds(mnist5k, 5e-2, kind, pruned)
    assert ticket.round == 1 and ticket.model.optimizer.iterations.numpy() == 30
    for key, i in ticket.kernels().items():
        mask, value = ticket.masks[key], ticket.kernel(key)  # what the variable holds after the last step
        assert 0 < mask.mean() < 1
        if pruned == "zero":
            assert np.count_nonzero(value[~mask]) == 0, key
        else:
            np.testing.assert_array_equal(value[~mask], ticket.theta0[i][~mask])
        if pruned == "zero":  # against the run without decay (same seed and batches), at these positions: smaller
            assert np.abs(value[mask]).sum() < np.abs(undecayed[key][mask]).sum(), key
