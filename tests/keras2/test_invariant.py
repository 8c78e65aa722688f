"""The invariant: a pruned weight is zero in every forward pass and after every step, whatever writes
the weights (fit, custom loops, set_weights/load_weights), in float32 and mixed precision, with SGD
momentum, Adam and Adam with EMA. The reference for the logits is the same network built plainly
with its weights multiplied by the masks."""
import numpy as np
import pytest

import tf_lth
from tf_lth import keras
from tf_lth.keras2 import tf

from tf_lth.keras2.training import LOSS
LR = {"sgd_momentum": 0.05, "adam": 1e-3, "adam_ema": 1e-3}
STEPS = 6


def make_optimizer(name):
    if name == "sgd_momentum":
        return keras.optimizers.SGD(LR[name], momentum=0.9)
    # ema_overwrite_frequency: the averages are written into the weights every 3 steps, inside the step
    return keras.optimizers.Adam(LR[name], use_ema=name == "adam_ema", ema_overwrite_frequency=3 if name == "adam_ema" else None)


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def batches(mnist5k):
    x, y = mnist5k.arrays("train")
    return (x[:600].astype("float32") / 255.0).reshape(-1, 784), y[:600].astype("int32")


def mlp():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((784,))
    x = keras.layers.Dense(48, activation="relu", name="hidden")(inputs)
    # float32 logits, as Keras' mixed-precision guide has it
    x = keras.layers.Dense(10, name="output")(x)
    return keras.Model(inputs, keras.layers.Activation("linear", dtype="float32", name="logits")(x))


def reference_logits(ticket, x):
    """The plain network (same policy) with the variables' values multiplied by the masks."""
    plain = keras.models.clone_model(ticket.source)
    values = [v.numpy() for v in ticket.masked.variables]
    for key, i in ticket.kernels().items():
        values[i] = values[i] * ticket.masks[key]
    plain.set_weights(values)
    return plain(x, training=False).numpy()


def check(ticket, x, where):
    for key, m in ticket.masks.items():
        w = ticket.kernel(key)
        assert np.all(w[~m] == 0), f"{key}: {np.count_nonzero(w[~m])} pruned weights non-zero {where}"
    got = ticket.model(x, training=False).numpy()
    np.testing.assert_allclose(got, reference_logits(ticket, x), rtol=1e-5, atol=1e-5, err_msg=where)


def pruned_ticket(optimizer_name, batches, granularity="weight"):
    """Round 0 trained densely (moments and averages built on weights about to be pruned), then pruned
    (single weights, or whole units: their columns and the next layer's rows)."""
    x, y = batches
    ticket = tf_lth.LotteryTicket(mlp(), rate=0.5, granularity=granularity)
    ticket.model.compile(optimizer=make_optimizer(optimizer_name), loss=LOSS, jit_compile=False)
    ticket.model.fit(x, y, batch_size=100, epochs=1, verbose=0, callbacks=[ticket.callback()])
    ticket.next_round()
    return ticket


class HandOptimizer:
    """The same three optimizers written by hand, updating weights by direct assignment."""

    def __init__(self, name, variables):
        self.name, self.t = name, 0
        self.m = [np.zeros(v.shape, np.float32) for v in variables]
        self.v = [np.zeros(v.shape, np.float32) for v in variables]
        self.ema = [v.numpy() for v in variables]

    def step(self, variables, grads):
        self.t += 1
        lr = LR[self.name]
        for i, (var, g) in enumerate(zip(variables, grads)):
            g = g.numpy()
            if self.name == "sgd_momentum":
                self.m[i] = 0.9 * self.m[i] + g
                var.assign(var.numpy() - lr * self.m[i])
                continue
            self.m[i] = 0.9 * self.m[i] + 0.1 * g
            self.v[i] = 0.999 * self.v[i] + 0.001 * g * g
            m_hat, v_hat = self.m[i] / (1 - 0.9 ** self.t), self.v[i] / (1 - 0.999 ** self.t)
            var.assign(var.numpy() - lr * m_hat / (np.sqrt(v_hat) + 1e-7))
            if self.name == "adam_ema":
                self.ema[i] = 0.99 * self.ema[i] + 0.01 * var.numpy()
                if self.t % 3 == 0:
                    var.assign(self.ema[i])


@pytest.mark.parametrize("method", ["snip", "synflow"])
def test_a_ticket_pruned_at_init_keeps_its_pruned_weights_zero_through_fit(method, batches):
    """LotteryTicket.at_init (SNIP: the loss gradient, SynFlow: iterations) is a ticket like any: masks written,
    θ0 in the survivors, pruned weights zero after every step of fit, and it learns the digits."""
    x, y = batches
    x = x * 255.0  # the fixture's digits are scaled twice: pixels in [0, 1] to learn them
    ticket = tf_lth.LotteryTicket.at_init(mlp(), method, 0.1, data=(x, y), batches=2, batch_size=100, iterations=10)
    assert sum(int(m.sum()) for m in ticket.masks.values()) == round(0.1 * (784 * 48 + 48 * 10))
    check(ticket, x[:64], "at θ0")
    ticket.model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS, metrics=["accuracy"], jit_compile=False)

    class Check(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            check(ticket, x[:64], f"after fit step {batch + 1}")

    ticket.model.fit(x, y, batch_size=100, epochs=3, shuffle=False, verbose=0, callbacks=[ticket.callback(), Check()])
    check(ticket, x[:64], "after fit")
    assert ticket.model.evaluate(x, y, verbose=0)[1] > 0.5  # 10% of the weights, 600 digits, 3 epochs


@pytest.mark.parametrize("optimizer_name", ["sgd_momentum", "adam", "adam_ema"])
@pytest.mark.parametrize("policy", ["float32", "mixed_float16"], indirect=True)
@pytest.mark.parametrize("loop, granularity", [("fit", "weight"), ("apply_gradients", "weight"), ("assign", "weight"),
                                               ("fit", "unit"), ("assign", "refill")])
def test_pruned_weights_stay_zero_after_every_step(loop, granularity, policy, optimizer_name, batches):
    x, y = batches
    ticket = pruned_ticket(optimizer_name, batches, granularity)
    if granularity != "weight":
        assert ticket.units_kept()["hidden"][0] < 48  # whole hidden units went
    check(ticket, x[:64], "after next_round")
    model = ticket.model
    if loop == "fit":
        class Check(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                check(ticket, x[:64], f"after fit step {batch + 1}")

        model.fit(x[:STEPS * 100], y[:STEPS * 100], batch_size=100, epochs=1, shuffle=False, verbose=0,
                  callbacks=[ticket.callback(), Check()])
        check(ticket, x[:64], "after fit (EMA averages finalized into the weights)")
        return
    variables = model.trainable_variables
    optimizer = make_optimizer(optimizer_name)
    if policy == "mixed_float16":
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    hand = HandOptimizer(optimizer_name, variables)
    for step in range(STEPS):
        xb, yb = x[step * 100:(step + 1) * 100], y[step * 100:(step + 1) * 100]
        with tf.GradientTape() as tape:
            loss = LOSS(yb, model(xb, training=True))
            scaled = optimizer.get_scaled_loss(loss) if policy == "mixed_float16" else loss
        grads = tape.gradient(scaled, variables)
        if policy == "mixed_float16":
            grads = optimizer.get_unscaled_gradients(grads)
        if loop == "apply_gradients":
            optimizer.apply_gradients(zip(grads, variables))
        else:
            hand.step(variables, grads)
        check(ticket, x[:64], f"after {loop} step {step + 1}")
    if loop == "apply_gradients":
        optimizer.finalize_variable_values(variables)  # EMA: the averages become the weights
        check(ticket, x[:64], "after finalize_variable_values")


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"], indirect=True)
def test_weights_written_by_hand_never_reach_the_output(policy, batches, tmp_path):
    x, _ = batches
    ticket = pruned_ticket("adam", batches)
    masked_theta0 = [a.copy() for a in ticket.theta0]
    for key, i in ticket.kernels().items():
        masked_theta0[i] = masked_theta0[i] * ticket.masks[key]
    expected = reference_logits(ticket, x[:64])

    # ticket.set_weights: masks apply to what is written
    ticket.set_weights(ticket.theta0)
    check(ticket, x[:64], "after ticket.set_weights(theta0)")
    np.testing.assert_allclose(ticket.model(x[:64]).numpy(), expected, rtol=1e-5, atol=1e-5)

    # model.set_weights with dense values: the variables hold them, the outputs do not see them
    dense = [np.random.default_rng(0).normal(size=w.shape).astype(w.dtype) * 0.05 for w in ticket.model.get_weights()]
    wrapper_state = {id(v) for layer in ticket.model.layers for v in layer.non_trainable_weights}
    dense = [d if id(v) not in wrapper_state else v.numpy() for d, v in zip(dense, ticket.model.weights)]
    ticket.model.set_weights(dense)
    assert any(np.count_nonzero(ticket.kernel(k)[~m]) for k, m in ticket.masks.items())  # written as asked
    np.testing.assert_allclose(ticket.model(x[:64]).numpy(), reference_logits(ticket, x[:64]), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(  # ...and tf-lth's own view (and files) are masked
        np.concatenate([w.ravel() for w in ticket.get_weights()]),
        np.concatenate([w.ravel() for w in ticket.masked.weights()]))
    assert all(np.all(ticket.get_weights()[i][~ticket.masks[k]] == 0) for k, i in ticket.kernels().items())

    # model.load_weights of a checkpoint holding dense kernels
    ticket.model.save_weights(str(tmp_path / "dense.weights.h5"))
    ticket.set_weights(ticket.theta0)
    ticket.model.load_weights(str(tmp_path / "dense.weights.h5"))
    np.testing.assert_allclose(ticket.model(x[:64]).numpy(), reference_logits(ticket, x[:64]), rtol=1e-5, atol=1e-5)
    # the next fit starts by writing the masks into the variables
    ticket.model.fit(x[:100], batches[1][:100], batch_size=100, epochs=1, verbose=0, callbacks=[ticket.callback()])
    check(ticket, x[:64], "after fit following load_weights")


def test_frozen_pruned_weights_hold_their_values_in_every_pass(batches):
    x, y = batches
    ticket = tf_lth.LotteryTicket(mlp(), rate=0.5, pruned="frozen")
    ticket.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS, jit_compile=False)
    ticket.model.fit(x, y, batch_size=100, epochs=1, verbose=0, callbacks=[ticket.callback()])
    ticket.next_round()
    dense = [np.full(v.shape, 0.5, np.float32) for v in ticket.masked.variables]
    for v, d in zip(ticket.masked.variables, dense):
        v.assign(d)  # a careless writer
    expected = list(dense)
    for key, i in ticket.kernels().items():
        expected[i] = np.where(ticket.masks[key], dense[i], ticket.theta0[i])
    plain = keras.models.clone_model(ticket.source)
    plain.set_weights(expected)
    np.testing.assert_allclose(ticket.model(x[:64]).numpy(), plain(x[:64]).numpy(), rtol=1e-5, atol=1e-5)


def test_every_prunable_layer_kind_computes_with_masked_weights():
    """SeparableConv (pointwise kernel), MultiHeadAttention (four sublayer kernels) and LSTM (kernel and
    recurrent kernel, read inside the recurrence) all compute with the masked values."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(inputs)
    x = keras.layers.Reshape((6, 24))(x)
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = keras.layers.LSTM(5, name="lstm")(x)
    ticket = tf_lth.LotteryTicket(keras.Model(inputs, keras.layers.Dense(2, name="out")(x)), rate=0.5)
    assert len(ticket.masks) == 8
    rng = np.random.default_rng(0)
    ticket.set_masks({k: rng.random(m.shape) < 0.5 for k, m in ticket.masks.items()})
    for v in ticket.masked.variables:  # dense values written behind the ticket's back
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    x = rng.random((4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(ticket.model(x).numpy(), reference_logits(ticket, x), rtol=1e-5, atol=1e-6)
