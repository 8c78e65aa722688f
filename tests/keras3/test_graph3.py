"""Keras 3 models read into channel groups (tf_lth.keras3.graph.describe): residual Add, depthwise block,
BatchNormalization after a conv, Flatten after a conv, Concatenate, layers that fix their groups (Reshape,
a softmax Activation, a shared layer), a Sequential chain and a subclassed model (nothing to slice)."""
import graph_cases
import numpy as np
import pytest

from tf_lth.keras3 import keras
from tf_lth.pruning.groups import find
from tf_lth.ticket import flavours


@pytest.mark.parametrize("case", ["residual", "flatten", "concat", "odd", "sequential", "shared_layer", "nested_and_reused"])
def test_groups_found(case):
    getattr(graph_cases, f"check_{case}")(keras)


def test_a_depthwise_block():
    graph_cases.check_depthwise(keras, "dw/kernel")


def test_a_subclassed_model_is_all_unknown():
    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.fc, self.head = keras.layers.Dense(4, name="fc"), keras.layers.Dense(2, name="head")

        def call(self, x):
            return self.head(self.fc(x))

    model = Net()
    model(np.zeros((1, 3), "float32"))
    graph = flavours.KERAS3.describe(model)
    assert {n.kind for n in graph.nodes.values()} == {"unknown"} and set(graph.nodes) == {"fc", "head"}
    assert find(graph, {"fc/kernel", "head/kernel"}) == []
