"""Figures of an experiment's results.json (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from tf_lth.io import atomic_write  # noqa: E402


TICKS = (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1)  # weights remaining (%) labelled on the log axis


def weights_remaining_axis(ax, xs) -> None:
    """Make ``ax``'s x axis the one every tf-lth figure shares: weights remaining (%) on a log scale,
    running from dense (100) on the left to sparse on the right, as the lottery-ticket papers draw
    it. ``xs``: the plotted x values (%). Only :data:`TICKS` down to just below the smallest are
    labelled, as plain numbers ("5", "0.5") rather than a log axis' powers of ten, without minor
    labels: the levels a reader looks up stay legible."""
    ax.set_xscale("log")
    lowest = min(xs, default=100)
    ax.set_xticks([t for t in TICKS if lowest / 1.5 <= t <= 100])
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")


def _series(results: list, key: str) -> dict[str, tuple[list, list]]:
    """``{line name: (weights remaining %, values)}`` for the ticket and each control."""
    lines = {"ticket": ([], [])}
    for r in results:
        if r["round"] == 0:
            continue
        x = 100 * r["weights_remaining"]
        lines["ticket"][0].append(x)
        lines["ticket"][1].append(r[key])
        for name, c in r["controls"].items():
            lines.setdefault(name, ([], []))
            lines[name][0].append(x)
            lines[name][1].append(c.get(key))
    return lines


def _figure(results, key, ylabel, title, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = _series(results, key)
    for name, (x, y) in lines.items():
        ax.plot(x, y, marker="o", label=name)
    dense = next((r for r in results if r["round"] == 0), None)
    if dense is not None and dense.get(key) is not None:
        ax.axhline(dense[key], color="gray", linestyle="--", label="dense (100%)")
    weights_remaining_axis(ax, [v for x, _ in lines.values() for v in x])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def plot_results(results: list, folder) -> list[Path]:
    """Write accuracy and early-stopping plots against weights remaining (log x axis)."""
    folder = Path(folder)
    paths = [folder / "accuracy_vs_weights_remaining.png", folder / "early_stop_vs_weights_remaining.png"]
    _figure(results, "test_accuracy", "test accuracy (end of training)", "Lottery ticket vs controls", paths[0])
    _figure(results, "early_stop_iteration", "early-stopping iteration (min val loss)",
            "Iteration of minimum validation loss", paths[1])
    return paths
