"""Figures of an experiment's results.json (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

from tf_lth.util.io import atomic_write  # noqa: E402
from tf_lth.runner.results import value  # noqa: E402


TICKS = (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1)  # weights remaining (%) labelled on the log axis


def weights_remaining_axis(ax, xs, label: str = "weights remaining (%)") -> None:
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
    highest = max(xs, default=100)
    if lowest < highest:
        ax.invert_xaxis()
    else:  # one level (a dense round only): a range around it, dense still on the left
        ax.set_xlim(highest * 1.5, lowest / 1.5)
    ax.set_xlabel(label)


def series(results: list, key: str, against: str = "weights") -> dict[str, tuple[list, list]]:
    """``{line name: (weights or MACs remaining %, values)}`` for the ticket and each control (a control
    has the ticket's weights and MACs)."""
    lines = {"ticket": ([], [])}
    for r in results:
        if r["round"] == 0 or r.get(f"{against}_remaining") is None:
            continue
        x = 100 * r[f"{against}_remaining"]
        lines["ticket"][0].append(x)
        lines["ticket"][1].append(r[key])
        for name, c in r["controls"].items():
            lines.setdefault(name, ([], []))
            lines[name][0].append(x)
            lines[name][1].append(c.get(key))
    return lines


def _figure(results, key, ylabel, title, path: Path, against: str = "weights") -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = series(results, key, against)
    for name, (x, y) in lines.items():
        ax.plot(x, y, marker="o", label=name)
    dense = next((r for r in results if r["round"] == 0), None)
    if dense is not None and dense.get(key) is not None:
        ax.axhline(dense[key], color="gray", linestyle="--", label="dense (100%)")
    label = f"{'MACs' if against == 'macs' else against} remaining (%)"
    weights_remaining_axis(ax, [v for x, _ in lines.values() for v in x], label)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8 if len(lines) > 4 else None, ncol=2 if len(lines) > 8 else 1)  # every branch's line
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def plot_results(results: list, folder) -> list[Path]:
    """Write accuracy and early-stopping plots against weights remaining (log x axis), and accuracy against
    MACs remaining where rounds removed whole units (a structured ticket, or units nobody reads any more)."""
    folder = Path(folder)
    paths = [folder / "accuracy_vs_weights_remaining.png", folder / "early_stop_vs_weights_remaining.png"]
    _figure(results, "test_accuracy", "test accuracy (end of training)", "Lottery ticket vs controls", paths[0])
    _figure(results, "early_stop_iteration", "early-stopping iteration (min val loss)",
            "Iteration of minimum validation loss", paths[1])
    if any((r.get("macs_remaining") or 1) < 1 for r in results):
        paths.append(folder / "accuracy_vs_macs_remaining.png")
        _figure(results, "test_accuracy", "test accuracy (end of training)", "Lottery ticket vs controls, by compute",
                paths[-1], against="macs")
    return paths


def band_figure(series: dict, dense, ylabel: str, title: str, path: Path,
                xlabel: str = "weights remaining (%)") -> None:
    """Lines of means with their min-max bands against weights remaining: ``series`` maps a name to
    ``[(x %, mean, min, max), ...]``; ``dense`` is ``(mean, min, max)`` of the dense round or None."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    xs = []
    for name, points in series.items():
        points = sorted(p for p in points if p[1] is not None)
        if not points:
            continue
        x, mean, lo, hi = (list(v) for v in zip(*points))
        line, = ax.plot(x, mean, marker="o", label=name)
        if lo != hi:
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        xs += x
    if dense is not None and dense[0] is not None:
        ax.axhline(dense[0], color="gray", linestyle="--", label="dense (100%)")
        if dense[1] != dense[2]:
            ax.axhspan(dense[1], dense[2], color="gray", alpha=0.1, linewidth=0)
    weights_remaining_axis(ax, xs, xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def plot_aggregate(aggregate: dict, folder) -> list[Path]:
    """The two figures of :func:`plot_results` for replicates: the mean over seeds of the ticket and of
    each control, with a band from the min to the max (Frankle & Carbin's error bars)."""
    folder, rows, n = Path(folder), aggregate["rounds"], len(aggregate["seeds"])
    paths = [folder / "accuracy_vs_weights_remaining.png", folder / "early_stop_vs_weights_remaining.png"]
    for path, key, ylabel in zip(paths, ("test_accuracy", "early_stop_iteration"),
                                 ("test accuracy (end of training)", "early-stopping iteration (min val loss)")):
        controls = sorted({k.split(".")[1] for row in rows for k in row if k.startswith("controls.")})
        names = {"ticket": key, **{c: f"controls.{c}.{key}" for c in controls}}
        series = {name: [(100 * value(r, "weights_remaining")[0], *value(r, metric)) for r in rows if r["round"]]
                  for name, metric in names.items()}
        dense = next((value(r, key) for r in rows if r["round"] == 0), None)
        band_figure(series, dense, ylabel, f"Mean and min-max over {n} seeds", path)
    return paths


def plot_mask_distance(results: list, path) -> Path | None:
    """The early-bird curves: per round, the distance between successive candidate masks against the
    iteration (nothing is drawn when no round recorded one)."""
    rounds = [r for r in results if r.get("mask_distance")]
    if not rounds:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in rounds:
        points = r["mask_distance"]
        ax.plot([p["iteration"] for p in points], [p["distance"] for p in points],
                label=f"round {r['round']} ({100 * r['weights_remaining']:.0f}%, {r.get('stopped', 'end')})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mask distance to the previous evaluation point")
    ax.set_title("Early-bird: how much the next round's mask still changes")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def plot_instability(entries: list, folder, threshold: float) -> list[Path]:
    """The instability scan's figures (:mod:`tf_lth.runner.instability`): the test error along the path
    between the two copies, one line per rewind point k (``instability_path.png``), and the error barrier
    against k with the stability threshold dashed (``instability_barrier.png``)."""
    folder = Path(folder)
    paths = [folder / "instability_path.png", folder / "instability_barrier.png"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for e in sorted(entries, key=lambda e: e["k"]):
        ax.plot(e["alphas"], [100 * v for v in e["errors"]], marker="o", markersize=3,
                label=f"k={e['k']} (barrier {100 * e['error_barrier']:.1f}%)")
    ax.set_xlabel("interpolation α (0: copy a, 1: copy b)")
    ax.set_ylabel("test error (%)")
    ax.set_title("Error along the linear path between two copies trained from θk")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(paths[0], lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = sorted(entries, key=lambda e: e["k"])
    ax.plot([e["k"] for e in points], [100 * e["error_barrier"] for e in points], marker="o", label="error barrier")
    ax.axhline(100 * threshold, color="gray", linestyle="--", label=f"threshold {100 * threshold:g}%")
    if len(points) > 1 and points[0]["k"] == 0 and points[1]["k"] > 0:  # 0 and steps spread over decades
        ax.set_xscale("symlog", linthresh=max(points[1]["k"], 1))
    ax.set_xticks([e["k"] for e in points])  # each point scanned, labelled as the number it is
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("rewind point k (optimizer steps)")
    ax.set_ylabel("error barrier (%)")
    ax.set_title("Instability: the error barrier against the rewind point")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(paths[1], lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return paths
