"""Paths that once broke the promise quietly: controls' start, silent config, optimizer state,
reinitialisation, global block selection, two tickets on one model."""
import numpy as np
import pytest

import tf_lth
from tf_lth import keras
from tf_lth.pruning import selection as masks
from tf_lth.errors import TfLthError

from tf_lth.keras2.training import LOSS


@pytest.fixture(scope="module")
def small(mnist600):
    x, y = mnist600
    return (x.astype("float32") / 255.0).reshape(-1, 784), y


def mlp(head=None, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((784,))
    x = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    x = keras.layers.Dense(10, name="last")(x)
    if head is not None:
        x = head(x)
    return keras.Model(inputs, x)


def trained(ticket, small, optimizer=None, epochs=1):
    if ticket.model.optimizer is None or optimizer is not None:
        ticket.model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3), loss=LOSS, jit_compile=False)
    x, y = small
    ticket.model.fit(x, y, batch_size=60, epochs=epochs, shuffle=False, verbose=0, callbacks=[ticket.callback()])
    return ticket


# --- item 5: controls start where the ticket starts ----------------------------------------------


@pytest.mark.parametrize("rewind", ["iteration:3", "lr", "finetune"])
def test_random_mask_control_starts_from_the_tickets_rewind_point(small, rewind):
    ticket = trained(tf_lth.LotteryTicket(mlp(), rate=0.5, rewind=rewind), small)
    final = ticket.get_weights()
    ticket.next_round()
    start = ticket.thetak if rewind.startswith("iteration") else final
    assert not np.array_equal(start[0], ticket.theta0[0])  # the rewind point is not θ0
    twin = ticket.control("random_mask")
    for key, i in ticket.kernels().items():
        np.testing.assert_array_equal(twin.kernel(key), start[i] * twin.masks[key])
    twin.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS, jit_compile=False)
    x, y = small
    seen = {}

    class Step(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["step"] = int(twin.model.optimizer.iterations.numpy())

    twin.model.fit(x[:60], y[:60], batch_size=60, verbose=0, callbacks=[twin.callback(), Step()])
    assert seen["step"] == int(ticket.model.optimizer.iterations.numpy()) == {"iteration:3": 3, "lr": 0,
                                                                              "finetune": 10}[rewind]


# --- item 6: config that was silently ignored ----------------------------------------------------


def test_unknown_rates_key_names_the_valid_ones():
    with pytest.raises(TfLthError, match=r"rates key\(s\) hiden name no prunable layer.*hidden, last.*dense, output"):
        tf_lth.LotteryTicket(mlp(), rates={"hiden": 0.3})


@pytest.mark.parametrize("head", [lambda x: keras.layers.Activation("softmax", name="probs")(x),
                                  lambda x: keras.layers.Softmax(name="probs")(x)], ids=["activation", "softmax"])
def test_output_layer_is_the_last_pruned_layer_before_the_output(head):
    ticket = tf_lth.LotteryTicket(mlp(head), rate=0.2)
    assert ticket.rates == {"hidden/kernel": 0.2, "last/kernel": 0.1}


def test_rates_with_global_scope_is_an_error():
    with pytest.raises(TfLthError, match="need scope='layerwise'"):
        tf_lth.TicketConfig(scope="global", rates={"dense": 0.3})
    # the runner's paper rates are per layer: with global scope one rate applies
    assert tf_lth.ExperimentConfig.from_dict({"scope": "global"}).resolved().ticket.rates is None


# --- item 7: a loaded ticket continues exactly as an in-process one -----------------------------


@pytest.mark.parametrize("rewind", ["init", "iteration:3", "lr", "finetune"])
def test_save_load_next_round_equals_in_process(small, rewind, tmp_path):
    def first_round():
        keras.utils.set_random_seed(5)
        return trained(tf_lth.LotteryTicket(mlp(seed=5), rate=0.3, rewind=rewind), small)

    a = first_round()
    tf_lth.store.save(a, tmp_path / "t")
    a.next_round()
    trained(a, small)
    b = tf_lth.store.load(tmp_path / "t")
    b.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS, jit_compile=False)
    b.next_round()
    assert int(b.model.optimizer.iterations.numpy()) == a.steps[1][0]
    trained(b, small)
    assert a.steps == b.steps
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=0, atol=1e-6)


# --- item 8: a fresh optimizer state is what a fresh optimizer has -------------------------------


@pytest.mark.parametrize("make", [lambda: keras.optimizers.Adagrad(0.05, initial_accumulator_value=0.1),
                                  lambda: keras.optimizers.Adam(1e-3, use_ema=True),
                                  lambda: keras.optimizers.Ftrl(0.05)], ids=["adagrad", "adam_ema", "ftrl"])
def test_reset_optimizer_equals_a_freshly_built_optimizer(small, make):
    ticket = trained(tf_lth.LotteryTicket(mlp(), rate=0.5), small, make())
    ticket.next_round()
    fresh = make()
    fresh.build(ticket.model.trainable_variables)  # built on the rewound weights
    state = [v.numpy() for v in ticket.model.optimizer.variables]
    expected = [v.numpy() for v in fresh.variables]
    assert len(state) == len(expected)
    assert any(np.any(e != 0) for e in expected[1:])  # non-zero fresh state: zeros would not pass
    for s, e in zip(state, expected):
        np.testing.assert_array_equal(s, e)


# --- item 9: every initialised weight is drawn again ---------------------------------------------


def test_reinit_draws_every_weight_of_separable_conv_and_lstm():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(inputs)
    x = keras.layers.Reshape((6, 24))(x)
    x = keras.layers.LSTM(5, name="lstm")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    ticket = tf_lth.LotteryTicket(model, rate=0.5, survivors="reinit")
    assert {"sep/pointwise_kernel", "lstm/lstm_cell/recurrent_kernel", "lstm/lstm_cell/kernel"} <= set(ticket.masks)
    fresh = ticket.fresh_values(7)
    names = [v.name for v in ticket.masked.variables]
    for name, new, old in zip(names, fresh, ticket.theta0):
        if "bias" not in name:  # biases start at zero either way
            assert not np.array_equal(new, old), f"{name} kept θ0"


def test_reinit_of_a_weight_without_initializer_names_it():
    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.scale = self.add_weight("scale", shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.scale

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(Scale(name="scaler")(inputs)))
    ticket = tf_lth.LotteryTicket(model, rate=0.5)
    with pytest.raises(TfLthError, match="cannot draw scaler/scale again"):
        ticket.control("random_reinit")


# --- item 10: global selection with blocks keeps the count ---------------------------------------


@pytest.mark.parametrize("names", [("a", "b"), ("z", "a")])
def test_global_block_selection_keeps_the_exact_count(names):
    rng = np.random.default_rng(0)
    dense, conv = names
    score = {dense: rng.random((10, 10)), conv: rng.random((2, 2, 5, 5))}  # 100 + 100 weights
    alive = {k: np.ones(v.shape, bool) for k, v in score.items()}
    for keep in (100, 37, 150):
        out = masks.select_global(score, alive, keep, block=(4, 1))
        assert sum(int(m.sum()) for m in out.values()) == keep


# --- item 11: two tickets on one model ----------------------------------------------------------


def test_two_tickets_of_one_model_are_independent(small):
    model = mlp()
    a = tf_lth.LotteryTicket(model, rate=0.5)
    b = tf_lth.LotteryTicket(model, rate=0.2)
    trained(a, small)
    b_before = b.get_weights()
    a.next_round()
    assert all(np.array_equal(x, y) for x, y in zip(b_before, b.get_weights()))  # a's rewind left b alone
    trained(b, small)
    for key, m in b.masks.items():
        assert m.all() and np.count_nonzero(b.kernel(key)) > 0.99 * m.size  # a's masks never reach b
    for key, m in a.masks.items():
        assert np.all(a.kernel(key)[~m] == 0)
