"""Prune rates per kernel from the config (pure Python: no model needed)."""
import pytest

from tf_lth.errors import TfLthError
from tf_lth.pruning.rates import kind, layer_rates

LENET = {"fc1/kernel": ("fc1", "dense"), "fc2/kernel": ("fc2", "dense"), "output/kernel": ("output", "dense")}
CONV = {"conv1/kernel": ("conv1", "conv"), "fc1/kernel": ("fc1", "dense"), "output/kernel": ("output", "dense")}


def test_the_output_layer_gets_half_unless_told():
    assert layer_rates(LENET, {"output"}, None, None) == {"fc1/kernel": 0.2, "fc2/kernel": 0.2, "output/kernel": 0.1}
    assert layer_rates(LENET, {"output"}, 0.4, {"output": 0.3})["output/kernel"] == 0.3
    assert layer_rates(LENET, {"output"}, 0.4, None, layerwise=False)["output/kernel"] == 0.4  # global: one rate


def test_layer_names_win_over_kinds():
    out = layer_rates(CONV, {"output"}, 0.2, {"conv": 0.1, "fc1": 0.5})
    assert out == {"conv1/kernel": 0.1, "fc1/kernel": 0.5, "output/kernel": 0.1}


def test_unknown_keys_name_the_valid_ones():
    with pytest.raises(TfLthError, match=r"rates key\(s\) lstm .*fc1, fc2, output.*\(dense, output\)"):
        layer_rates(LENET, {"output"}, 0.2, {"lstm": 0.3})


@pytest.mark.parametrize("name, expected", [("Conv2D", "conv"), ("SeparableConv1D", "conv"), ("Dense", "dense"),
                                            ("EinsumDense", "einsumdense")])
def test_kinds(name, expected):
    assert kind(name) == expected
