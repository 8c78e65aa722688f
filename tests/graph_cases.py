"""Hand-built models and the channel groups each flavour's ``graph.describe`` must find in them, shared by
tests/ticket/test_flavour_graphs.py (each passes its flavour's Keras) and
tests/export/test_shrink.py. Every builder takes ``keras`` and returns a built model."""
import numpy as np

from tf_lth.export.shrink import layer_weights

from tf_lth.pruning.groups import find, prunable
from tf_lth.ticket import flavours


def residual(keras):
    """conv-BN-ReLU, conv-BN, plus a 1x1 shortcut conv, added; global pooling; logits."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    shortcut = keras.layers.Conv2D(5, 1, name="short")(inputs)
    x = keras.layers.Add(name="add")([x, shortcut])
    x = keras.layers.Activation("relu", name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="residual")


def depthwise(keras):
    """MobileNetV2's inverted block: 1x1 expand, BN, ReLU6, depthwise 3x3, BN, ReLU6, 1x1 project."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(6, 1, name="expand")(inputs)
    x = keras.layers.BatchNormalization(name="expand_bn")(x)
    x = keras.layers.ReLU(6.0, name="expand_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.ReLU(6.0, name="dw_relu")(x)
    x = keras.layers.Conv2D(4, 1, name="project")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="depthwise")


def flatten(keras):
    """conv 3, 2x2 max-pool, Flatten, Dense 5, logits."""
    inputs = keras.Input((4, 4, 1), name="image")
    x = keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(5, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x), name="flatten")


def concat(keras):
    """Two convs (2 and 3 filters) concatenated on channels, then a conv reading both."""
    inputs = keras.Input((6, 6, 1), name="image")
    a = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="a")(inputs)
    b = keras.layers.Conv2D(3, 1, activation="relu", name="b")(inputs)
    x = keras.layers.Concatenate(name="cat")([a, b])
    x = keras.layers.Conv2D(4, 3, padding="same", name="c")(x)
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x), name="concat")


def odd(keras):
    """A Reshape after fc1 and a softmax Activation after fc2: both groups stay whole; fc3 is free."""
    inputs = keras.Input((6,), name="x")
    x = keras.layers.Dense(6, name="fc1")(inputs)
    x = keras.layers.Reshape((2, 3), name="reshape")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(4, name="fc2")(x)
    x = keras.layers.Activation("softmax", name="soft")(x)
    x = keras.layers.Dense(5, activation="relu", name="fc3")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x), name="odd")


def describe(model, masked_depthwise=True):
    """(graph, groups by producer layer, all groups) of ``model``, every producer kernel masked."""
    graph = flavours.of_model(model).describe(model)
    kinds = ("producer", "depthwise") if masked_depthwise else ("producer",)
    groups = find(graph, {n.kernel for n in graph.nodes.values() if n.kind in kinds})
    return graph, {p.layer: g for g in groups for p in g.producers()}, groups


def roles(group):
    return {(m.layer, m.role) for m in group.members}


def check_residual(keras):
    graph, by, groups = describe(residual(keras))
    assert graph.outputs == ["out"] and graph.nodes["image"].kind == "input"
    assert {n: graph.nodes[n].kind for n in ("c1", "bn1", "r1", "add", "gap", "relu")} == {
        "c1": "producer", "bn1": "channelwise", "r1": "channelwise", "add": "merge", "gap": "channelwise",
        "relu": "channelwise"}
    assert graph.nodes["c1"].macs == 8 * 8 * 9 * 3 * 4 and graph.nodes["c1"].kernel == "c1/kernel"
    assert by["c1"].size == 4 and roles(by["c1"]) == {("c1", "out"), ("bn1", "channel"), ("r1", "channel"), ("c2", "in")}
    assert by["c2"] is by["short"] and by["c2"].size == 5 and by["c2"].fixed is None
    assert roles(by["c2"]) >= {("c2", "out"), ("short", "out"), ("bn2", "channel"), ("gap", "channel"), ("out", "in")}
    assert "model output" in by["out"].fixed
    assert [g.layers() for g in groups if g.fixed == "the model's input"] == [["c1", "short"]]
    assert len(prunable(groups)) == 2


def check_depthwise(keras, depthwise_key):
    model = depthwise(keras)
    graph, by, _ = describe(model)
    assert graph.nodes["dw"].kind == "depthwise" and graph.nodes["dw"].kernel == depthwise_key
    assert graph.nodes["dw"].macs == 8 * 8 * 9 * 6
    assert roles(by["expand"]) == {("expand", "out"), ("expand_bn", "channel"), ("expand_relu", "channel"),
                                   ("dw", "channel"), ("dw_bn", "channel"), ("dw_relu", "channel"), ("project", "in")}
    assert by["expand"].fixed is None
    _, by, _ = describe(model, masked_depthwise=False)  # a depthwise kernel without a mask does not fix it
    assert by["expand"].fixed is None
    masked = flavours.of_model(model).masked_model(model)
    assert set(masked.kernels) <= {n.kernel for n in graph.nodes.values() if n.kernel}


def check_flatten(keras):
    graph, by, _ = describe(flatten(keras))
    assert graph.nodes["flat"].kind == "flatten" and graph.nodes["flat"].in_shapes == [(2, 2, 3)]
    rows = [m.rows for m in by["conv"].members if m.role == "in"]
    assert len(rows) == 1 and rows[0].tolist() == [[p * 3 + c for c in range(3)] for p in range(4)]
    assert roles(by["conv"]) == {("conv", "out"), ("pool", "channel"), ("fc", "in")}


def check_concat(keras):
    graph, by, _ = describe(concat(keras))
    assert graph.nodes["cat"].kind == "concat" and graph.nodes["cat"].inputs == ["a", "b"]
    assert [m.rows.tolist() for m in by["a"].members if m.role == "in"] == [[[0, 1]]]
    assert [m.rows.tolist() for m in by["b"].members if m.role == "in"] == [[[2, 3, 4]]]
    assert by["a"].fixed is None and by["b"].fixed is None


def check_odd(keras):
    graph, by, _ = describe(odd(keras))
    assert graph.nodes["reshape"].kind == "unknown" and graph.nodes["soft"].kind == "unknown"
    assert "reshape (Reshape)" in by["fc1"].fixed
    assert "soft (Activation)" in by["fc2"].fixed
    assert by["fc3"].fixed is None


def check_sequential(keras):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="fc"), keras.layers.Dropout(0.1, name="drop"),
                              keras.layers.Dense(2, name="out")], name="chain")
    graph, by, _ = describe(model)
    assert list(graph.nodes) == ["chain:input", "fc", "drop", "out"] and graph.outputs == ["out"]
    assert roles(by["fc"]) == {("fc", "out"), ("drop", "channel"), ("out", "in")} and by["fc"].fixed is None


def check_shared_layer(keras):
    inputs = keras.Input((4,), name="x")
    shared = keras.layers.Dense(4, name="shared")
    x = shared(shared(keras.layers.Dense(4, name="fc")(inputs)))
    graph, by, _ = describe(keras.Model(inputs, keras.layers.Dense(2, name="out")(x)))
    assert graph.nodes["shared"].kind == "unknown" and "shared" in by["fc"].fixed


def check_nested_and_reused(keras):
    """A Sequential inside a functional model is one unknown layer; layers a second model calls again are
    read with this model's shapes."""
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, name="inner_fc")], name="inner")
    inputs = keras.Input((4,), name="x")
    fc, head = keras.layers.Dense(6, name="fc"), keras.layers.Dense(2, name="head")
    first = keras.Model(inputs, head(inner(fc(inputs))))
    graph, by, _ = describe(first)
    assert graph.nodes["inner"].kind == "unknown" and "inner (Sequential)" in by["fc"].fixed
    assert graph.nodes["head"].kind == "producer" and graph.nodes["head"].in_shapes == [(3,)]
    again = keras.Input((4,), name="again")
    graph, by, _ = describe(keras.Model(again, head(keras.layers.Dense(3, name="fc2")(again))))
    assert graph.nodes["head"].kind == "producer" and graph.nodes["head"].in_shapes == [(3,)]  # once here
    assert list(graph.nodes) == ["again", "fc2", "head"] and graph.nodes["fc2"].out_shape == (3,)


def masks_of(model, graph, kinds=("producer",)):
    """Every kernel of ``graph``'s producers (and depthwise layers, by ``kinds``) unmasked."""
    keys = [n.kernel for n in graph.nodes.values() if n.kind in kinds and n.kernel]
    values = layer_weights(model, [k.split("/")[0] for k in keys])
    return {k: np.ones(values[k.split("/")[0]][k.split("/", 1)[1]].shape, bool) for k in keys}
