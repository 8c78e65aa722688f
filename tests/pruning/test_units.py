"""Unit and refill rounds (tf_lth.pruning.units) on hand-built layer graphs: numpy only, no TensorFlow."""
import numpy as np
import pytest

from tf_lth.errors import TfLthError
from tf_lth.pruning import groups as G
from tf_lth.pruning import units


def chain(widths=(64, 30, 20, 10), conv=False):
    """input -> fc1 -> fc2 -> out (Dense), or conv1 -> conv2 (3x3) -> flatten -> out."""
    nodes = {"input": G.Node("input", "input", [], [], (widths[0],))}
    prev, shapes = "input", {}
    names = [f"fc{i}" for i in range(1, len(widths) - 1)] + ["out"]
    for i, (name, units_) in enumerate(zip(names, widths[1:])):
        if conv and name != "out":
            nodes[name] = G.Node(name, "producer", [prev], [(8, 8, widths[i])], (8, 8, units_), units=units_,
                                 kernel=f"{name}/kernel", spatial=9, macs=64 * 9 * widths[i] * units_)
            shapes[f"{name}/kernel"] = (3, 3, widths[i], units_)
            if i == len(widths) - 3:
                nodes["flat"] = G.Node("flat", "flatten", [name], [(8, 8, units_)], (64 * units_,))
                name = "flat"
        else:
            rows = 64 * widths[i] if conv else widths[i]
            nodes[name] = G.Node(name, "producer", [prev], [(rows,)], (units_,), units=units_, kernel=f"{name}/kernel",
                                 macs=rows * units_)
            shapes[f"{name}/kernel"] = (rows, units_)
        prev = name
    return G.Graph(nodes, ["out"]), shapes


def trained(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s) for k, s in shapes.items()}


def test_unit_rounds_keep_whole_units_and_nothing_reads_a_removed_one():
    graph, shapes = chain()
    groups = G.find(graph, set(shapes))
    assert [g.size for g in G.prunable(groups)] == [30, 20]
    assert next(g for g in groups if "out" in g.layers() and g.producers()[0].layer == "out").fixed
    w = trained(shapes)
    alive = {k: np.ones(s, bool) for k, s in shapes.items()}
    rates = {k: 0.5 for k in shapes}
    for r in (1, 2):
        alive = units.draw("unit", groups, alive, w, rates, r)
        kept = G.kept_channels(groups, alive)
        assert [int(kept[g.index].sum()) for g in G.prunable(groups)] == [round(30 * 0.5 ** r), round(20 * 0.5 ** r)]
        read = G.read_channels(groups, alive)
        for g in G.prunable(groups):
            assert np.array_equal(read[g.index], kept[g.index])  # produced and read: the same units
    # a kept unit is dense over its kept inputs; fc2's rows of removed fc1 units are gone
    fc1 = alive["fc1/kernel"].any(axis=0)
    assert np.array_equal(alive["fc2/kernel"].any(axis=1), fc1)
    assert alive["fc1/kernel"][:, fc1].all()


def test_l1_keeps_the_units_with_the_largest_norm():
    graph, shapes = chain()
    groups = G.find(graph, set(shapes))
    w = trained(shapes)
    w["fc1/kernel"][:, :5] *= 100  # five loud units
    alive = units.draw("unit", groups, {k: np.ones(s, bool) for k, s in shapes.items()}, w,
                       {k: 5 / 6 for k in shapes}, 1)
    assert np.flatnonzero(alive["fc1/kernel"].any(axis=0)).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("conv", [False, True])
def test_refill_reaches_the_weight_budget_within_one_unit_per_layer(conv):
    graph, shapes = chain((3, 16, 24, 10) if conv else (64, 30, 20, 10), conv=conv)
    groups = G.find(graph, set(shapes))
    w = trained(shapes, 1)
    alive = {k: np.ones(s, bool) for k, s in shapes.items()}
    for r in (1, 2, 3):
        rng = np.random.default_rng(r)
        # an unstructured round: 20% of what is alive goes in each layer (the refill budget)
        unstructured = {}
        for k, m in alive.items():
            flat = np.flatnonzero(m)
            keep = rng.choice(flat, size=int(round(m.size * 0.8 ** r)), replace=False) if flat.size else flat
            u = np.zeros(m.size, bool)
            u[keep] = True
            unstructured[k] = u.reshape(m.shape)
        new = units.draw("refill", groups, alive, w, {k: 0.2 for k in shapes}, r, unstructured=unstructured)
        rows = units.kept_rows(groups, G.kept_channels(groups, new), shapes)
        for g in G.prunable(groups):
            (m,) = g.producers()
            spatial = int(np.prod(shapes[m.kernel][:-2])) if len(shapes[m.kernel]) > 2 else 1
            per_unit = spatial * int(rows[m.kernel].sum())
            assert abs(int(new[m.kernel].sum()) - int(unstructured[m.kernel].sum())) <= per_unit, (r, m.kernel)
        alive = new


def test_random_units_keep_the_unit_counts_and_differ():
    graph, shapes = chain()
    groups = G.find(graph, set(shapes))
    ticket = units.draw("unit", groups, {k: np.ones(s, bool) for k, s in shapes.items()}, trained(shapes),
                        {k: 0.5 for k in shapes}, 2)
    control = units.random_units(groups, ticket, np.random.default_rng(3))
    a, b = G.kept_channels(groups, ticket), G.kept_channels(groups, control)
    for g in G.prunable(groups):
        assert a[g.index].sum() == b[g.index].sum()
    assert any(not np.array_equal(a[g.index], b[g.index]) for g in G.prunable(groups))


def test_bn_gamma_ranks_by_gamma_and_falls_back_to_l1_without_batchnorm():
    graph, shapes = chain()
    graph.nodes["bn"] = G.Node("bn", "channelwise", ["fc1"], [(30,)], (30,))
    graph.nodes["fc2"].inputs = ["bn"]
    graph.nodes = {k: graph.nodes[k] for k in ("input", "fc1", "bn", "fc2", "out")}
    groups = G.find(graph, set(shapes))
    gamma = np.zeros(30)
    gamma[[3, 7]] = 1
    alive = units.draw("unit", groups, {k: np.ones(s, bool) for k, s in shapes.items()}, trained(shapes),
                       {k: 28 / 30 for k in shapes}, 1, score="bn_gamma", gammas={"bn": gamma})
    assert np.flatnonzero(alive["fc1/kernel"].any(axis=0)).tolist() == [3, 7]
    assert alive["fc2/kernel"].any(axis=0).sum() == round(20 * 2 / 30)  # no BN on fc2: l1


def test_refill_score_needs_refill_and_a_model_without_units_is_one_line():
    graph, shapes = chain()
    groups = G.find(graph, set(shapes))
    with pytest.raises(TfLthError, match="granularity='refill'"):
        units.draw("unit", groups, {k: np.ones(s, bool) for k, s in shapes.items()}, trained(shapes),
                   {k: 0.5 for k in shapes}, 1, score="refill")
    only_output = G.Graph({"input": graph.nodes["input"],
                           "out": G.Node("out", "producer", ["input"], [(64,)], (10,), units=10, kernel="out/kernel")},
                          ["out"])
    with pytest.raises(TfLthError, match=r"^granularity='unit': m has no unit .*model output.*granularity='weight'$"):
        units.check("unit", G.find(only_output, {"out/kernel"}), "m")


def test_config_refuses_what_units_cannot_shape():
    from tf_lth.config.configs import TicketConfig

    assert TicketConfig(granularity="refill", scope="global").granularity == "refill"
    for bad, match in [(dict(granularity="unit", scope="global"), "scope='layerwise'"),
                       (dict(granularity="unit", block_size=(4, 1)), "block_size"),
                       (dict(granularity="refill", pruned="frozen"), "frozen"),
                       (dict(granularity="unit", criterion="magnitude_increase"), "unit_score"),
                       (dict(unit_score="l1"), "granularity='unit'"),
                       (dict(granularity="cubes"), "unknown granularity 'cubes'")]:
        with pytest.raises(TfLthError, match=match):
            TicketConfig(**bad)
