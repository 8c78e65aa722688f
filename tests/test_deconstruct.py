"""scripts/deconstruct.py on a toy setting: per-layer levels, the criteria x survivors table, the sweep."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tf_lth import data
from tf_lth.keras2 import keras
from tf_lth.lottery import LotteryTicket

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "deconstruct.py"


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
    x = keras.Input((4, 4, 1))
    h = keras.layers.Dense(12, activation="relu", kernel_initializer="glorot_normal")(keras.layers.Flatten()(x))
    return keras.Model(x, keras.layers.Dense(3, kernel_initializer="glorot_normal", name="output")(h))


def test_levels_table_and_sweep(script, tmp_path):
    ds = toy_data()
    keras.utils.set_random_seed(0)
    source = build()
    dense = LotteryTicket(source, rates=script.PAPER_RATES)
    rates = script.level_rates(dense, 0.25)
    assert rates["output"] < rates["dense"] < 1  # the output layer keeps more, as in the paper
    # the two layers' keep fractions follow 0.8^k and 0.9^k for one k
    k = np.log(1 - rates["dense"]) / np.log(0.8)
    assert np.isclose(np.log(1 - rates["output"]) / np.log(0.9), k)

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
