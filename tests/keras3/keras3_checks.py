"""Checks of Keras 3 tickets that run unchanged on every Keras 3 backend.

tests/test_keras3.py calls each check in-process (TensorFlow backend) and runs this file as a script
under ``KERAS_BACKEND=jax`` in a subprocess (``python tests/keras3_checks.py [NAME ...]``: one JSON
line per check). It imports neither pytest nor tf_lth's tf_keras modules (the test suite's conftest
loads TensorFlow and tf_keras), so a JAX run holds only what a JAX user's process holds.

Data: sklearn's 1,797 real 8x8 digits (the first 1,400 train, the rest test).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback

import numpy as np

import keras
from sklearn.datasets import load_digits

from tf_lth import LotteryTicket
from tf_lth.errors import TfLthError

BATCH = 64
CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def digits():
    d = load_digits()
    x = (d.data / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    return x[:1400], d.target[:1400].astype("int32"), x[1400:], d.target[1400:].astype("int32")


def functional_cnn(seed=0):
    """Conv2D -> BatchNormalization -> ReLU -> Dense -> Dense, the output through a float32 Activation."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn")(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(64, activation="relu", name="fc1")(h)
    h = keras.layers.Dense(10, name="output")(h)
    out = keras.layers.Activation("linear", dtype="float32", name="logits")(h)
    return keras.Model(inp, out, name="func")


@keras.saving.register_keras_serializable("tf_lth_tests")
class Block(keras.layers.Layer):
    """A nested layer holding a Dense and a BatchNormalization (sublayers the masks must reach)."""

    def __init__(self, units=32, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = keras.layers.Dense(units, name="block_fc")
        self.norm = keras.layers.BatchNormalization(momentum=0.9, name="block_bn")

    def call(self, x, training=False):
        return keras.ops.relu(self.norm(self.dense(x), training=training))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable("tf_lth_tests")
class SubNet(keras.Model):
    """A subclassed model: Conv2D, a nested registered Block, and the output Dense."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(6, 3, activation="relu", name="sconv")
        self.flat = keras.layers.Flatten()
        self.block = Block(32, name="block")
        self.out = keras.layers.Dense(10, name="sout")

    def call(self, x, training=False):
        return self.out(self.block(self.flat(self.conv(x)), training=training))


def subclassed(seed=0):
    keras.utils.set_random_seed(seed)
    model = SubNet(name="subnet")
    model(np.zeros((1, 8, 8, 1), "float32"))  # built by a call, as subclassed models are
    return model


def compile_(ticket, optimizer):
    ticket.model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                         metrics=["accuracy"])


def raw_pruned_nonzero(ticket) -> int:
    """Non-zero raw pruned entries over all kernels (both modes keep them at exactly 0)."""
    return sum(int(np.count_nonzero(np.asarray(ticket.masked.variables[i].value)[~ticket.masks[k]]))
               for k, i in ticket.kernels().items())


class ZeroAfterEveryBatch(keras.callbacks.Callback):
    """Counts the batches after which a pruned raw weight was not exactly zero."""

    def __init__(self, ticket):
        super().__init__()
        self.ticket, self.batches, self.bad = ticket, 0, []

    def on_train_batch_end(self, batch, logs=None):
        self.model  # noqa: B018  (on JAX: syncs the trainer's state into the variables)
        self.batches += 1
        if raw_pruned_nonzero(self.ticket):
            self.bad.append(self.batches)


def three_rounds(ticket, optimizer, rounds=3, epochs=1, examples=None):
    """Three IMP rounds with ``fit``; asserts zeros after every batch and the per-layer counts."""
    xtr, ytr, xte, yte = digits()
    xtr, ytr = xtr[:examples], ytr[:examples]
    compile_(ticket, optimizer)
    accs = []
    for r in range(rounds):
        watch = ZeroAfterEveryBatch(ticket)
        ticket.model.fit(xtr, ytr, batch_size=BATCH, epochs=epochs, verbose=0,
                         callbacks=[ticket.callback(test_data=(xte, yte)), watch])
        assert watch.batches == epochs * -(-len(xtr) // BATCH), watch.batches
        assert not watch.bad, f"round {r}: pruned weights non-zero after batches {watch.bad[:5]}"
        counts = ticket.target_counts(r)
        kept = {k: int(ticket.masks[k].sum()) for k in counts}
        assert kept == counts, (kept, counts)
        accs.append(ticket.history[-1]["test_accuracy"])
        ticket.next_round()
    return accs


def logits(model, x):
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), np.float32)


@check
def tf_lth_loads_no_tensorflow():
    """On JAX, a ticket's masks, rounds and callback load no TensorFlow (Keras' own
    ``set_random_seed`` does, to seed it too: not called here)."""
    if keras.backend.backend() != "jax" or "tensorflow" in sys.modules:
        return {"skipped": "not a JAX process without TensorFlow"}
    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, keras.layers.Dense(10, name="d")(keras.layers.Flatten()(inp)))
    ticket = LotteryTicket(model, rate=0.5)
    compile_(ticket, keras.optimizers.Adam())
    xtr, ytr, _, _ = digits()
    ticket.model.fit(xtr[:128], ytr[:128], batch_size=BATCH, verbose=0, callbacks=[ticket.callback()])
    ticket.next_round()
    inp = keras.Input((8, 8, 1))  # pruning at init: GraSP's Hessian-gradient product by jax.jvp of jax.grad
    pai = keras.Model(inp, keras.layers.Dense(10, name="d")(keras.layers.Flatten()(inp)))
    pai = LotteryTicket.at_init(pai, "grasp", 0.5, data=(xtr[:128], ytr[:128]), batch_size=BATCH)
    assert sum(int(m.sum()) for m in pai.masks.values()) == 320
    loaded = [m for m in ("tensorflow", "tf_keras", "tensorflow_model_optimization") if m in sys.modules]
    assert not loaded, loaded
    return {"tensorflow_loaded": False}


@check
def functional_adam_three_rounds():
    ticket = LotteryTicket(functional_cnn(), rate=0.5)
    assert ticket.unpruned_layers == ["bn"], ticket.unpruned_layers
    assert ticket.rates == {"conv1/kernel": 0.5, "fc1/kernel": 0.5, "output/kernel": 0.25}, ticket.rates
    accs = three_rounds(ticket, keras.optimizers.Adam(2e-3))
    assert min(accs) > 0.7, accs  # it learns digits in every round
    # a round with nothing to do inside epochs leaves Keras' asynchronous dispatch on (JAX: threads)
    quiet = keras.callbacks.CallbackList([ticket.callback()], model=ticket.model)._async_train
    busy = keras.callbacks.CallbackList([ticket.callback(max_steps=5)], model=ticket.model)._async_train
    assert not busy and quiet == keras.src.backend.IS_THREAD_SAFE, (quiet, busy)
    return {"test_accuracy": accs, "weights_remaining": ticket.weights_remaining}


@check
def subclassed_sgd_momentum_three_rounds():
    ticket = LotteryTicket(subclassed(), rate=0.5)
    assert set(ticket.kernels()) == {"sconv/kernel", "block_fc/kernel", "sout/kernel"}, ticket.kernels()
    assert ticket.rates["sout/kernel"] == 0.25, ticket.rates  # the output layer found by call order
    accs = three_rounds(ticket, keras.optimizers.SGD(0.05, momentum=0.9), epochs=2)
    assert min(accs) > 0.7, accs
    return {"test_accuracy": accs}


@check
def mixed_float16_three_rounds():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = functional_cnn()
        assert model.get_layer("fc1").compute_dtype == "float16"
        ticket = LotteryTicket(model, rate=0.5)
        accs = three_rounds(ticket, keras.optimizers.Adam(2e-3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(ticket.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert min(accs) > 0.7, accs
    return {"test_accuracy": accs}


@check
def the_other_model_optimizer_pairs():
    """The pairs the checks above leave out (subclassed + Adam, functional + SGD with momentum,
    subclassed + mixed_float16): three rounds of 10 batches each, zeros after every batch, counts."""
    three_rounds(LotteryTicket(subclassed(), rate=0.5), keras.optimizers.Adam(2e-3), examples=640)
    three_rounds(LotteryTicket(functional_cnn(), rate=0.5), keras.optimizers.SGD(0.05, momentum=0.9), examples=640)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        ticket = LotteryTicket(subclassed(), rate=0.5)
        three_rounds(ticket, keras.optimizers.Adam(2e-3), examples=640)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert ticket.model.get_layer("sconv").compute_dtype == "float16"


@check
def adam_ema_and_frozen_adamw():
    # EMA averages are copied into the weights at the end of fit; frozen pruned weights under decay
    ticket = LotteryTicket(functional_cnn(), rate=0.5)
    three_rounds(ticket, keras.optimizers.Adam(2e-3, use_ema=True, ema_overwrite_frequency=3), rounds=2)
    frozen = LotteryTicket(functional_cnn(1), rate=0.5, pruned="frozen")
    three_rounds(frozen, keras.optimizers.AdamW(2e-3, weight_decay=0.5), rounds=2)
    for k, i in frozen.kernels().items():
        pruned = ~frozen.masks[k]
        assert np.array_equal(frozen.kernel(k)[pruned], frozen.theta0[i][pruned]), k  # frozen at θ0


@check
def direct_write_never_reaches_the_outputs():
    xte = digits()[2][:64]
    ticket = LotteryTicket(functional_cnn(), rate=0.5)
    ticket.next_round()
    before = logits(ticket.model, xte)
    for k, i in ticket.kernels().items():
        v = ticket.masked.variables[i]
        v.assign(np.where(ticket.masks[k], np.asarray(v.value), 7.0).astype("float32"))  # a user's stray write
    assert np.array_equal(logits(ticket.model, xte), before)
    assert np.allclose([ticket.kernel(k) for k in ticket.kernels()][0][~ticket.masks["conv1/kernel"]], 0)


@check
def a_second_ticket_works_on_a_plain_copy():
    """Masks live on the model's layers: a second ticket of the same model gets a plain copy holding the
    first ticket's effective weights, and the two never write each other's weights or masks."""
    xte = digits()[2][:64]
    model = functional_cnn()
    first = LotteryTicket(model, rate=0.5)
    first.next_round()
    second = LotteryTicket(model, rate=0.5)
    assert second.model is not model and first.model is model
    assert all(np.array_equal(a, b) for a, b in zip(second.theta0, first.get_weights()))
    assert np.array_equal(logits(second.model, xte), logits(first.model, xte))
    before = first.get_weights()
    second.next_round()  # prunes and rewinds its own variables only (twice: past the first ticket)
    second.next_round()
    assert second.weights_remaining < first.weights_remaining
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), before))


@check
def custom_training_loop():
    """The backend's own loop (TF GradientTape in a tf.function; JAX stateless_call + stateless_apply
    jitted once) over two rounds: the masks are state, so the same compiled step sees new masks."""
    xtr, ytr, _, _ = digits()
    ticket = LotteryTicket(functional_cnn(), rate=0.5)
    model, opt = ticket.model, keras.optimizers.Adam(2e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(opt, loss_fn)
    opt.build(model.trainable_variables)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

        def run(x, y):
            step(x, y)
    elif backend == "jax":
        import jax

        def loss_and_state(tv, ntv, x, y):
            out, ntv = model.stateless_call(tv, ntv, x, training=True)
            return loss_fn(y, out), ntv

        grad_fn = jax.value_and_grad(loss_and_state, has_aux=True)

        @jax.jit
        def step(state, x, y):
            tv, ntv, ov = state
            (_, ntv), grads = grad_fn(tv, ntv, x, y)
            tv, ov = opt.stateless_apply(ov, grads, tv)
            return tv, ntv, ov

        def run(x, y):  # the Keras guide's loop: state from the variables, written back after
            state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
                     [v.value for v in opt.variables])
            tv, ntv, ov = step(state, x, y)
            for group, values in ((model.trainable_variables, tv), (model.non_trainable_variables, ntv),
                                  (opt.variables, ov)):
                for v, value in zip(group, values):
                    v.assign(value)
    else:
        return {"skipped": backend}
    for round_ in range(2):
        ticket.start_training()
        for b in range(6):
            run(xtr[b * BATCH:(b + 1) * BATCH], ytr[b * BATCH:(b + 1) * BATCH])
            assert raw_pruned_nonzero(ticket) == 0, (round_, b)
        ticket.next_round()
    return {"backend": backend}


@check
def every_option_runs_and_counts():
    xtr, ytr, xte, yte = digits()
    runs = [dict(criterion="movement"), dict(criterion="large_init_large_final", scope="global"),
            dict(survivors="reinit"), dict(survivors="signed_constant"), dict(rewind="iteration:5"),
            dict(rewind="lr"), dict(rewind="finetune"), dict(block_size=(2, 2)), dict(m_by_n=(2, 4), ignore=["conv1"]),
            dict(pruned="frozen")]
    for options in runs:
        ticket = LotteryTicket(functional_cnn(), rate=0.5, **options)
        compile_(ticket, keras.optimizers.Adam(2e-3))
        for r in range(2):
            ticket.model.fit(xtr[:640], ytr[:640], batch_size=BATCH, epochs=1, verbose=0,
                             callbacks=[ticket.callback()])
            ticket.next_round()
        kept = {k: int(ticket.masks[k].sum()) for k in ticket.pruned_keys()}
        if options.get("scope") == "global" or "block_size" in options or "m_by_n" in options:
            assert 0 < ticket.weights_remaining < 0.6, (options, ticket.weights_remaining)
        else:
            assert kept == ticket.target_counts(2), (options, kept)
        if "m_by_n" in options:  # N:M: at most 2 kept of every 4 along the input axis
            groups = ticket.masks["fc1/kernel"].reshape(-1, 4, 64).sum(axis=1)
            assert groups.max() <= 2
        assert raw_pruned_nonzero(ticket) == 0, options
    return {"configs": len(runs)}


@check
def structured_rounds_keep_units_out_and_shrink_exactly():
    """Unit rounds (BatchNormalization γ score) and refill rounds: whole filters and neurons go, stay zero
    after every batch, the random_mask control keeps the unit counts, and tf_lth.shrink gives a smaller
    Keras 3 model with the ticket's outputs."""
    import tf_lth
    xtr, ytr, xte, yte = digits()
    found = {}
    for granularity, options in (("unit", dict(unit_score="bn_gamma")), ("refill", dict(scope="global"))):
        ticket = LotteryTicket(functional_cnn(), rate=0.5, granularity=granularity, **options)
        compile_(ticket, keras.optimizers.Adam(2e-3))
        for r in range(2):
            watch = ZeroAfterEveryBatch(ticket)
            ticket.model.fit(xtr[:640], ytr[:640], batch_size=BATCH, epochs=1, verbose=0,
                             callbacks=[ticket.callback(), watch])
            assert not watch.bad, (granularity, r, watch.bad[:5])
            ticket.next_round()
        kept = ticket.units_kept()
        if granularity == "unit":
            assert kept == {"conv1": [2, 8], "fc1": [16, 64], "output": [10, 10]}, kept
        control = ticket.control("random_mask")
        assert control.units_kept() == kept, (control.units_kept(), kept)
        small = tf_lth.shrink(ticket)  # the last trained round: one round of pruning
        trained = ticket.trained_model()
        ref, got = logits(trained, xte), logits(small, xte)
        assert np.max(np.abs(ref - got)) <= 1e-5 * np.max(np.abs(ref)), np.max(np.abs(ref - got))
        units = {layer.name: getattr(layer, "filters", None) or layer.units for layer in small.layers
                 if layer.name in kept}
        found[granularity] = units
        assert units["conv1"] < 8 and units["fc1"] < 64 and units["output"] == 10, units
    return found


@check
def controls_supermask_and_folder_round_trip():
    from tf_lth.ticket import store
    from tf_lth.training import evaluation

    xtr, ytr, xte, yte = digits()
    ticket = LotteryTicket(functional_cnn(), rate=0.5)
    compile_(ticket, keras.optimizers.Adam(2e-3))
    ticket.model.fit(xtr, ytr, batch_size=BATCH, epochs=2, verbose=0, callbacks=[ticket.callback()])
    ticket.next_round()
    for kind in ("random_reinit", "random_mask"):
        control = ticket.control(kind)
        assert control.model is not ticket.model and control.flavour.name == "keras3"
        assert abs(control.weights_remaining - ticket.weights_remaining) < 1e-9
        if kind == "random_reinit":
            assert all(np.array_equal(control.masks[k], ticket.masks[k]) for k in ticket.masks)
            assert not np.allclose(control.theta0[0], ticket.theta0[0])
    original = evaluation.untrained_accuracy(ticket, (xte, yte), "original")
    assert 0.0 <= original <= 1.0
    with tempfile.TemporaryDirectory() as folder:
        store.save(ticket, folder)
        loaded = store.load(folder)
        assert loaded.flavour.name == "keras3" and loaded.round == ticket.round
        assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), ticket.get_weights()))
        assert np.allclose(logits(loaded.model, xte), logits(ticket.model, xte), atol=1e-5)
    return {"supermask_original": original}


@check
def saved_keras_file_is_plain_and_sparse():
    xte = digits()[2][:64]
    for make in (functional_cnn, subclassed):
        ticket = LotteryTicket(make(), rate=0.5)
        ticket.next_round()
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "t.keras")
            ticket.model.save(path)
            loaded = keras.saving.load_model(path)
            assert all(type(layer).__name__ == type(layer).__mro__[0].__name__ for layer in loaded.layers)
            assert len(loaded.weights) == len(ticket.masked.variables)  # no mask variables in the file
            assert np.allclose(logits(loaded, xte), logits(ticket.model, xte), atol=1e-5)
            weights = {w.path: np.asarray(w.value) for w in loaded.weights}
            zeros = sum(int((v == 0).sum()) for p, v in weights.items() if p.endswith("kernel"))
            assert zeros >= sum(int((~m).sum()) for m in ticket.masks.values())


@check
def one_line_errors():
    plain = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()], name="plain")
    unbuilt = keras.Sequential([keras.layers.Dense(3)], name="unbuilt")
    lora = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    lora.get_layer("d").enable_lora(2)
    xtr, ytr, _, _ = digits()
    ticket = LotteryTicket(functional_cnn(), rate=0.5)  # 3 calls of 4 steps would run into epoch 2
    ticket.model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=4)
    try:
        ticket.model.fit(xtr[:640], ytr[:640], batch_size=64, epochs=2, verbose=0, callbacks=[ticket.callback()])
    except TfLthError as e:
        assert "must divide the steps per epoch (10)" in str(e), str(e)
    else:
        raise AssertionError("steps_per_execution 4 over epochs of 10 steps accepted")
    for model, words in ((plain, "nothing to find a ticket in"), (unbuilt, "not built"), (lora, "Dense")):
        try:
            LotteryTicket(model)
        except TfLthError as e:
            assert words in str(e) and "\n" not in str(e), str(e)
        else:
            raise AssertionError(f"{model.name} accepted")


@check
def pai_tickets_train_with_pruned_weights_zero():
    """Pruning at init (snip, grasp, synflow: gradients on this backend) reaches its count exactly, its
    pruned weights stay zero after every batch of fit, and the loss gradient matches finite differences."""
    xtr, ytr, xte, yte = digits()
    kept = {}
    for method in ("snip", "grasp", "synflow"):  # the loss gradient, the Hessian-gradient product, SynFlow's
        ticket = LotteryTicket.at_init(functional_cnn(), method, 0.1, data=(xtr, ytr), batches=2, batch_size=BATCH,
                                       iterations=10)  # (SynFlow: 10 iterations, not 100, to stay quick)
        total = sum(m.size for m in ticket.masks.values())
        assert sum(int(m.sum()) for m in ticket.masks.values()) == round(0.1 * total), method
        assert ticket.pruned_at_init["method"] == method and not raw_pruned_nonzero(ticket)
        if method != "snip":
            continue  # one fit is enough for the invariant (a PaI ticket is masks and θ0 like any)
        compile_(ticket, keras.optimizers.Adam(2e-3))
        watch = ZeroAfterEveryBatch(ticket)
        ticket.model.fit(xtr, ytr, batch_size=BATCH, epochs=1, verbose=0,
                         callbacks=[ticket.callback(test_data=(xte, yte)), watch])
        assert watch.batches and not watch.bad, (method, watch.bad[:5])
        kept[method] = ticket.history[-1]["test_accuracy"]
    keras.utils.set_random_seed(3)
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(keras.layers.Dense(4, activation="tanh", name="fc")(inp)))
    x, y = np.random.default_rng(0).normal(size=(8, 3)).astype("float32"), np.arange(8, dtype="int32") % 2
    values = [np.asarray(v, np.float32) for v in model.get_weights()]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    from tf_lth.ticket.flavours import KERAS3

    (grad,) = KERAS3.saliency.quantities(model, [0], values, "gradient", [(x, y)])
    for index in [(0, 0), (1, 2), (2, 3)]:
        moved = []
        for sign in (1, -1):
            w = [v.copy() for v in values]
            w[0][index] += sign * 1e-2
            model.set_weights(w)
            moved.append(float(keras.ops.convert_to_numpy(loss(y, model(x)))))
        assert abs((moved[0] - moved[1]) / 2e-2 - grad[index]) < 2e-3, (index, moved, grad[index])
    return {"test_accuracy": kept}


def main(names):
    for name in names or list(CHECKS):
        started = time.perf_counter()
        try:
            info = CHECKS[name]() or {}
            row = {"check": name, "ok": True, "info": info}
        except Exception:  # the report says which check failed and why
            row = {"check": name, "ok": False, "error": traceback.format_exc()[-3000:]}
        row["seconds"] = round(time.perf_counter() - started, 1)
        row["backend"] = keras.backend.backend()
        row["tensorflow_loaded"] = "tensorflow" in sys.modules
        print("CHECK " + json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
