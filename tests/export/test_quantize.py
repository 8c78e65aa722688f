"""Full-integer export (int8_full, int8_qat): int8 kernels and activations, I/O as asked, accuracy,
the ticket's zeros through QAT and conversion, and the one-line failures.

Independent of the export's own checks: kernels and zeros are read back from the written .tflite
files and compared with the ticket's masks, and the QAT model is rebuilt here and its zeros counted.
The tickets are small and briefly trained on mnist5k (LeNet-300-100: one epoch before and after
pruning to 10%; Conv-2 on 28x28x1: 30 steps dense, pruned to 10% keeping the trained weights, 30
steps more), so that accuracies mean something and the file runs in well under a minute.
"""
import json
import os

import numpy as np
import pytest

import tf_lth
from tf_lth import cli, export, keras
from tf_lth import data
from tf_lth.models import networks
from tf_lth.export import quantize
from tf_lth.export import tflite
from tf_lth.config.configs import DEFAULT_EXPORT_FORMATS, EXPORT_FORMATS, ExperimentConfig
from tf_lth.errors import TfLthError
from tf_lth.keras2 import export as keras2_export
from tf_lth.keras2 import qat
from tf_lth.keras2.training import LOSS


def fit(ticket, mnist5k, steps=None):
    ticket.model.compile(optimizer=keras.optimizers.Adam(1.2e-3), loss=LOSS)
    batches = mnist5k.pipeline("train", 60, shuffle=True)
    ticket.model.fit(batches.take(steps) if steps else batches, callbacks=[ticket.callback()], verbose=0)


@pytest.fixture(scope="module")
def lenet(mnist5k):
    keras.utils.set_random_seed(0)
    ticket = tf_lth.LotteryTicket(networks.lenet_300_100(), rates={"dense": 0.9, "output": 0.9})
    fit(ticket, mnist5k)
    ticket.next_round()
    fit(ticket, mnist5k)
    return ticket


@pytest.fixture(scope="module")
def conv2(mnist5k):
    keras.utils.set_random_seed(0)
    net = networks.conv2((28, 28, 1))
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS)
    net.fit(mnist5k.pipeline("train", 60, shuffle=True).take(30), verbose=0)
    trained = net.get_weights()
    ticket = tf_lth.LotteryTicket.one_shot(net, trained, trained, rates={"conv": 0.9, "dense": 0.9, "output": 0.9})
    fit(ticket, mnist5k, steps=30)
    return ticket


@pytest.fixture(scope="module")
def lenet_export(lenet, mnist5k, tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "lenet"
    info = export.export_ticket(lenet.model, path, name="lenet", round=1, dataset=mnist5k, optimize_for="size",
                                formats=("int8_full", "int8_qat"), quantization=quantize.Options(int8_io=True))
    return path, info


@pytest.fixture(scope="module")
def conv2_export(conv2, mnist5k, tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "conv2"
    return path, export.export_ticket(conv2.model, path, dataset=mnist5k, formats=("int8_full",), benchmark=False,
                                      optimize_for="size")


def transposed(mask):
    """A Keras kernel mask in TFLite's layout (output channels first)."""
    return np.moveaxis(mask, -1, 0)


def assert_full_integer_with_the_tickets_zeros(file, ticket, io):
    """Every kernel int8 and computing in int8, input/output of type ``io``, every masked weight 0."""
    found = tflite.kernels(file)
    assert [k.dtype for _, k, _ in found] == [np.int8] * len(ticket.masks)
    assert {out for _, _, out in found} == {"int8"}
    interpreter, _ = tflite.open_tflite(file, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    assert interpreter.get_input_details()[0]["dtype"] == io and interpreter.get_output_details()[0]["dtype"] == io
    for (key, mask), (_, kernel, _) in zip(ticket.masks.items(), found):  # layer order = execution order here
        assert kernel.shape == transposed(mask).shape, key
        assert not np.any(kernel[transposed(mask) == 0]), key
    return sum(int(np.sum(k == 0)) for _, k, _ in found)


def test_new_formats_are_export_formats_but_not_default():
    assert {"int8_full", "int8_qat"} <= set(EXPORT_FORMATS) and {"int8_full", "int8_qat"} <= set(tflite.TFLITE)
    assert "int8_full" not in DEFAULT_EXPORT_FORMATS and "int8_qat" not in DEFAULT_EXPORT_FORMATS
    assert ExperimentConfig(export=("int8_full", "int8_qat")).export == ("int8_full", "int8_qat")
    args = cli.build_parser().parse_args(["export", "run", "--formats", "int8_qat", "--int8-io"])
    assert args.formats == ["int8_qat"] and args.int8_io


def test_lenet_int8_full_is_integer_with_int8_io_and_within_1pp(lenet_export, lenet):
    path, info = lenet_export
    assert sorted(os.listdir(path)) == ["ticket.json", "ticket_int8_full.tflite", "ticket_int8_qat.tflite"]
    full = info["formats"]["int8_full"]
    zeros = assert_full_integer_with_the_tickets_zeros(path / "ticket_int8_full.tflite", lenet, np.int8)
    assert zeros >= sum(int(np.sum(m == 0)) for m in lenet.masks.values()) == full["zeros"]["ticket"]
    assert full["input"]["dtype"] == full["output"]["dtype"] == "int8" and full["kernel_dtypes"] == ["int8"]
    assert full["input"]["scale"] == pytest.approx(1 / 255) and full["input"]["zero_point"] == -128
    assert full["sparse"] and full["bytes_vs_dense"] <= 0.11
    assert info["keras_test_accuracy"] > 0.75  # trained: the 1 pp below means something
    assert abs(full["test_accuracy"] - info["keras_test_accuracy"]) <= 0.01
    assert full["argmax_agreement_beyond_ties"] >= 0.97
    assert full["calibration"] == {"examples": 300, "split": "mnist5k train", "seed": 0}


def test_lenet_int8_qat_keeps_the_zeros_and_beats_int8_full(lenet_export, lenet, mnist5k):
    path, info = lenet_export
    qat, full = info["formats"]["int8_qat"], info["formats"]["int8_full"]
    ticket_zeros = sum(int(np.sum(m == 0)) for m in lenet.masks.values())
    assert qat["qat"]["zeros"] == qat["zeros"]["ticket"] == ticket_zeros
    zeros = assert_full_integer_with_the_tickets_zeros(path / "ticket_int8_qat.tflite", lenet, np.int8)
    assert zeros == qat["zeros"]["tflite"] >= ticket_zeros
    assert qat["test_accuracy"] >= full["test_accuracy"]
    assert qat["argmax_agreement"] >= 0.99 and qat["tolerance"]["argmax_agreement"] == 0.99  # vs its QAT model
    # the file on disk scores what ticket.json says, with float images fed through its int8 input
    x, y = mnist5k.arrays("test")
    interpreter, _ = tflite.open_tflite(path / "ticket_int8_qat.tflite", qat["resolver"])
    assert np.mean(tflite.run_tflite(interpreter, x).argmax(1) == y) == pytest.approx(qat["test_accuracy"], abs=1e-6)
    for kind in ("int8_full", "int8_qat"):  # timed with the resolver that runs it
        r = info["formats"][kind]
        assert r["resolver"] == "BUILTIN_WITHOUT_DEFAULT_DELEGATES" and r["latency_us"]["batch32"] > 0
        assert r["speedup_vs_dense"]["batch1"] > 0
    summary = export.summary(info)
    assert "int8_qat: calibrated on 300" in summary and f"the ticket's {ticket_zeros:,} zeros kept" in summary


def test_qat_model_keeps_every_zero_of_the_ticket(lenet, mnist5k):
    net = keras2_export.stripped(lenet.model)
    model = qat.qat_model(net, mnist5k, quantize.Options(qat_steps=100))
    kernels = {w.name.split(":")[0]: w.numpy() for w in model.weights if w.name.endswith("kernel:0")}
    assert len(kernels) == len(lenet.masks)
    moved = 0
    for key, mask in lenet.masks.items():
        np.testing.assert_array_equal(kernels[key] != 0, mask.astype(bool), err_msg=key)
        moved += int(np.sum(kernels[key] != net.get_layer(key.split("/")[0]).kernel.numpy()))
    assert moved > 0.5 * sum(int(m.sum()) for m in lenet.masks.values())  # it trained the survivors (not dead units)


def test_conv2_int8_full_float_io_within_1pp(conv2_export, conv2):
    path, info = conv2_export
    full = info["formats"]["int8_full"]
    assert_full_integer_with_the_tickets_zeros(path / "ticket_int8_full.tflite", conv2, np.float32)
    assert full["input"]["dtype"] == full["output"]["dtype"] == "float32"
    assert "CONV_2D" in full["ops"] and full["sparse"] and full["bytes_vs_dense"] <= 0.09
    assert info["keras_test_accuracy"] > 0.75
    assert abs(full["test_accuracy"] - info["keras_test_accuracy"]) <= 0.01


# --- the checks fail where they should -------------------------------------------------------------


def test_integer_check_refuses_float_and_dynamic_range_files(lenet_export, lenet, tmp_path):
    info = export.export_ticket(lenet.model, tmp_path / "x", formats=("tflite", "int8"), benchmark=False,
                                optimize_for="size")
    for kind in ("tflite", "int8"):  # fp32 kernels; int8 kernels with float activations
        with pytest.raises(TfLthError, match=r"is not full-integer as asked .*asked float32\)$"):
            quantize.integer_report("int8_full", (tmp_path / "x" / tflite.TFLITE[kind][0]).read_bytes(), False)
    assert info["formats"]["int8"]["sparse"]
    int8_io = (lenet_export[0] / "ticket_int8_full.tflite").read_bytes()
    with pytest.raises(TfLthError, match=r"input int8, output int8, asked float32"):
        quantize.integer_report("int8_full", int8_io, int8_io=False)


def test_zero_check_fails_on_a_filled_zero_or_a_missing_kernel():
    ticket = [("fc1", np.array([[0.0, 1.0], [2.0, 0.0]]))]
    assert quantize.zeros_kept("int8_qat", ticket, [("t", np.array([[0, 3], [0, 0]], np.int8))]) == {
        "ticket": 2, "tflite": 3, "tflite_from_rounding": 1}
    with pytest.raises(TfLthError, match=r"has 1 non-zero weights where the ticket's fc1 has zeros"):
        quantize.zeros_kept("int8_qat", ticket, [("t", np.array([[0, 3], [0, 5]], np.int8))])
    with pytest.raises(TfLthError, match=r"no kernel shaped like fc1's \[2, 2\]"):
        quantize.zeros_kept("int8_qat", ticket, [("t", np.zeros((2, 3), np.int8))])


def test_qat_that_fills_a_zero_fails_the_export(lenet, mnist5k, tmp_path, monkeypatch):
    real = qat.qat_model

    def leaky(net, data, options):
        model = real(net, data, options)
        kernel = next(w for w in model.weights if w.name == "fc2/kernel:0")
        kernel.assign(np.where(kernel.numpy() == 0, 1e-3, kernel.numpy()))
        return model

    monkeypatch.setattr(qat, "qat_model", leaky)
    with pytest.raises(TfLthError) as failed:
        export.export_ticket(lenet.model, tmp_path / "leak", dataset=mnist5k, formats=("int8_qat",),
                             benchmark=False, quantization=quantize.Options(qat_steps=5))
    assert ("was written without int8_qat, which failed: QAT changed the ticket's zeros in fc2 (TF-MOT's "
            "prune-preserving scheme failed) (leave it out of formats=") in str(failed.value)
    assert os.listdir(tmp_path / "leak") == ["ticket.json"]  # nothing shipped but the reason
    assert "QAT changed the ticket's zeros" in json.loads((tmp_path / "leak" / "ticket.json").read_text())["failed"]["int8_qat"]


def tiny(mnist5k, n):
    """mnist5k with only ``n`` training examples."""
    return data.Dataset("tiny", mnist5k.x_train[:n], mnist5k.y_train[:n], mnist5k.x_val, mnist5k.y_val,
                        mnist5k.x_test, mnist5k.y_test)


def bn_net():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(x))


FAILURES = {
    "no_data": "int8_full calibrates on training examples: give the ticket's dataset (dataset= / --dataset)",
    "tiny_set": "the representative set for int8_full has 50 examples (tiny has 50 for training), under the 100 "
                "that stable activation ranges need: calibrate on >= 100 (Options(calibration=)) of a larger dataset",
    "small_calibration": "the representative set for int8_full has 99 examples (mnist5k has 3500 for training)",
    "batch_norm": "int8_qat cannot wrap bn (BatchNormalization): TF-MOT's sparsity-preserving QAT takes Dense, "
                  "Conv2D, DepthwiseConv2D and weightless layers (pooling, Flatten, ...); export int8_full instead",
    "no_steps": "int8_qat needs at least one fine-tuning step (qat_steps=0)",
}


@pytest.mark.parametrize("case", FAILURES)
def test_failures_are_one_line_and_write_nothing(mnist5k, tmp_path, case):
    model, dataset, formats, options = tf_lth.networks.lenet_300_100(), mnist5k, ("int8_full",), quantize.Options()
    if case == "no_data":
        dataset = None
    elif case == "tiny_set":
        dataset = tiny(mnist5k, 50)
    elif case == "small_calibration":
        options = quantize.Options(calibration=99)
    elif case == "batch_norm":
        model, formats = bn_net(), ("int8_full", "int8_qat")
    elif case == "no_steps":
        formats, options = ("int8_qat",), quantize.Options(qat_steps=0)
    with pytest.raises(TfLthError) as failed:
        export.export_ticket(model, tmp_path / "out", dataset=dataset, formats=formats, quantization=options)
    assert FAILURES[case] in str(failed.value) and "\n" not in str(failed.value)
    assert os.listdir(tmp_path) == []
