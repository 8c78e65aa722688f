"""The instability analysis' science (tf_lth/training/stability.py): the path's endpoints are the two
networks exactly, a path from a network to itself has no barrier, BatchNormalization statistics recomputed
at a point are the average of the batches' statistics (tf_keras, Keras 3 on TensorFlow and on JAX), the
trunk is the run's own θk, and copies with one data order end equal while two data orders do not."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tf_lth.config.configs import ExperimentConfig
from tf_lth.errors import TfLthError
from tf_lth.models import networks
from tf_lth.ticket import flavours
from tf_lth.ticket.ticket import LotteryTicket
from tf_lth.training import fit_round, stability

ROOT = Path(__file__).resolve().parents[2]
RECIPE = dict(iterations=10, batch_size=350, jit_compile=False)  # 10 steps: one epoch of mnist5k's 3,500


def test_alphas_and_the_interpolated_endpoints_are_the_networks_themselves():
    assert stability.alphas(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(TfLthError, match="at least 2"):
        stability.alphas(1)
    rng = np.random.default_rng(0)
    wa = [rng.normal(size=(3, 4)).astype("float32"), np.array(7, "int64")]
    wb = [rng.normal(size=(3, 4)).astype("float32"), np.array(9, "int64")]
    at0, at1, half = (stability.interpolate(wa, wb, a) for a in (0.0, 1.0, 0.5))
    assert all(np.array_equal(x, y) for x, y in zip(at0, wa)) and all(np.array_equal(x, y) for x, y in zip(at1, wb))
    assert np.allclose(half[0], (wa[0] + wb[0]) / 2) and half[0].dtype == np.float32
    assert int(stability.interpolate(wa, wb, 0.25)[1]) == 7 and int(half[1]) == 9  # counters are not averaged
    with pytest.raises(TfLthError, match="same model"):
        stability.interpolate(wa, wb[:1], 0.5)


def test_the_barrier_is_the_highest_point_over_the_endpoints_mean():
    assert stability.barrier([0.1, 0.3, 0.1]) == pytest.approx(0.2)
    assert stability.barrier([0.1, 0.1, 0.1]) == 0.0
    assert stability.barrier([0.1, 0.12, 0.3]) == pytest.approx(0.3 - 0.2)  # an endpoint is the maximum
    assert stability.barrier([0.2, 0.05, 0.2]) == pytest.approx(0.0)
    with pytest.raises(TfLthError):
        stability.barrier([0.1])


def bn_model(keras):
    inputs = keras.Input((6,))
    h = keras.layers.Dense(4, name="fc")(inputs)
    h = keras.layers.BatchNormalization(name="bn", momentum=0.9)(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(h))


def expected_bn_stats(model, batches):
    w, b = model.get_layer("fc").get_weights()
    hs = [x @ w + b for x in batches]
    return np.mean([h.mean(0) for h in hs], 0), np.mean([h.var(0) for h in hs], 0)


@pytest.mark.parametrize("version", [2, 3])
def test_batchnorm_statistics_are_the_average_of_the_batches(version):
    keras = flavours.by_version(version).keras
    keras.utils.set_random_seed(0)
    model = bn_model(keras)
    rng = np.random.default_rng(1)
    batches = [rng.normal(loc=i, scale=1 + i, size=(200, 6)).astype("float32") for i in range(3)]
    assert stability.recompute_batchnorm(model, batches) == 3
    bn = model.get_layer("bn")
    mean, var = expected_bn_stats(model, batches)
    assert np.allclose(np.asarray(bn.moving_mean), mean, rtol=1e-4, atol=1e-4)
    assert np.allclose(np.asarray(bn.moving_variance), var, rtol=1e-3, atol=1e-4)
    assert not np.allclose(np.asarray(bn.moving_variance), np.var(np.concatenate(batches) @ model.get_layer("fc").get_weights()[0], 0), rtol=1e-2)  # per batch, not pooled
    assert bn.momentum == 0.9  # restored
    plain = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    assert stability.recompute_batchnorm(plain, batches) == 0  # nothing to recompute


JAX_SCRIPT = """
import json, sys
import numpy as np
import keras
sys.path.insert(0, {tests!r})
from test_stability import bn_model, expected_bn_stats
from tf_lth.ticket.ticket import LotteryTicket
from tf_lth.training import stability
keras.utils.set_random_seed(0)
rng = np.random.default_rng(1)
batches = [rng.normal(loc=i, scale=1 + i, size=(200, 6)).astype("float32") for i in range(3)]
model = bn_model(keras)
n = stability.recompute_batchnorm(model, batches)
mean, var = expected_bn_stats(model, batches)
bn = model.get_layer("bn")
ok = bool(np.allclose(np.asarray(bn.moving_mean), mean, atol=1e-4) and np.allclose(np.asarray(bn.moving_variance), var, rtol=1e-3))
ticket = LotteryTicket(bn_model(keras))
w = ticket.get_weights()
x, y = batches[0], rng.integers(0, 3, 200).astype("int32")
path = stability.evaluate_path(ticket, w, w, (x, y), stability.alphas(3), batches)
print("RESULT " + json.dumps({{"backend": keras.backend.backend(), "batches": n, "ok": ok, "path": path,
                               "tf_keras": "tf_keras" in sys.modules or "tf_lth.keras2" in sys.modules}}))
"""


@pytest.mark.heavy
def test_batchnorm_and_the_path_on_jax():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(KERAS_BACKEND="jax", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT.format(tests=str(Path(__file__).parent))], env=env,
                          capture_output=True, text=True, timeout=300)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line, done.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    assert result["backend"] == "jax" and result["batches"] == 3 and result["ok"]
    assert result["path"]["error_barrier"] == 0.0 and result["path"]["loss_barrier"] == 0.0
    assert not result["tf_keras"]  # the science reaches Keras through the ticket's flavour only
    # (TensorFlow itself may load: Keras 3 serializing a layer's config to clone it imports it where installed)


@pytest.fixture(scope="module")
def setup(mnist5k):
    cfg = ExperimentConfig.from_dict(RECIPE).resolved()
    kit = flavours.by_version(2).training
    kit.keras.utils.set_random_seed(cfg.seed)
    ticket = LotteryTicket(networks.build(cfg.model, mnist5k.input_shape, mnist5k.num_classes, 2), cfg.ticket)
    test = mnist5k.pipeline("test", 1000)
    return cfg, kit, ticket, test


def test_a_path_from_a_network_to_itself_has_no_barrier(setup):
    cfg, kit, ticket, test = setup
    w = ticket.get_weights()
    path = stability.evaluate_path(ticket, w, w, test, stability.alphas(3))
    assert path["alphas"] == [0.0, 0.5, 1.0] and len(set(path["errors"])) == 1
    assert path["error_barrier"] == 0.0 and path["loss_barrier"] == 0.0
    model = stability.evaluator(ticket, w)  # the endpoint scored as the ticket scores itself (no BN here)
    ticket.model.compile(loss=fit_round.loss(ticket.flavour.keras), metrics=["accuracy"])
    assert path["errors"][0] == pytest.approx(1 - ticket.model.evaluate(test, verbose=0, return_dict=True)["accuracy"])
    assert model.count_params() == ticket.source.count_params()


def test_the_trunk_is_the_runs_own_thetak(setup, mnist5k):
    cfg, kit, ticket, test = setup
    trunk = stability.trunk(kit, ticket, mnist5k, cfg.training, 5, seed=cfg.seed, test=test)
    run = stability.start(ticket, ticket.theta0, 5, 0)  # a run rewinding to iteration:5: θk taken in round 0
    run.thetak = None
    kit.compile_round(run, cfg.training, fit_round.steps_per_epoch(mnist5k, cfg.training))
    fit_round.train_round(kit, run, mnist5k, cfg.training, seed=cfg.seed, test=test)
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(trunk, run.thetak))
    assert not all(np.array_equal(a, b) for a, b in zip(trunk, ticket.theta0))
    assert all(np.array_equal(a, b) for a, b in zip(stability.trunk(kit, ticket, mnist5k, cfg.training, 0, seed=0),
                                                     ticket.theta0))  # k = 0: θ0, nothing trained


@pytest.mark.heavy
def test_copies_of_one_data_order_end_equal_and_of_two_do_not(setup, mnist5k):
    cfg, kit, ticket, test = setup
    ends = {}
    for name, seed in (("a", 1), ("a again", 1), ("b", 2)):
        ends[name] = stability.train_copy(kit, ticket, ticket.theta0, mnist5k, cfg.training, 0, seed=seed, test=test)
    assert ends["a"][1]["iterations"] == 10 and ends["a"][1]["test_accuracy"] > 0.5
    same = stability.evaluate_path(ticket, ends["a"][0], ends["a again"][0], test, stability.alphas(3))
    assert all(np.array_equal(x, y) for x, y in zip(ends["a"][0], ends["a again"][0]))
    assert same["error_barrier"] == 0.0 and same["loss_barrier"] == 0.0
    other = stability.evaluate_path(ticket, ends["a"][0], ends["b"][0], test, stability.alphas(3))
    assert not all(np.array_equal(x, y) for x, y in zip(ends["a"][0], ends["b"][0]))
    assert other["loss_barrier"] > 0
