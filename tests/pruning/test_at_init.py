"""The pruning-at-init methods' science in numpy (tf_lth.pruning.at_init): scores, exact counts per layer or
in total, the GraSP sign, SynFlow's iterations on the exponential schedule, invert, one-line errors."""
import numpy as np
import pytest

from tf_lth.errors import TfLthError
from tf_lth.pruning import at_init as pai
from tf_lth.pruning import selection


def kernels(seed=0):
    rng = np.random.default_rng(seed)
    return {"a/kernel": rng.normal(size=(30, 20)), "b/kernel": rng.normal(size=(20, 10)), "c/kernel": rng.normal(size=(10, 3))}


def fake_quantity(theta, seed=1):
    """A stand-in network quantity: fixed random arrays, recorded per call (the masks it was asked with)."""
    rng = np.random.default_rng(seed)
    values = {k: rng.normal(size=v.shape) for k, v in theta.items()}
    calls = []

    def quantity(masks):
        calls.append({k: m.copy() for k, m in masks.items()})
        return values

    return quantity, values, calls


@pytest.mark.parametrize("method", list(pai.PAI_METHODS))
@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("remaining", [0.5, 0.013, 1.0])
def test_each_method_keeps_exactly_the_requested_weights(method, scope, remaining):
    theta = kernels()
    quantity, _, _ = fake_quantity(theta)
    masks = pai.prune_at_init(method, theta, remaining, quantity, scope=scope, iterations=7)
    if scope == "global":
        assert sum(int(m.sum()) for m in masks.values()) == round(remaining * sum(v.size for v in theta.values()))
    else:
        assert {k: int(m.sum()) for k, m in masks.items()} == {k: round(remaining * v.size) for k, v in theta.items()}
    counts = {"a/kernel": 11, "b/kernel": 0, "c/kernel": 30}
    by_count = pai.prune_at_init(method, theta, counts, quantity, scope=scope, iterations=7)
    if scope == "global":
        assert sum(int(m.sum()) for m in by_count.values()) == 41
    else:
        assert {k: int(m.sum()) for k, m in by_count.items()} == counts


def test_the_scores_are_the_papers():
    theta = kernels()
    quantity, q, _ = fake_quantity(theta)
    n = 20
    for method, score in {"magnitude_init": {k: np.abs(v) for k, v in theta.items()},
                          "snip": {k: np.abs(v * q[k]) for k, v in theta.items()},
                          # Wang et al. remove the highest -θ⊙Hg: the kept are the highest θ⊙Hg
                          "grasp": {k: v * q[k] for k, v in theta.items()}}.items():
        masks = pai.prune_at_init(method, theta, {k: n for k in theta}, quantity, scope="layerwise")
        for k in theta:
            order = np.argsort(-score[k].ravel(), kind="stable")[:n]
            assert set(np.flatnonzero(masks[k])) == set(order), (method, k)
    grasp = pai.prune_at_init("grasp", theta, 0.3, quantity, scope="global")
    removed_by_wang = np.concatenate([(-theta[k] * q[k])[~grasp[k]] for k in theta])
    kept_by_wang = np.concatenate([(-theta[k] * q[k])[grasp[k]] for k in theta])
    assert removed_by_wang.min() >= kept_by_wang.max()  # the highest S = -θ⊙Hg went


def test_synflow_prunes_in_iterations_on_the_exponential_schedule():
    theta = kernels()
    quantity, _, calls = fake_quantity(theta)
    masks = pai.prune_at_init("synflow", theta, 0.01, quantity, iterations=4)
    total = sum(v.size for v in theta.values())
    assert len(calls) == 4 and all(m.all() for m in calls[0].values())
    kept = [sum(int(m.sum()) for m in c.values()) for c in calls[1:]] + [sum(int(m.sum()) for m in masks.values())]
    final = round(total * 0.01)  # the schedule's density: the final count over the size
    assert kept == [round(total * (final / total) ** (i / 4)) for i in (1, 2, 3)] + [final]
    for before, after in zip(calls[1:], calls[2:]):  # masks only shrink
        assert all(not (after[k] & ~before[k]).any() for k in theta)
    default = pai.prune_at_init("synflow", theta, 0.5, fake_quantity(theta)[0])
    assert pai.PAI_METHODS["synflow"].iterations == 100 and sum(int(m.sum()) for m in default.values()) == total // 2


def test_invert_keeps_the_lowest_at_the_same_counts():
    theta = kernels()
    for scope in ("layerwise", "global"):
        high = pai.prune_at_init("magnitude_init", theta, 0.2, scope=scope)
        low = pai.prune_at_init("magnitude_init", theta, 0.2, scope=scope, invert=True)
        if scope == "layerwise":
            assert {k: int(m.sum()) for k, m in low.items()} == {k: int(m.sum()) for k, m in high.items()}
            for k, v in theta.items():
                assert np.abs(v)[low[k]].max() <= np.abs(v)[~low[k]].min()
        else:
            kept = np.concatenate([np.abs(theta[k])[low[k]] for k in theta])
            dropped = np.concatenate([np.abs(theta[k])[~low[k]] for k in theta])
            assert kept.size == round(0.2 * sum(v.size for v in theta.values())) and kept.max() <= dropped.min()


def test_random_is_layerwise_and_reproducible_and_only_alive_weights_are_kept():
    theta = kernels()
    a = pai.prune_at_init("random", theta, 0.25, rng=np.random.default_rng(5))
    b = pai.prune_at_init("random", theta, 0.25, rng=np.random.default_rng(5))
    c = pai.prune_at_init("random", theta, 0.25, rng=np.random.default_rng(6))
    assert all(np.array_equal(a[k], b[k]) for k in theta) and not all(np.array_equal(a[k], c[k]) for k in theta)
    alive = selection.random_like({k: np.ones(v.shape, bool) for k, v in theta.items()}, np.random.default_rng(1))
    alive = {k: m & (np.random.default_rng(2).random(m.shape) < 0.5) for k, m in alive.items()}
    masks = pai.prune_at_init("magnitude_init", theta, {k: 5 for k in theta}, scope="layerwise", alive=alive)
    assert all(not (masks[k] & ~alive[k]).any() and masks[k].sum() == 5 for k in theta)


@pytest.mark.parametrize("call, words", [
    (lambda t: pai.prune_at_init("snipp", t, 0.1), "unknown pruning-at-init method"),
    (lambda t: pai.prune_at_init("random", t, 0.0), "outside (0, 1]"),
    (lambda t: pai.prune_at_init("random", t, -0.5), "outside (0, 1]"),
    (lambda t: pai.prune_at_init("random", t, 1.01), "outside (0, 1]"),
    (lambda t: pai.prune_at_init("snip", t, 0.1), "needs the network's gradient"),
    (lambda t: pai.prune_at_init("random", t, 0.1, scope="m_by_n"), "layerwise or global"),
    (lambda t: pai.prune_at_init("random", t, {"a/kernel": 3}), "keep counts miss"),
    (lambda t: pai.prune_at_init("random", t, {k: 10**6 for k in t}), "outside 0..size"),
    (lambda t: pai.prune_at_init("synflow", t, 0.1, lambda m: None, iterations=-1), "at least 1"),
])
def test_bad_requests_are_one_line_errors(call, words):
    with pytest.raises(TfLthError) as e:
        call(kernels())
    assert words in str(e.value) and "\n" not in str(e.value)
