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
