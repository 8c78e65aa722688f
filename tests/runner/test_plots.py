"""Figures from results rows (tf_lth.runner.plots, matplotlib only): the two figures of a run, the ticket
and each control as a line, dense as a reference."""
from tf_lth.runner import plots


def rows():
    return [{"round": r, "weights_remaining": 0.8 ** r, "test_accuracy": 0.9 + 0.01 * r, "early_stop_iteration": 100 * r,
             "controls": {} if r == 0 else {"random_reinit": {"test_accuracy": 0.88, "early_stop_iteration": 300}}}
            for r in range(4)]


def test_a_run_gives_its_two_figures(tmp_path):
    paths = plots.plot_results(rows(), tmp_path / "plots")
    assert [p.name for p in paths] == ["accuracy_vs_weights_remaining.png", "early_stop_vs_weights_remaining.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_a_structured_run_adds_the_figure_by_macs_and_compare_puts_runs_on_a_macs_axis(tmp_path):
    import json

    import pytest

    from tf_lth.errors import TfLthError
    from tf_lth.runner import replicates

    unit = [{**row, "macs_remaining": 0.7 ** row["round"]} for row in rows()]
    weight = [{**row, "macs_remaining": 1.0} for row in rows()]
    paths = plots.plot_results(unit, tmp_path / "plots")
    assert paths[-1].name == "accuracy_vs_macs_remaining.png" and paths[-1].read_bytes()[:4] == b"\x89PNG"
    assert len(plots.plot_results(weight, tmp_path / "w")) == 2  # no unit went: no figure by MACs
    folders = []
    for name, run in (("weight", weight), ("unit", unit), ("old", rows())):
        folder = tmp_path / name
        folder.mkdir()
        config = {"model": "lenet_300_100", "seed": 0, "ticket": {"granularity": name}}
        (folder / "results.json").write_text(json.dumps({"config": config, "rounds": run}))
        folders.append(folder)
    table, png = replicates.compare(folders[:2], path=tmp_path / "c.png", against="macs")
    assert png.read_bytes()[:4] == b"\x89PNG" and "granularity=unit" in table.splitlines()[0]
    with pytest.raises(TfLthError, match=r"old recorded no macs_remaining .*compare --against weights"):
        replicates.compare(folders[1:], path=tmp_path / "d.png", against="macs")
