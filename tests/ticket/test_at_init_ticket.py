"""LotteryTicket.at_init on tf_keras: the gradients the methods need against finite differences, the
requested sparsity met exactly per layer or in total, SynFlow keeping every layer where single-shot SNIP
empties one (layer collapse, Tanaka et al. 2020), the method kept in ticket.json, one-line errors."""
import numpy as np
import pytest

from tf_lth import keras
from tf_lth.errors import TfLthError
from tf_lth.pruning import at_init as pai
from tf_lth.ticket import store
from tf_lth.ticket.flavours import TF_KERAS
from tf_lth.ticket.ticket import LotteryTicket


def tiny():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh", name="fc")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))


def numpy_loss(w, x, y, temperature=1.0):
    """The tiny net's mean cross-entropy in float64 (kernel, bias, kernel, bias), logits / temperature."""
    logits = (np.tanh(x @ w[0] + w[1]) @ w[2] + w[3]) / temperature
    logits = logits - logits.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(y)), y]))


def numeric_gradient(w, x, y, eps=1e-5, temperature=1.0):
    """Central differences of :func:`numpy_loss` in the two kernels."""
    grads = []
    for i in (0, 2):
        g = np.zeros_like(w[i])
        for index in np.ndindex(w[i].shape):
            up, down = [v.copy() for v in w], [v.copy() for v in w]
            up[i][index] += eps
            down[i][index] -= eps
            g[index] = (numpy_loss(up, x, y, temperature) - numpy_loss(down, x, y, temperature)) / (2 * eps)
        grads.append(g)
    return grads


def test_the_loss_gradient_and_the_hessian_gradient_product_match_finite_differences():
    model = tiny()
    w = [np.asarray(v, np.float64) for v in model.get_weights()]
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(8, 3)).astype("float32"), rng.integers(0, 2, 8).astype("int32")) for _ in range(2)]
    x, y = np.concatenate([b[0] for b in batches]).astype(np.float64), np.concatenate([b[1] for b in batches])
    values = [v.astype(np.float32) for v in w]
    g = TF_KERAS.saliency.quantities(model, [0, 2], values, "gradient", batches)
    expected = numeric_gradient(w, x, y)  # equal batches: the mean of the batch means is the mean
    for got, want in zip(g, expected):
        np.testing.assert_allclose(got, want, atol=2e-6)
    cooled = TF_KERAS.saliency.quantities(model, [0, 2], values, "gradient", batches, temperature=4.0)
    for got, want in zip(cooled, numeric_gradient(w, x, y, temperature=4.0)):  # GraSP's logits / T
        np.testing.assert_allclose(got, want, atol=2e-6)
    hg = TF_KERAS.saliency.quantities(model, [0, 2], values, "hessian_gradient", batches)
    eps = 1e-3  # H g = d/de grad(θ + e g) at 0
    shifted = [[v.copy() for v in w] for _ in range(2)]
    for sign, s in zip((1, -1), shifted):
        s[0] += sign * eps * expected[0]
        s[2] += sign * eps * expected[1]
    up, down = numeric_gradient(shifted[0], x, y), numeric_gradient(shifted[1], x, y)
    for got, a, b in zip(hg, up, down):
        np.testing.assert_allclose(got, (a - b) / (2 * eps), atol=1e-5)
        assert np.abs(got).max() > 1e-3  # a real product, not zeros


def test_synflow_gradient_is_of_the_summed_output_on_ones():
    model = tiny()
    values = [np.abs(np.asarray(v)) for v in model.get_weights()]
    (got,) = TF_KERAS.saliency.quantities(model, [2], values, "synflow", [])
    hidden = np.tanh(np.ones(3) @ values[0] + values[1])
    np.testing.assert_allclose(got, np.repeat(hidden[:, None], 2, axis=1), rtol=1e-5)  # ∂ sum(h W + b) / ∂W


def mlp(widths=(32, 16), seed=1):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Flatten()(inputs)
    for i, width in enumerate(widths):
        h = keras.layers.Dense(width, activation="relu", name=f"fc{i}")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(h))


@pytest.fixture(scope="module")
def digits(mnist5k):
    x, y = mnist5k.arrays("train")
    return x[:200], y[:200]


@pytest.mark.parametrize("method", list(pai.PAI_METHODS))
def test_each_method_meets_the_sparsity_exactly(method, digits):
    options = dict(data=digits, batches=2, batch_size=100, iterations=5)
    ticket = LotteryTicket.at_init(mlp(), method, 0.07, **options)
    total = sum(m.size for m in ticket.masks.values())
    kept = {k: int(m.sum()) for k, m in ticket.masks.items()}
    if pai.PAI_METHODS[method].scope == "global":
        assert sum(kept.values()) == round(0.07 * total)
    else:
        assert kept == {k: round(0.07 * m.size) for k, m in ticket.masks.items()}
    counts = {"fc0/kernel": 300, "fc1/kernel": 50, "out/kernel": 20}  # an IMP round's per-layer counts
    layerwise = LotteryTicket.at_init(mlp(), method, counts, scope="layerwise", **options)
    assert {k: int(m.sum()) for k, m in layerwise.masks.items()} == counts
    for key, i in layerwise.kernels().items():  # rewound to θ0, pruned entries zero
        np.testing.assert_array_equal(layerwise.get_weights()[i], layerwise.theta0[i] * layerwise.masks[key])
    assert layerwise.at_rewind_point and layerwise.pruned_at_init["scope"] == "layerwise"


def paths(masks, order):
    """Input-to-output paths through the kept weights (0: the network is disconnected)."""
    flow = np.ones(masks[order[0]].shape[0])
    for key in order:
        flow = flow @ masks[key].astype(float)
    return flow.sum()


def test_synflow_keeps_every_layer_where_snip_collapses_one(digits):
    """A deep, narrow MLP (eight layers of 16) at 99% sparsity: single-shot SNIP empties the first layer
    (global scores favour the small layers), SynFlow's 100 iterations keep every layer connected."""
    order = [f"fc{i}/kernel" for i in range(8)] + ["out/kernel"]
    snip = LotteryTicket.at_init(mlp((16,) * 8, seed=2), "snip", 0.01, data=digits, batches=2, batch_size=100)
    synflow = LotteryTicket.at_init(mlp((16,) * 8, seed=2), "synflow", 0.01, data=digits)
    for ticket in (snip, synflow):
        assert sum(int(m.sum()) for m in ticket.masks.values()) == round(0.01 * sum(m.size for m in ticket.masks.values()))
    assert min(int(snip.masks[k].sum()) for k in order) == 0 and paths(snip.masks, order) == 0
    assert min(int(synflow.masks[k].sum()) for k in order) > 0 and paths(synflow.masks, order) > 0


def test_invert_keeps_the_lowest_scores(digits):
    high = LotteryTicket.at_init(mlp(), "magnitude_init", 0.1, scope="layerwise")
    low = LotteryTicket.at_init(mlp(), "magnitude_init", 0.1, scope="layerwise", invert=True)
    for key, i in high.kernels().items():
        w0 = np.abs(high.theta0[i])
        assert int(high.masks[key].sum()) == int(low.masks[key].sum())
        assert w0[low.masks[key]].max() <= w0[~low.masks[key]].min()
        assert w0[high.masks[key]].min() >= w0[~high.masks[key]].max()


def test_the_method_is_kept_in_the_ticket_folder(tmp_path, digits):
    ticket = LotteryTicket.at_init(mlp(), "snip", 0.2, data=digits, batches=1, batch_size=50)
    assert ticket.pruned_at_init == {"method": "snip", "remaining": 0.2, "scope": "global", "invert": False,
                                     "batches": 1, "batch_size": 50, "iterations": None}
    store.save(ticket, tmp_path)
    loaded = store.load(tmp_path)
    assert loaded.pruned_at_init == ticket.pruned_at_init
    for key in ticket.masks:
        np.testing.assert_array_equal(loaded.masks[key], ticket.masks[key])


@pytest.mark.parametrize("method, remaining, options, words", [
    ("snipp", 0.1, {}, "unknown pruning-at-init method"),
    ("snip", 0, {}, "outside (0, 1]"),
    ("snip", 1.5, {}, "outside (0, 1]"),
    ("random", "half", {}, "fraction of weights kept"),
    ("snip", 0.1, {}, "give data=(x, y)"),
    ("magnitude_init", 0.1, {"scope": "blocks"}, "layerwise or global"),
    ("grasp", 0.1, {"data": ([1.0], [0, 1])}, "as many of each"),
])
def test_bad_requests_are_one_line_errors(method, remaining, options, words):
    with pytest.raises(TfLthError) as e:
        LotteryTicket.at_init(mlp(), method, remaining, **options)
    assert words in str(e.value) and "\n" not in str(e.value)
