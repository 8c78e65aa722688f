"""The lottery-ticket engine on TF-MOT: frozen masks, pruning targets, rewinding, controls, state."""
import numpy as np
import pytest

import tf_lth
from tf_lth import keras
from tf_lth.errors import TfLthError
from tf_lth.training import evaluation

from tf_lth.keras2.training import LOSS


@pytest.fixture(scope="module")
def small(mnist600):
    return mnist600


def small_mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(64, activation="relu", kernel_initializer="glorot_normal", name="hidden1")(x)
    x = keras.layers.Dense(32, activation="relu", kernel_initializer="glorot_normal", name="hidden2")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="output")(x))


def compile_(ticket, optimizer=None):
    ticket.model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3), loss=LOSS, metrics=["accuracy"])


def train(ticket, data, epochs=1, callbacks=(), **kw):
    x, y = data
    ticket.model.fit(x, y, batch_size=60, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=[ticket.callback(**kw), *callbacks])


def perturb(ticket, seed):
    """Stand-in for training when only mask arithmetic is under test: new kernel values."""
    rng = np.random.default_rng(seed)
    for k, i in ticket.kernels().items():
        v = ticket.masked.variables[i]
        v.assign(rng.normal(size=v.shape).astype(np.float32) * ticket.masks[k])


class ZeroChecker(keras.callbacks.Callback):
    """Fails the test if any pruned weight is non-zero after any batch."""

    def __init__(self, ticket):
        super().__init__()
        self.ticket, self.checked = ticket, 0

    def on_train_batch_end(self, batch, logs=None):
        for k, m in self.ticket.masks.items():
            assert np.all(self.ticket.kernel(k)[~m] == 0), f"{k} has non-zero pruned weights after batch {batch}"
        self.checked += 1


@pytest.mark.parametrize("optimizer", [lambda: keras.optimizers.Adam(1e-3),
                                       lambda: keras.optimizers.SGD(0.1, momentum=0.9)], ids=["adam", "sgd_momentum"])
def test_masks_frozen_after_every_batch(small, optimizer):
    ticket = tf_lth.LotteryTicket(small_mlp(), rate=0.5)
    compile_(ticket, optimizer())
    train(ticket, small)  # moments build up on weights that are about to be pruned
    ticket.next_round()
    checker = ZeroChecker(ticket)
    train(ticket, small, epochs=2, callbacks=[checker])
    assert checker.checked == 20
    for k, m in ticket.masks.items():
        w = ticket.kernel(k)
        assert np.all(w[~m] == 0) and np.count_nonzero(w[m]) == m.sum()


def test_layerwise_targets_and_monotone_masks():
    ticket = tf_lth.LotteryTicket(small_mlp(), rate=0.2)
    previous = {k: m.copy() for k, m in ticket.masks.items()}
    for r in range(1, 6):
        perturb(ticket, r)
        ticket.next_round()
        for k, m in ticket.masks.items():
            rate = 0.1 if k.startswith("output") else 0.2
            assert abs(m.sum() - m.size * (1 - rate) ** r) <= 1, (k, r)
            assert not np.any(m & ~previous[k]), f"a pruned weight of {k} came back in round {r}"
        previous = {k: m.copy() for k, m in ticket.masks.items()}


def test_global_scope_is_one_cut_across_layers():
    ticket = tf_lth.LotteryTicket(small_mlp(), rate=0.3, scope="global", ignore=("output",))
    perturb(ticket, 1)
    before = {k: np.abs(ticket.kernel(k)) for k in ticket.masks}
    ticket.next_round()
    pruned = [k for k in ticket.masks if not k.startswith("output")]
    kept = min(before[k][ticket.masks[k]].min() for k in pruned)
    cut = max(before[k][~ticket.masks[k]].max() for k in pruned)
    assert kept >= cut
    total = sum(ticket.masks[k].size for k in pruned)
    assert abs(sum(ticket.masks[k].sum() for k in pruned) - 0.7 * total) <= 1
    assert ticket.masks["output/kernel"].all()
    per_layer = {k: ticket.masks[k].mean() for k in pruned}
    assert len(set(np.round(list(per_layer.values()), 3))) > 1  # one threshold, not one rate per layer


def test_init_rewind_restores_theta0_exactly(small):
    ticket = tf_lth.LotteryTicket(small_mlp(), rate=0.2)
    theta0 = [a.copy() for a in ticket.theta0]
    compile_(ticket)
    train(ticket, small)
    ticket.next_round()
    for k, i in ticket.kernels().items():
        np.testing.assert_array_equal(ticket.kernel(k), theta0[i] * ticket.masks[k])
    for i, v in enumerate(ticket.get_weights()):
        if i not in ticket.kernels().values():
            np.testing.assert_array_equal(v, theta0[i])  # biases too
    assert int(ticket.model.optimizer.iterations.numpy()) == 0


def test_late_rewind_restores_weights_after_k_steps(small):
    ticket = tf_lth.LotteryTicket(small_mlp(), rate=0.2, rewind="iteration:3")
    seen = {}

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:  # after 3 optimizer steps
                seen["w"] = ticket.get_weights()

    compile_(ticket)
    train(ticket, small, callbacks=[Spy()])
    ticket.next_round()
    assert int(ticket.model.optimizer.iterations.numpy()) == 3
    for k, i in ticket.kernels().items():
        np.testing.assert_array_equal(ticket.kernel(k), seen["w"][i] * ticket.masks[k])


def test_late_rewind_without_theta_k_is_a_clear_error():
    ticket = tf_lth.LotteryTicket(small_mlp(), rewind="iteration:100")
    with pytest.raises(TfLthError, match="needs θk"):
        ticket.next_round()


def test_finetune_keeps_trained_weights_and_lr_rewind_restarts_schedule(small):
    for mode, step in (("finetune", 10), ("lr", 0)):
        ticket = tf_lth.LotteryTicket(small_mlp(), rate=0.2, rewind=mode)
        compile_(ticket)
        train(ticket, small)
        trained = {k: ticket.kernel(k) for k in ticket.masks}
        ticket.next_round()
        for k, m in ticket.masks.items():
            np.testing.assert_array_equal(ticket.kernel(k), trained[k] * m)
        assert int(ticket.model.optimizer.iterations.numpy()) == step
        fresh = keras.optimizers.Adam(1e-3)
        fresh.build(ticket.model.trainable_variables)
        for v, f in zip(ticket.model.optimizer.variables[1:], fresh.variables[1:]):
            np.testing.assert_array_equal(v.numpy(), f.numpy())  # the moments of a new optimizer


def test_round_metrics_record_early_stopping(small, mnist5k):
    ticket = tf_lth.LotteryTicket(small_mlp(), rate=0.2)
    compile_(ticket)
    val = mnist5k.pipeline("val", 500)
    x, y = small
    ticket.model.fit(x, y, batch_size=60, epochs=3, verbose=0, validation_data=val,
                     callbacks=[ticket.callback(test_data=mnist5k.pipeline("test", 1000))])
    h = ticket.history[-1]
    curve = h["curve"]
    assert [p["iteration"] for p in curve] == [10, 20, 30]
    best = min(curve, key=lambda p: p["val_loss"])
    assert h["early_stop_iteration"] == best["iteration"]
    assert h["early_stop_test_accuracy"] == best["test_accuracy"]
    assert h["test_accuracy"] == curve[-1]["test_accuracy"] > 0.5


def test_controls_keep_sparsity_and_differ_as_defined(small):
    ticket = tf_lth.LotteryTicket(small_mlp(), rate=0.5)
    compile_(ticket)
    train(ticket, small)
    ticket.next_round()
    reinit = ticket.control("random_reinit")
    random_mask = ticket.control("random_mask")
    for k, m in ticket.masks.items():
        np.testing.assert_array_equal(reinit.masks[k], m)
        assert random_mask.masks[k].sum() == m.sum() and np.any(random_mask.masks[k] != m)
        i = ticket.kernels()[k]
        assert not np.allclose(reinit.kernel(k)[m], ticket.theta0[i][m])
        np.testing.assert_array_equal(random_mask.kernel(k), ticket.theta0[i] * random_mask.masks[k])
    # the controls train on their own variables: the ticket is untouched
    before = {k: ticket.kernel(k) for k in ticket.masks}
    compile_(reinit)
    train(reinit, small)
    assert all(np.array_equal(before[k], ticket.kernel(k)) for k in before)


def test_save_load_continue_matches_uninterrupted_run(small, tmp_path):
    def run(stop_after=None):
        ticket = tf_lth.LotteryTicket(small_mlp(seed=3), rate=0.3, seed=3)
        for r in range(3):
            keras.utils.set_random_seed(10 + r)
            if stop_after == r:
                tf_lth.store.save(ticket, tmp_path / "run")
                ticket = tf_lth.store.load(tmp_path / "run")
            compile_(ticket)
            train(ticket, small)
            ticket.next_round()
        return ticket

    a, b = run(), run(stop_after=2)
    assert b.round == a.round == 3
    for k in a.masks:
        np.testing.assert_array_equal(a.masks[k], b.masks[k])
    for wa, wb in zip(a.get_weights(), b.get_weights()):  # the rewound weights, not only the masks
        np.testing.assert_array_equal(wa, wb)
    assert [h["weights_remaining"] for h in a.history] == [h["weights_remaining"] for h in b.history]
    assert a.steps == b.steps


def test_same_seed_same_masks_and_metrics(small):
    def run():
        keras.utils.set_random_seed(7)
        ticket = tf_lth.LotteryTicket(small_mlp(seed=7), rate=0.2, seed=7)
        compile_(ticket)
        train(ticket, small, test_data=small)
        ticket.next_round()
        return ticket

    a, b = run(), run()
    assert a.history[0]["test_accuracy"] == b.history[0]["test_accuracy"]
    assert all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)


def test_conv_model_and_unprunable_layers_are_reported(small):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(10, name="logits"),
    ])
    ticket = tf_lth.LotteryTicket(model, rates={"conv": 0.4, "output": 0.2})
    assert sorted(ticket.masks) == ["conv/kernel", "logits/kernel"]
    assert ticket.unpruned_layers == ["bn"]
    compile_(ticket)
    train(ticket, small)
    ticket.next_round()
    assert abs(ticket.masks["conv/kernel"].mean() - 0.6) < 0.01
    assert abs(ticket.masks["logits/kernel"].mean() - 0.8) < 0.01


def test_frozen_pruned_weights_stay_at_init_through_fit(small):
    ticket = tf_lth.LotteryTicket(small_mlp(), rate=0.5, pruned="frozen")
    compile_(ticket)
    train(ticket, small)
    ticket.next_round()
    train(ticket, small)
    for k, m in ticket.masks.items():
        w, w0 = ticket.kernel(k), ticket.theta0[ticket.kernels()[k]]
        np.testing.assert_array_equal(w[~m], w0[~m])  # not zeroed, not trained
        assert np.mean(w[m] != w0[m]) > 0.5  # survivors did train (border pixels get no gradient)


def test_supermask_accuracy_scores_masked_theta0_and_restores_weights(small):
    ticket = tf_lth.LotteryTicket(small_mlp(), rate=0.5)
    compile_(ticket)
    train(ticket, small)
    ticket.next_round()  # weights are now exactly m * θ0
    expected = evaluation.accuracy(ticket.model, small)
    compile_(ticket)
    train(ticket, small)
    trained = ticket.get_weights()
    assert tf_lth.supermask.untrained_accuracy(ticket, small, "original") == expected
    assert all(np.array_equal(a, v) for a, v in zip(trained, ticket.get_weights()))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize("make, options, message", [
    (lambda: Subclassed(), {}, "subclassed"),
    (lambda: keras.Sequential([keras.Input((4,)), keras.layers.ReLU()]), {}, "nothing to find"),
    (small_mlp, {"rate": 1.5}, "strictly between 0 and 1"),
    (small_mlp, {"rate": 0.0}, "strictly between 0 and 1"),
    (small_mlp, {"rewind": "sometimes"}, "unknown rewind"),
    (small_mlp, {"criterion": "biggest"}, "unknown mask criterion"),
    (small_mlp, {"ignore": ("nope",)}, "ignore names unknown"),
])
def test_bad_input_is_one_clear_line(make, options, message):
    with pytest.raises(TfLthError, match=message) as e:
        tf_lth.LotteryTicket(make(), **options)
    assert "\n" not in str(e.value)


def test_a_model_of_no_keras_is_refused_in_one_line():
    with pytest.raises(TfLthError, match="expected a Keras model .*got object"):
        tf_lth.LotteryTicket(object())


def test_works_inside_a_distribution_strategy(small):
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        ticket = tf_lth.LotteryTicket(small_mlp(), rate=0.5)
        compile_(ticket)
    assert all(type(v).__name__ == "MirroredVariable" for v in ticket.masked.keep.values())
    train(ticket, small)
    ticket.next_round()
    checker = ZeroChecker(ticket)
    train(ticket, small, callbacks=[checker])
    assert checker.checked == 10
