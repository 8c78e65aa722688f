"""Channel groups on hand-built graphs (no TensorFlow, no Keras): which channels are tied, where they live,
why a group stays whole, what removing channels masks, and the multiply-adds that are left."""
import numpy as np
import pytest

from tf_lth.pruning import layer_kinds
from tf_lth.pruning.groups import Graph, Node, alive, find, kept_channels, macs, prunable, remove


def graph(*nodes, outputs=None):
    return Graph({n.name: n for n in nodes}, outputs or [nodes[-1].name])


def inp(name, shape):
    return Node(name, "input", [], [], tuple(shape))


def dense(name, source, n_in, units, positions=1):
    return Node(name, "producer", [source], [(n_in,)], (units,), units=units, kernel=f"{name}/kernel",
                macs=positions * n_in * units)


def conv(name, source, hw, n_in, units, k=3):
    return Node(name, "producer", [source], [(hw, hw, n_in)], (hw, hw, units), units=units, kernel=f"{name}/kernel",
                spatial=k * k, macs=hw * hw * k * k * n_in * units)


def chan(name, source, shape, kind="channelwise", **extra):
    return Node(name, kind, [source], [tuple(shape)], tuple(shape), **extra)


def by_producer(groups):
    return {p.layer: g for g in groups for p in g.producers()}


def ones(g, shapes):
    return {f"{n}/kernel": np.ones(s, bool) for n, s in shapes.items()}


def test_a_chain_of_dense_layers():
    g = graph(inp("x", (3,)), dense("fc1", "x", 3, 4), dense("fc2", "fc1", 4, 5), dense("out", "fc2", 5, 2))
    groups = find(g, {"fc1/kernel", "fc2/kernel", "out/kernel"})
    found = by_producer(groups)
    assert found["fc1"].size == 4 and found["fc1"].fixed is None
    assert [(m.layer, m.role) for m in found["fc1"].members] == [("fc1", "out"), ("fc2", "in")]
    assert "model output" in found["out"].fixed
    assert [x for x in groups if x.fixed == "the model's input"][0].layers() == ["fc1"]
    assert {x.producers()[0].layer for x in prunable(groups)} == {"fc1", "fc2"}


def test_remove_masks_units_and_rows_and_macs_scale():
    g = graph(inp("x", (3,)), dense("fc1", "x", 3, 4), dense("fc2", "fc1", 4, 5), dense("out", "fc2", 5, 2))
    masks = ones(g, {"fc1": (3, 4), "fc2": (4, 5), "out": (5, 2)})
    groups = find(g, set(masks))
    fc1 = by_producer(groups)["fc1"]
    keep = np.array([True, False, True, False])
    after = remove(fc1, keep, masks)
    assert masks["fc1/kernel"].all()  # the given masks are not changed
    assert (after["fc1/kernel"].any(axis=0) == keep).all() and (after["fc2/kernel"].any(axis=1) == keep).all()
    assert (alive(fc1, after) == keep).all()
    kept = kept_channels(groups, after)
    assert kept[fc1.index].tolist() == keep.tolist() and all(kept[x.index].all() for x in groups if x.fixed)
    assert macs(g, groups) == {"fc1": 12, "fc2": 20, "out": 10}
    assert macs(g, groups, kept) == {"fc1": 6, "fc2": 10, "out": 10}


def test_a_residual_add_ties_the_branches():
    g = graph(inp("x", (8, 8, 3)), conv("c1", "x", 8, 3, 4), chan("bn", "c1", (8, 8, 4), weighted=True),
              conv("c2", "bn", 8, 4, 4), Node("add", "merge", ["bn", "c2"], [(8, 8, 4)] * 2, (8, 8, 4)),
              chan("pool", "add", (8, 8, 4)), conv("c3", "pool", 8, 4, 6), dense("out", "c3", 6, 2))
    groups = find(g, {f"{n}/kernel" for n in ("c1", "c2", "c3", "out")})
    tied = by_producer(groups)["c1"]
    assert tied is by_producer(groups)["c2"] and tied.size == 4 and tied.fixed is None
    assert {(m.layer, m.role) for m in tied.members} == {("c1", "out"), ("bn", "channel"), ("c2", "in"),
                                                          ("c2", "out"), ("pool", "channel"), ("c3", "in")}


def test_flatten_and_concatenate_rows():
    g = graph(inp("x", (2, 2, 1)), conv("a", "x", 2, 1, 3), conv("b", "x", 2, 1, 2),
              Node("cat", "concat", ["a", "b"], [(2, 2, 3), (2, 2, 2)], (2, 2, 5)),
              Node("flat", "flatten", ["cat"], [(2, 2, 5)], (20,)), dense("out", "flat", 20, 2))
    groups = find(g, {"a/kernel", "b/kernel", "out/kernel"})
    # a Flatten after a Concatenate is not sliced: both groups stay whole, nothing breaks
    assert all(x.fixed for x in groups)
    g = graph(inp("x", (2, 2, 1)), conv("a", "x", 2, 1, 3), Node("flat", "flatten", ["a"], [(2, 2, 3)], (12,)),
              dense("fc", "flat", 12, 4), dense("out", "fc", 4, 2))
    a = by_producer(find(g, {"a/kernel", "fc/kernel", "out/kernel"}))["a"]
    rows = [m for m in a.members if m.role == "in"][0].rows
    assert rows.tolist() == [[p * 3 + c for c in range(3)] for p in range(4)]
    masks = remove(a, np.array([True, False, True]), {"a/kernel": np.ones((3, 3, 1, 3), bool),
                                                     "fc/kernel": np.ones((12, 4), bool)})
    assert np.flatnonzero(~masks["fc/kernel"].any(axis=1)).tolist() == [1, 4, 7, 10]
    g = graph(inp("x", (2, 2, 1)), conv("a", "x", 2, 1, 3), conv("b", "x", 2, 1, 2),
              Node("cat", "concat", ["a", "b"], [(2, 2, 3), (2, 2, 2)], (2, 2, 5)), conv("c", "cat", 2, 5, 4),
              dense("out", "c", 4, 2))
    found = by_producer(find(g, {f"{n}/kernel" for n in "abc"} | {"out/kernel"}))
    assert [m.rows.tolist() for m in found["a"].members if m.role == "in"] == [[[0, 1, 2]]]
    assert [m.rows.tolist() for m in found["b"].members if m.role == "in"] == [[[3, 4]]]


def test_what_fixes_a_group():
    g = graph(inp("x", (4,)), dense("fc1", "x", 4, 3), Node("odd", "unknown", ["fc1"], [(3,)], (3,), what="Lambda"),
              dense("fc2", "odd", 3, 5), dense("fc3", "fc2", 5, 5), dense("out", "fc3", 5, 2))
    found = find(g, {"fc1/kernel", "fc2/kernel", "out/kernel"})
    groups = by_producer(found)
    assert "odd (Lambda)" in groups["fc1"].fixed
    made = [x for x in found if ("fc2", "in") in {(m.layer, m.role) for m in x.members}][0]
    assert "odd (Lambda) made it" in made.fixed  # what the unknown layer makes is fixed too
    assert "fc3 (producer) has no kernel mask" in groups["fc2"].fixed  # fc3 is not masked: it reads every row
    assert "no kernel mask" in groups["fc3"].fixed
    g = graph(inp("x", (4,)), dense("fc1", "x", 4, 3), dense("fc2", "fc1", 3, 5), dense("out", "fc2", 5, 2))
    g.nodes["fc2"].fixed = "ends in softmax"
    assert "softmax" in by_producer(find(g, {"fc1/kernel", "fc2/kernel", "out/kernel"}, keep=("fc1",)))["fc2"].fixed
    assert "kept whole" in by_producer(find(g, {"fc1/kernel", "fc2/kernel", "out/kernel"}, keep=("fc1",)))["fc1"].fixed
    g = graph(inp("x", (2, 2, 1)), conv("a", "x", 2, 1, 3), Node("flat", "flatten", ["a"], [(2, 2, 3)], (12,)),
              chan("bn", "flat", (12,), weighted=True), dense("out", "bn", 12, 2))
    assert "per feature" in by_producer(find(g, {"a/kernel", "out/kernel"}))["a"].fixed


def test_a_depthwise_layer_carries_its_channels_masked_or_not():
    def model():
        return graph(inp("x", (4, 4, 1)), conv("a", "x", 4, 1, 3), chan("dw", "a", (4, 4, 3), "depthwise",
                                                                           kernel="dw/depthwise_kernel", macs=4 * 4 * 9 * 3),
                     conv("b", "dw", 4, 3, 2), dense("out", "b", 2, 2))
    masks = {"a/kernel": np.ones((3, 3, 1, 3), bool), "dw/depthwise_kernel": np.ones((3, 3, 3, 1), bool),
             "b/kernel": np.ones((3, 3, 3, 2), bool), "out/kernel": np.ones((2, 2), bool)}
    groups = find(model(), set(masks))
    a = by_producer(groups)["a"]
    assert a.fixed is None and ("dw", "channel") in {(m.layer, m.role) for m in a.members}
    after = remove(a, np.array([True, False, False]), masks)
    assert after["dw/depthwise_kernel"].any(axis=(0, 1, 3)).tolist() == [True, False, False]
    kept = kept_channels(groups, after)
    assert macs(model(), groups, kept)["dw"] == 4 * 4 * 9
    del masks["dw/depthwise_kernel"]  # tf_keras tickets do not mask depthwise kernels: the group stays prunable
    assert by_producer(find(model(), set(masks)))["a"].fixed is None


@pytest.mark.parametrize("class_name, config, ins, out, kind", [
    ("Dense", {"units": 4, "activation": "relu"}, [(3,)], (4,), "producer"),
    ("Conv2D", {"filters": 4, "kernel_size": (3, 3), "activation": "linear", "groups": 2}, [(8, 8, 4)], (8, 8, 4), "unknown"),
    ("Conv2D", {"filters": 4, "kernel_size": (3, 3), "data_format": "channels_first"}, [(3, 8, 8)], (4, 8, 8), "unknown"),
    ("DepthwiseConv2D", {"kernel_size": (3, 3), "depth_multiplier": 2}, [(8, 8, 3)], (8, 8, 6), "unknown"),
    ("BatchNormalization", {"axis": -1}, [(8, 8, 3)], (8, 8, 3), "channelwise"),
    ("BatchNormalization", {"axis": [3]}, [(8, 8, 3)], (8, 8, 3), "channelwise"),
    ("BatchNormalization", {"axis": 1}, [(8, 8, 3)], (8, 8, 3), "unknown"),
    ("Activation", {"activation": "softmax"}, [(4,)], (4,), "unknown"),
    ("Activation", {"activation": "relu"}, [(4,)], (4,), "channelwise"),
    ("GlobalAveragePooling2D", {}, [(8, 8, 3)], (3,), "channelwise"),
    ("Reshape", {"target_shape": (4, 3)}, [(12,)], (4, 3), "unknown"),
    ("Lambda", {}, [(4,)], (4,), "unknown"),
    ("Concatenate", {"axis": 1}, [(8, 8, 3), (8, 8, 3)], (16, 8, 3), "unknown"),
    ("Concatenate", {"axis": -1}, [(8, 8, 3), (8, 8, 2)], (8, 8, 5), "concat"),
    ("Add", {}, [(8, 8, 3), (1, 1, 1)], (8, 8, 3), "unknown"),
    ("Flatten", {}, [(2, 2, 3)], (12,), "flatten"),
])
def test_layer_kinds(class_name, config, ins, out, kind):
    assert layer_kinds.node("l", class_name, config, ["x"] * len(ins), ins, out, "l/kernel").kind == kind


def test_layer_kinds_count_multiply_adds_and_tell_shared_layers():
    made = layer_kinds.node("c", "Conv2D", {"filters": 8, "kernel_size": (3, 3), "activation": "relu"}, ["x"],
                            [(16, 16, 4)], (8, 8, 8), "c/kernel")
    assert (made.macs, made.spatial, made.units, made.kernel) == (8 * 8 * 9 * 4 * 8, 9, 8, "c/kernel")
    assert layer_kinds.node("d", "Dense", {"units": 4, "activation": "softmax"}, ["x"], [(3,)], (4,)).fixed
    assert layer_kinds.node("d", "Dense", {"units": 4}, ["x", "y"], [(3,), (3,)], (4,), calls=2).kind == "unknown"
