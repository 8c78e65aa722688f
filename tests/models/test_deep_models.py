"""CIFAR ResNet-20 and VGG-16 as OpenLTH builds them: the published parameter counts, BatchNorm left
unwrapped (and rewound with the weights, as OpenLTH rewinds its whole state dict), and two rounds of
late rewinding (``iteration:K``, global pruning, output ignored) of each on Fashion-MNIST padded to
32x32x3: masks frozen, θk restored exactly; export parity for ResNet-20.

VGG-16 (14.7 M parameters) trains only rounds of a few steps on a few hundred images: more is too
slow on CPU.
"""
import numpy as np
import pytest

import tf_lth
from tf_lth import export, keras
from tf_lth import data
from tf_lth.models import networks
from tf_lth.keras2.training import LOSS
from tf_lth.keras2.wrapper import MaskedWrapper

from conftest import require_fashion
from helpers import tflite_logits

K, STEPS, BATCH = 20, 40, 60  # ResNet-20: θk after 20 steps; rounds of 40 steps (2 epochs of 1,200 images)
VGG_K, VGG_STEPS, VGG_BATCH = 5, 10, 32  # VGG-16: θk after 5 steps; rounds of 10 steps (1 epoch of 320 images)
ROUNDS = 2  # rounds pruned and retrained after round 0


def counts(model) -> tuple[int, int]:
    """Trainable and non-trainable (BatchNorm moving mean and variance) parameter counts."""
    size = lambda weights: sum(int(np.prod(w.shape)) for w in weights)  # noqa: E731
    return size(model.trainable_weights), size(model.non_trainable_weights)


def of_class(model, cls) -> list:
    return [layer for layer in model.layers if type(layer) is cls]


@pytest.fixture(scope="module")
def vgg():
    keras.utils.set_random_seed(0)
    return networks.vgg16()


def test_resnet20_is_openlths_cifar_resnet_20():
    model = networks.resnet20()
    assert counts(model) == (272_474, 1_568)  # OpenLTH's cifar_resnet_20: 272,474 parameters
    convs = of_class(model, keras.layers.Conv2D)
    assert len(convs) == 21 and not any(c.use_bias for c in convs)  # 19 + 2 projection shortcuts
    assert [c.name for c in convs if c.strides == (2, 2)] == [
        "block4_conv1", "block4_shortcut", "block7_conv1", "block7_shortcut"]
    assert [c.kernel_size for c in convs if "shortcut" in c.name] == [(1, 1), (1, 1)]
    assert len(of_class(model, keras.layers.BatchNormalization)) == 21
    assert model.get_layer("block9_relu").output_shape == (None, 8, 8, 64)
    assert (model.input_shape, model.output_shape, model.layers[-1].name) == ((None, 32, 32, 3), (None, 10), "output")


def test_vgg16_is_openlths_cifar_vgg_16(vgg):
    assert counts(vgg) == (14_728_266, 8_448)  # OpenLTH's cifar_vgg_16: 14,728,266 parameters
    convs = of_class(vgg, keras.layers.Conv2D)
    assert [c.filters for c in convs] == [f for f in networks.VGG16_PLAN if f != "M"]
    assert all(c.use_bias and c.kernel_size == (3, 3) for c in convs)  # OpenLTH's Conv2d keeps its bias
    assert len(of_class(vgg, keras.layers.MaxPooling2D)) == 4
    assert vgg.get_layer("conv13_relu").output_shape == (None, 2, 2, 512)
    assert vgg.get_layer("output").kernel.shape == (512, 10) and vgg.output_shape == (None, 10)


def test_lottery_ticket_wraps_vgg16_convs_and_dense_only(vgg):
    ticket = tf_lth.LotteryTicket(vgg, scope="global", ignore=("output",))
    wrapped = {layer.layer.name for layer in ticket.model.layers if isinstance(layer, MaskedWrapper)}
    assert wrapped == {f"conv{i}" for i in range(1, 14)} | {"output"}
    assert set(ticket.masks) == {f"{name}/kernel" for name in wrapped}  # biases and BN are not pruned
    assert {type(layer).__name__ for layer in ticket.masked.layers.values()} == {"Conv2D", "Dense"}
    assert ticket.unpruned_layers == [f"conv{i}_bn" for i in range(1, 14)]
    x = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
    np.testing.assert_allclose(ticket.model(x, training=False), vgg(x, training=False), rtol=1e-5, atol=1e-5)


# --- two rounds of late rewinding on real data -------------------------------------------------


def pad_rgb(x: np.ndarray) -> np.ndarray:
    """uint8 28x28x1 images to 32x32x3: 2 black pixels on every side, the grey channel repeated."""
    return np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)


@pytest.fixture(scope="module")
def fashion32():
    """1,200 / 60 / 256 Fashion-MNIST images padded to 32x32x3."""
    fm = data.load("fashion_mnist", data_dir=require_fashion())
    return data.Dataset("fashion_mnist_32x32x3", pad_rgb(fm.x_train[:1200]), fm.y_train[:1200],
                        pad_rgb(fm.x_val[:60]), fm.y_val[:60], pad_rgb(fm.x_test[:256]), fm.y_test[:256])


class Snapshot(keras.callbacks.Callback):
    """Every weight of the ticket (as it computes with them) after optimizer step ``step``."""

    def __init__(self, ticket, step):
        super().__init__()
        self.ticket, self.step, self.weights = ticket, step, None

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            self.weights = self.ticket.get_weights()


def late_rewinding_rounds(model, x, y, k: int, steps: int, batch: int, learning_rate: float = 0.05):
    """``model`` as a ticket (``iteration:k`` rewinding, global pruning, output ignored) trained for
    round 0 and ``ROUNDS`` pruned rounds of ``steps`` steps each on ``(x, y)`` (whole epochs of
    ``batch``): the ticket and, per round, the weights at the start, at the end, and θk as an
    independent spy saw it."""
    ticket = tf_lth.LotteryTicket(model, rewind=f"iteration:{k}", scope="global", ignore=("output",))
    ticket.model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9), loss=LOSS, jit_compile=False)
    record = {"theta0": [a.copy() for a in ticket.theta0], "start": [], "end": [], "masks": []}
    spy = Snapshot(ticket, k)
    for round_ in range(ROUNDS + 1):
        if round_:
            ticket.next_round()
        record["start"].append(ticket.get_weights())
        record["masks"].append({key: m.copy() for key, m in ticket.masks.items()})
        ticket.model.fit(x, y, batch_size=batch, epochs=steps * batch // len(x), shuffle=False, verbose=0,
                         callbacks=[ticket.callback(), *([spy] if round_ == 0 else [])])
        record["end"].append(ticket.get_weights())
        record["raw_kernels"] = {key: ticket.kernel(key) for key in ticket.masks}
    record["thetak"] = spy.weights
    return ticket, record


def bn_state(ticket, weights) -> dict:
    """BatchNorm variable name -> its value in ``weights`` (gammas, betas, moving means and variances)."""
    return {v.name: weights[i] for i, v in enumerate(ticket.masked.variables) if "_bn/" in v.name}


def assert_thetak_restored(ticket, record) -> None:
    """θk is the spy's, and every pruned round started from it exactly (masked; BatchNorm state too)."""
    thetak, kernels = record["thetak"], ticket.kernels()
    assert thetak is not None and ticket.thetak is not None
    for a, b in zip(ticket.thetak, thetak, strict=True):
        np.testing.assert_array_equal(a, b)
    for round_ in range(1, ROUNDS + 1):
        masks, start = record["masks"][round_], record["start"][round_]
        for i, value in enumerate(start):
            key = next((k for k, j in kernels.items() if j == i), None)
            expected = thetak[i] if key is None else thetak[i] * masks[key]
            np.testing.assert_array_equal(value, expected, err_msg=f"round {round_}: {ticket.masked.variables[i].name}")
    # the check means something: BN's moving statistics at θk are neither θ0's nor the trained ones
    moving = {name: value for name, value in bn_state(ticket, thetak).items() if "moving_mean" in name}
    assert moving
    for name, value in moving.items():
        assert not np.array_equal(value, bn_state(ticket, record["theta0"])[name]), name
        assert not np.array_equal(value, bn_state(ticket, record["end"][0])[name]), name


def assert_masks_frozen(ticket, record) -> None:
    """Pruned weights stay exactly zero through each pruned round (kept ones train), and never come back."""
    for round_ in range(1, ROUNDS + 1):
        masks, end = record["masks"][round_], record["end"][round_]
        for key, i in ticket.kernels().items():
            assert np.all(end[i][~masks[key]] == 0), (round_, key)
            assert not np.array_equal(end[i][masks[key]], record["start"][round_][i][masks[key]]), key  # it trained
    for key, kernel in record["raw_kernels"].items():  # the variables themselves, not only what get_weights shows
        assert np.all(kernel[~ticket.masks[key]] == 0), key
    for earlier, later in zip(record["masks"][1:], record["masks"][2:]):
        assert all(np.all(later[k] <= earlier[k]) for k in later)  # pruned weights never come back


def assert_global_pruning(ticket, record, total: int) -> None:
    """Each round keeps 0.8 of the pruned kernels' weights (``total`` of them) at one global threshold;
    the output layer stays dense."""
    pruned = ticket.pruned_keys()
    assert "output/kernel" not in pruned and ticket.masks["output/kernel"].all()
    assert sum(ticket.masks[k].size for k in pruned) == total
    for round_ in range(1, ROUNDS + 1):
        masks = record["masks"][round_]
        assert sum(int(masks[k].sum()) for k in pruned) == round(total * 0.8 ** round_)
    sparsities = [1 - ticket.masks[k].mean() for k in pruned]
    assert max(sparsities) - min(sparsities) > 0.05  # one threshold over all layers, not 20% of each


@pytest.fixture(scope="module")
def resnet_rounds(fashion32):
    """ResNet-20 trained for round 0 and ``ROUNDS`` pruned rounds of ``STEPS`` steps of 1,200 images."""
    keras.utils.set_random_seed(0)
    x, y = fashion32.arrays("train")
    return late_rewinding_rounds(networks.resnet20(), x, y, K, STEPS, BATCH)


def test_resnet20_batchnorm_is_left_unwrapped(resnet_rounds):
    ticket, _ = resnet_rounds
    wrapped = [layer for layer in ticket.model.layers if isinstance(layer, MaskedWrapper)]
    assert {type(w.layer) for w in wrapped} == {keras.layers.Conv2D, keras.layers.Dense} and len(wrapped) == 22
    norms = [layer for layer in ticket.model.layers if layer.name.endswith("_bn")]
    assert len(norms) == 21 and all(type(layer) is keras.layers.BatchNormalization for layer in norms)
    assert len(ticket.unpruned_layers) == 21 and all(n.endswith("_bn") for n in ticket.unpruned_layers)
    assert set(ticket.rates.values()) == {0.2} and len(ticket.rates) == 22


def test_resnet20_theta_k_is_restored_exactly_with_batchnorm_state(resnet_rounds):
    assert_thetak_restored(*resnet_rounds)


def test_resnet20_masks_stay_frozen_through_training(resnet_rounds):
    assert_masks_frozen(*resnet_rounds)


def test_resnet20_global_pruning_keeps_080_per_round_and_spares_output(resnet_rounds):
    assert_global_pruning(*resnet_rounds, total=270_256)  # every conv kernel: ResNet-20's weights but BN and output


def test_resnet20_export_parity(resnet_rounds, fashion32, tmp_path):
    ticket, _ = resnet_rounds
    info = export.export_ticket(ticket.model, tmp_path / "resnet20", name="resnet20", round=ROUNDS,
                                dataset=fashion32, formats=("saved_model", "tflite", "int8"), benchmark=False,
                                optimize_for="size")
    x, _ = fashion32.arrays("test")
    logits = ticket.model.predict(x, verbose=0)
    scale = max(1.0, float(np.abs(logits).max()))
    assert np.abs(tflite_logits(tmp_path / "resnet20", "tflite", info, x) - logits).max() <= 1e-5 * scale
    int8 = tflite_logits(tmp_path / "resnet20", "int8", info, x)
    assert np.mean(int8.argmax(1) == logits.argmax(1)) >= 0.99
    assert info["formats"]["tflite"]["sparse"]  # at 64% of the weights int8 is smaller stored dense: so it is
    int8 = info["formats"]["int8"]
    assert int8["bytes"] == min(o["bytes"] for o in int8["storage_choice"].values() if isinstance(o, dict))
    loaded = keras.models.load_model(tmp_path / "resnet20" / "saved_model", compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), logits, rtol=0, atol=1e-5 * scale)
    for key, mask in ticket.masks.items():
        np.testing.assert_array_equal(loaded.get_layer(key.split("/")[0]).kernel.numpy() != 0, mask, err_msg=key)
    for layer in ticket.unpruned_layers:  # BN's moving statistics go into the export as trained
        for a, b in zip(loaded.get_layer(layer).weights, ticket.source.get_layer(layer).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    assert info["parameters"]["total"] == 272_474 + 1_568  # the export counts BN's moving statistics too


# --- VGG-16: two rounds of late rewinding, a few steps each ----------------------------------------


@pytest.fixture(scope="module")
def vgg_rounds(fashion32):
    keras.utils.set_random_seed(0)
    x, y = fashion32.arrays("train")
    n = VGG_STEPS * VGG_BATCH  # one epoch a round
    return late_rewinding_rounds(networks.vgg16(), x[:n], y[:n], VGG_K, VGG_STEPS, VGG_BATCH, learning_rate=0.01)


def test_vgg16_two_rounds_of_late_rewinding(vgg_rounds):
    """Round 0 and two pruned rounds of 10 steps of 32 images, θk after 5 steps: each round starts from
    θk exactly (BatchNorm state included), pruned weights stay zero, one global cut of 20% of the 13
    conv kernels a round, the output layer dense."""
    ticket, record = vgg_rounds
    assert ticket.round == ROUNDS and ticket.model.optimizer.iterations.numpy() == VGG_K + VGG_STEPS
    assert_thetak_restored(ticket, record)
    assert_masks_frozen(ticket, record)
    assert_global_pruning(ticket, record, total=14_714_688 - 8_448 // 2)  # conv kernels: conv weights less biases


@pytest.mark.slow  # converting 14.7 M weights adds ~1.5 min to the suite; ResNet-20's parity test runs in CI
def test_vgg16_export_parity(vgg_rounds, fashion32, tmp_path):
    """As for the other models: the sparse fp32 TFLite file of the pruned VGG-16 computes what Keras does."""
    ticket, _ = vgg_rounds
    out = tmp_path / "vgg16"
    info = export.export_ticket(ticket.model, out, name="vgg16", round=ROUNDS, dataset=fashion32,
                                formats=("tflite",), benchmark=False, optimize_for="size")
    xt = fashion32.arrays("test")[0][:256]
    logits = ticket.model.predict(xt, verbose=0)
    scale = max(1.0, float(np.abs(logits).max()))
    assert np.abs(tflite_logits(out, "tflite", info, xt) - logits).max() <= 1e-5 * scale
    assert info["formats"]["tflite"]["sparse"]
