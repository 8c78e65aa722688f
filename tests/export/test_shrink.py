"""Structured tickets shrunk into smaller dense models (tf_lth.export.shrink, issue 24), in both flavours.

For LeNet-300-100, Conv-4, ResNet-20, VGG-16, MobileNetV2 and the hand-built models of graph_cases.py:
about half the channels of every prunable group are removed (groups.remove), the weights under the masks
zeroed, and the shrunk model must compute the masked model's outputs on real images (sklearn's 8x8
digits, resized), in float64, within 1e-8 of the largest output: at inference and with batch statistics
(training=True: untrained BatchNormalization's moving statistics let VGG-16's and MobileNetV2's signal vanish
at inference); each producer keeps exactly the chosen units. A weight-level mask loses only the channels no consumer reads.
"""
import graph_cases
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tf_lth.export import shrink
from tf_lth.export.shrink import shrink_model
from tf_lth.models import networks
from tf_lth.pruning.groups import find, prunable, remove
from tf_lth.ticket import flavours

HEAVY = {"vgg16", "mobilenet_v2"}
MODELS = ["lenet_300_100", "conv4", "resnet20", "vgg16", "mobilenet_v2", "residual", "depthwise", "flatten", "concat"]


def images(shape, n=16):
    """``n`` real digits (8x8, scaled to [0, 1]) resized (nearest pixel) to ``shape`` (28x28x1, 32x32x3, ...)."""
    digits = load_digits().images[:n] / 16.0
    h, w, c = shape
    x = digits[:, np.arange(h) * 8 // h][:, :, np.arange(w) * 8 // w]
    return np.repeat(x[..., None], c, axis=-1).astype("float32")


def make(name, version):
    keras = networks.keras_of(version)
    keras.utils.set_random_seed(0)
    if name == "mobilenet_v2":
        return keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)
    if hasattr(graph_cases, name):
        return getattr(graph_cases, name)(keras)
    return networks.build(name, (28, 28, 1) if name == "lenet_300_100" else (32, 32, 3), 10, keras=version)


def zero_under(model, masks):
    """Zero ``model``'s weights where ``masks`` are False (what a ticket's plain model holds)."""
    weights = shrink.layer_weights
    for key, mask in masks.items():
        layer, name = key.split("/", 1)
        values = weights(model, [layer])[layer]
        values[name] = values[name] * mask
        model.get_layer(layer).set_weights(list(values.values()))


def units_of(model, layer):
    config = model.get_layer(layer).get_config()
    return config.get("units", config.get("filters"))


@pytest.fixture(autouse=True)
def float64():
    """Models built in float64 for these tests: the smaller convolutions add the same terms in another order,
    and in float32 batch statistics magnify that rounding to ~1e-4 of the outputs in MobileNetV2 (1e-13 in
    float64), which would hide a real difference of that size."""
    keras_modules = [networks.keras_of(v) for v in (2, 3)]
    before = [k.backend.floatx() for k in keras_modules]
    k2, k3 = keras_modules
    # a global policy set by an earlier test (mixed precision's tests reset theirs to "float32") outranks floatx
    policies = k2.mixed_precision.global_policy(), k3.config.dtype_policy()
    for k in keras_modules:
        k.backend.set_floatx("float64")
    k2.mixed_precision.set_global_policy("float64")
    k3.config.set_dtype_policy("float64")
    yield
    k2.mixed_precision.set_global_policy(policies[0])
    k3.config.set_dtype_policy(policies[1])
    for k, value in zip(keras_modules, before):
        k.backend.set_floatx(value)


def same_outputs(model, shrunk, x):
    """The shrunk model computes the masked one's outputs (within 1e-8 of the largest), at inference and
    with batch statistics."""
    x = x.astype("float64")
    for training in (False, True):  # inference first: a training call moves the moving statistics
        a, b = np.asarray(model(x, training=training)), np.asarray(shrunk(x, training=training))
        assert a.dtype == np.float64 and a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-8 * np.abs(a).max(), (training, np.abs(a - b).max())
    assert np.ptp(a, axis=0).max() > 1e-3 * np.abs(a).max()  # the check sees a signal, not a constant


def params(version, names):
    return [pytest.param(version, n, marks=[pytest.mark.heavy] if n in HEAVY else []) for n in names]


@pytest.mark.parametrize("version, name", params(2, MODELS) + params(3, MODELS))
def test_a_structured_ticket_shrinks_to_the_same_function(version, name):
    model = make(name, version)
    graph = flavours.of_model(model).describe(model)
    # tf_keras tickets (TF-MOT) do not mask depthwise kernels; Keras 3 tickets do
    masks = graph_cases.masks_of(model, graph, ("producer",) if version == 2 else ("producer", "depthwise"))
    groups = find(graph, set(masks))
    rng, expected = np.random.default_rng(0), {}
    for g in prunable(groups):
        keep = rng.random(g.size) < 0.5
        keep[rng.integers(g.size)] = True
        masks = remove(g, keep, masks)
        expected.update({p.layer: int(keep.sum()) for p in g.producers()})
    assert expected
    zero_under(model, masks)
    shrunk, plan = shrink_model(model, masks)
    assert type(shrunk).__module__.split(".")[0] == type(model).__module__.split(".")[0]
    same_outputs(model, shrunk, images(model.input_shape[1:]))
    for node in graph.nodes.values():
        if node.kind == "producer":
            want = expected.get(node.name, node.units)
            assert units_of(shrunk, node.name) == want and plan.units[node.name] == (want, node.units), node.name
    kept_macs, dense_macs = plan.total_macs
    assert plan.params[0] < plan.params[1] == model.count_params() and kept_macs < dense_macs
    assert plan.params[0] == shrunk.count_params()
    assert any("model output" in why or "softmax" in why for why, _ in plan.fixed)


UNREAD = {"lenet_300_100": "fc1", "conv4": "conv2", "resnet20": "block4_conv2", "concat": "b", "depthwise": "expand"}


@pytest.mark.parametrize("version, name", params(2, UNREAD) + params(3, UNREAD))
def test_a_weight_level_ticket_loses_only_unread_channels(version, name):
    model = make(name, version)
    graph = flavours.of_model(model).describe(model)
    masks = graph_cases.masks_of(model, graph)
    rng = np.random.default_rng(1)
    masks = {k: rng.random(m.shape) < 0.8 for k, m in masks.items()}  # 20% of the weights, anywhere
    group = next(g for g in find(graph, set(masks)) if UNREAD[name] in [p.layer for p in g.producers()] and g.fixed is None)
    unread, dead_but_read = [0, 1], 2 if group.size > 2 else None
    for m in group.members:
        if m.role == "in":  # nobody reads channels 0 and 1 ...
            masks[m.kernel][..., m.rows[:, unread].ravel(), :] = False
        elif m.role == "out" and dead_but_read is not None:  # ... channel 2 has no weight left, yet is read
            masks[m.kernel][..., dead_but_read] = False
    zero_under(model, masks)
    shrunk, plan = shrink_model(model, masks)
    same_outputs(model, shrunk, images(model.input_shape[1:]))
    for node in graph.nodes.values():
        if node.kind == "producer":
            want = group.size - len(unread) if node.name in [p.layer for p in group.producers()] else node.units
            assert units_of(shrunk, node.name) == want and plan.units[node.name][0] == want, node.name


def test_nothing_to_remove_keeps_every_unit():
    model = make("conv4", 3)
    graph = flavours.of_model(model).describe(model)
    shrunk, plan = shrink_model(model, graph_cases.masks_of(model, graph))
    assert all(k == n for k, n in plan.units.values()) and plan.params[0] == plan.params[1]
    assert "parameters 2,425,930 of 2,425,930" in plan.summary()
