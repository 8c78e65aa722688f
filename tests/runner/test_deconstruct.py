"""Deconstructing lottery tickets on a toy setting: the library's one-shot pruning to a level
(:func:`tf_lth.masks.level_rates`, :meth:`LotteryTicket.one_shot`), then scripts/deconstruct.py's
own parts on top of it: the criteria x survivors table, the supermask sweep, the figure."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tf_lth import data
from tf_lth.pruning import selection as masks
from tf_lth.errors import TfLthError
from tf_lth.keras2 import keras
from tf_lth.ticket.ticket import LotteryTicket

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "deconstruct.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("deconstruct", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toy_data(n=96, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(classes, size=n).astype(np.uint8)
    x = rng.integers(0, 60, size=(n, 4, 4, 1)).astype(np.uint8)
    x[np.arange(n), y, 0, 0] = 255  # one bright pixel per class: learnable in an epoch
    return data.Dataset("toy", x[:64], y[:64], x[64:80], y[64:80], x[80:], y[80:], num_classes=classes)


def build():
    """Named layers, as tf_lth.models.networks names them: every build must have the same names, since the
    one-shot rates of a level are given by layer name."""
    x = keras.Input((4, 4, 1))
    h = keras.layers.Dense(12, activation="relu", kernel_initializer="glorot_normal", name="fc")(
        keras.layers.Flatten()(x))
    return keras.Model(x, keras.layers.Dense(3, kernel_initializer="glorot_normal", name="output")(h))


def test_level_rates_reach_the_level_in_the_ratio_of_the_round_rates():
    sizes = {"fc/kernel": 192, "output/kernel": 36}
    rates = masks.level_rates(sizes, {"fc/kernel": 0.2, "output/kernel": 0.1}, 0.25)
    assert rates["output/kernel"] < rates["fc/kernel"] < 1  # the output layer keeps more, as in the paper
    # the two kernels' keep fractions follow 0.8^k and 0.9^k for one real k ...
    k = np.log(1 - rates["fc/kernel"]) / np.log(0.8)
    assert np.isclose(np.log(1 - rates["output/kernel"]) / np.log(0.9), k)
    # ... that leaves the level asked for
    left = sum(n * (1 - rates[key]) for key, n in sizes.items()) / sum(sizes.values())
    assert np.isclose(left, 0.25)
    with pytest.raises(TfLthError, match="strictly between 0 and 1"):
        masks.level_rates(sizes, {"fc/kernel": 0.2, "output/kernel": 0.1}, 1.0)


def test_one_shot_prunes_by_the_final_weights_and_rewinds_to_init():
    keras.utils.set_random_seed(0)
    theta0 = build().get_weights()
    rng = np.random.default_rng(0)
    thetaf = [(w + rng.normal(size=w.shape)).astype(np.float32) for w in theta0]
    ticket = LotteryTicket.one_shot(build(), theta0, thetaf, rates={"dense": 0.5, "output": 0.25})
    assert ticket.round == 1
    weights = ticket.get_weights()
    for key, i in ticket.kernels().items():
        mask, rate = ticket.masks[key], 0.25 if key.startswith("output") else 0.5
        assert mask.sum() == round(mask.size * (1 - rate))
        assert np.abs(thetaf[i][mask]).min() >= np.abs(thetaf[i][~mask]).max()  # large_final
        np.testing.assert_array_equal(weights[i], np.where(mask, theta0[i], 0))  # survivors at θ0, pruned zero
    for i in set(range(len(theta0))) - set(ticket.kernels().values()):
        np.testing.assert_array_equal(weights[i], theta0[i])  # biases rewound too


@pytest.mark.heavy
def test_levels_table_and_sweep(script, tmp_path):
    ds = toy_data()
    keras.utils.set_random_seed(0)
    source = build()
    dense = LotteryTicket(source, rates=script.PAPER_RATES)
    rates = script.level_rates_by_layer(dense, 0.25)
    assert sorted(rates) == ["fc", "output"]  # by layer name, what LotteryTicket(rates=...) takes
    assert rates["output"] < rates["fc"] < 1

    trainer = script.Trainer(ds, epochs=1, seed=0, batch_size=32)
    trainer.fit(dense)
    theta0, thetaf = list(dense.theta0), source.get_weights()
    rows = script.criteria_grid(build, theta0, thetaf, trainer, ("large_final", "random"), ("original",), (25.0,),
                                dense, frozen=("large_final",), log=lambda *_: None)
    assert [(r["criterion"], r["survivors"], r["pruned"]) for r in rows] == [
        ("large_final", "original", "zero"), ("random", "original", "zero"), ("large_final", "original", "frozen")]
    assert all(abs(r["weights_remaining"] - 0.25) < 0.01 for r in rows)
    table = script.criteria_table(rows).splitlines()
    assert "| criterion | original |" in table and "| criterion | zero | frozen |" in table
    body = [line for line in table if line.startswith("| large_final |") or line.startswith("| random |")]
    assert [line.count("|") for line in body] == [3, 3, 4]  # two criteria rows, then the zero/frozen row
    assert body[0].split("|")[2].strip() == body[2].split("|")[2].strip()  # "zero" repeats the grid's cell

    sweep = script.supermask_sweep(build, theta0, thetaf, trainer, (50,), dense, ("large_final",),
                                   log=lambda *_: None)
    assert [(r["level"], r["criterion"]) for r in sweep] == [(50, "large_final"), (50, "random")]
    assert all(0 <= r["original"] <= 1 and 0 <= r["signed_constant"] <= 1 for r in sweep)
    text = script.supermask_table(sweep, [])
    assert text.count("\n| 50% |") == 1 and "large_final / signed const" in text
    assert script.plot_supermask(sweep, [], 0.9, tmp_path / "s.png", "toy").stat().st_size > 1000
