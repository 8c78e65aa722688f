"""Both flavours' models read into channel groups (``Flavour.describe``: tf_lth.keras2.graph and
tf_lth.keras3.graph): residual Add, depthwise block, BatchNormalization after a conv, Flatten after a conv,
Concatenate, layers that fix their groups (Reshape, a softmax Activation, a shared layer), a Sequential
chain and a subclassed model (nothing to slice)."""
import graph_cases
import numpy as np
import pytest

from tf_lth.models import networks
from tf_lth.pruning.groups import find
from tf_lth.ticket import flavours

FLAVOURS = {2: flavours.TF_KERAS, 3: flavours.KERAS3}
DEPTHWISE_KEY = {2: "dw/depthwise_kernel", 3: "dw/kernel"}  # each flavour's MaskedModel key


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("case", ["residual", "flatten", "concat", "odd", "sequential", "shared_layer", "nested_and_reused"])
def test_groups_found(case, version):
    getattr(graph_cases, f"check_{case}")(networks.keras_of(version))


@pytest.mark.parametrize("version", [2, 3])
def test_a_depthwise_block(version):
    graph_cases.check_depthwise(networks.keras_of(version), DEPTHWISE_KEY[version])


@pytest.mark.parametrize("version", [2, 3])
def test_a_subclassed_model_is_all_unknown(version):
    keras = networks.keras_of(version)

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.fc, self.head = keras.layers.Dense(4, name="fc"), keras.layers.Dense(2, name="head")

        def call(self, x):
            return self.head(self.fc(x))

    model = Net()
    model(np.zeros((1, 3), "float32"))
    graph = FLAVOURS[version].describe(model)
    assert {n.kind for n in graph.nodes.values()} == {"unknown"} and set(graph.nodes) == {"fc", "head"}
    assert find(graph, {"fc/kernel", "head/kernel"}) == []
