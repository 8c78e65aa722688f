"""Structured tickets (granularity ``unit`` / ``refill``) through LotteryTicket on tf_keras: whole units go,
stay gone through ``fit``, the controls keep the unit counts, and bad input is one line."""
import numpy as np
import pytest

import tf_lth
from tf_lth import keras
from tf_lth.errors import TfLthError
from tf_lth.keras2.training import LOSS
from tf_lth.models import networks
from tf_lth.pruning import groups as G


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(64, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc2")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="output")(x))


@pytest.fixture(scope="module")
def digits(mnist5k):
    x, y = mnist5k.arrays("train")
    xt, yt = mnist5k.arrays("test")
    return x, y, xt, yt  # float32 pixels in [0, 1]


def units_alive(ticket):
    return {layer: kept for layer, (kept, _) in ticket.units_kept().items()}


def fit(ticket, digits, epochs=1):
    x, y, xt, yt = digits
    ticket.model.compile(keras.optimizers.Adam(2e-3), LOSS, metrics=["accuracy"], jit_compile=False)
    ticket.model.fit(x, y, batch_size=100, epochs=epochs, verbose=0, callbacks=[ticket.callback(test_data=(xt, yt))])
    return ticket.history[-1]["test_accuracy"]


def test_unit_rounds_remove_whole_neurons_that_stay_removed_through_fit(digits):
    ticket = tf_lth.LotteryTicket(mlp(), granularity="unit", rate=0.5)
    accuracies = [fit(ticket, digits, epochs=2)]
    for r in (1, 2):
        ticket.next_round()
        assert units_alive(ticket) == {"fc1": round(64 * 0.5 ** r), "fc2": round(32 * 0.5 ** r), "output": 10}
        accuracies.append(fit(ticket, digits, epochs=2))
        for key, mask in ticket.masks.items():
            w = ticket.kernel(key)
            assert np.all(w[~mask] == 0), key  # pruned units stay pruned after fit
        # fc1's removed neurons are gone from fc2's inputs too, and a kept neuron is dense
        fc1 = ticket.masks["fc1/kernel"].any(axis=0)
        assert np.array_equal(ticket.masks["fc2/kernel"].any(axis=1), fc1)
        assert ticket.masks["fc1/kernel"][:, fc1].all()
    assert min(accuracies) > 0.75, accuracies  # 16 and 8 hidden neurons still learn digits
    assert ticket.macs_remaining == pytest.approx((784 * 16 + 16 * 8 + 8 * 10) / (784 * 64 + 64 * 32 + 32 * 10))
    assert ticket.history[-1]["macs_remaining"] == ticket.macs_remaining


def test_refill_keeps_the_weight_budget_within_one_unit_and_the_controls_the_unit_counts(digits):
    ticket = tf_lth.LotteryTicket(mlp(), granularity="refill", rate=0.4, scope="global")
    fit(ticket, digits)
    ticket.next_round()
    # the unstructured global cut at 40% keeps 0.6 of all weights; refilled per layer into whole units
    kept = sum(int(ticket.masks[k].sum()) for k in ticket.pruned_keys())
    total = sum(ticket.masks[k].size for k in ticket.pruned_keys())
    per_unit = 784 + 64  # at most one fc1 unit and one fc2 unit off
    assert abs(kept - 0.6 * total) <= per_unit
    reinit, shuffled = ticket.control("random_reinit"), ticket.control("random_mask")
    assert all(np.array_equal(reinit.masks[k], ticket.masks[k]) for k in ticket.masks)
    assert units_alive(shuffled) == units_alive(ticket)
    assert not np.array_equal(shuffled.masks["fc1/kernel"], ticket.masks["fc1/kernel"])
    fit(shuffled, digits)
    assert units_alive(shuffled) == units_alive(ticket)


def test_resnet_groups_tie_the_residual_stream_and_unit_rounds_respect_them():
    ticket = tf_lth.LotteryTicket(networks.build("resnet20", (32, 32, 3), 10, 2), granularity="unit", rate=0.5)
    graph, groups = ticket.structure
    stream = [g for g in G.prunable(groups) if len(g.producers()) > 2]
    assert stream, "the residual stream of each stage is one group"
    ticket.next_round()
    alive = G.kept_channels(groups, ticket.masks)
    read = G.read_channels(groups, ticket.masks)
    for g in G.prunable(groups):
        assert alive[g.index].sum() == round(g.size * 0.5) and np.array_equal(alive[g.index], read[g.index])
    assert 0.2 < ticket.macs_remaining < 0.3


def test_bad_granularity_input_is_one_line():
    keras.utils.set_random_seed(0)
    only_output = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, name="out")])
    with pytest.raises(TfLthError, match=r"^granularity='unit': .* has no unit tf-lth can remove \(.*model output.*\): "
                                         r"use granularity='weight'$"):
        tf_lth.LotteryTicket(only_output, granularity="unit")
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(6, name="hidden")(inputs)
    odd = keras.layers.Lambda(lambda t: t * 2, name="odd")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(odd))
    with pytest.raises(TfLthError, match=r"no unit tf-lth can remove \(.*odd \(Lambda\)"):
        tf_lth.LotteryTicket(model, granularity="refill")
    ticket = tf_lth.LotteryTicket(model)  # weight granularity: the Lambda is no obstacle
    assert ticket.macs_remaining == 1.0
