"""The export's shared rules, on hand-made reports (no conversion): which storage a format is written in
(tf_lth.export.formats), old ticket.json field names still read, and the check batch in the model's
pixel range with its outputs' name (tf_lth.export.checks)."""
import numpy as np

from tf_lth.data.input_scale import InputScale
from tf_lth.export.checks import check_batch, output_name
from tf_lth.export.formats import Candidate, choose, field


def candidate(storage, bytes_, us, resolver="AUTO"):
    return Candidate(storage, b"", {"bytes": bytes_, "latency_us": {"batch1": us}, "resolver": resolver,
                                    "ops": ["DENSIFY"] if storage == "sparse" else []})


def test_the_storage_follows_the_rule():
    sparse, dense = candidate("sparse", 100, 20.0, "BUILTIN_WITHOUT_DEFAULT_DELEGATES"), candidate("dense", 300, 5.0)
    assert choose("int8", [sparse, dense], "size", True)[0] is sparse
    chosen, why = choose("int8", [sparse, dense], "latency", True)
    assert chosen is dense and why.startswith("latency: 5.0 us stored dense vs 20.0 us sparse")
    close = candidate("dense", 300, 19.5)  # within 5%: the same speed, the smaller file
    chosen, why = choose("tflite", [sparse, close], "latency", True)
    assert chosen is sparse and "the same speed" in why
    chosen, why = choose("int8", [sparse, dense], "latency", False)  # not measured: the runtime's behaviour
    assert chosen is dense and why.startswith("latency (not measured): stored sparse it runs on")
    chosen, why = choose("int8", [dense], "size", True)
    assert chosen is dense and why == "stored dense: the sparse storage failed its check"


def test_old_field_names_are_still_read():
    assert field({"max_abs_logit_diff": 0.1}, "max_abs_output_diff") == 0.1
    assert field({"max_abs_output_diff": 0.2, "max_abs_logit_diff": 0.1}, "max_abs_output_diff") == 0.2
    assert field({}, "max_abs_output_diff") is None


def test_the_check_batch_is_in_the_models_pixel_range():
    raw, unit = InputScale("raw", ""), InputScale("unit", "")
    x, source = check_batch((4, 4, 1), None, None, "", raw)
    assert source == "uniform [0, 255), seed 0" and x.max() > 1 and x.min() >= 0 and x.shape == (256, 4, 4, 1)
    x, source = check_batch((4, 4, 1), None, None, "", unit)
    assert source == "uniform [0, 1), seed 0" and x.max() < 1
    test = (np.ones((300, 4, 4, 1)), np.zeros(300))
    assert check_batch((4, 4, 1), test, None, "digits", unit)[1] == "digits test[:256]"


def test_outputs_are_named_by_the_last_activation():
    import keras

    logits = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    probabilities = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    assert (output_name(logits), output_name(probabilities)) == ("logits", "probabilities")
