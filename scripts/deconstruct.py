#!/usr/bin/env python
"""Reproduce Zhou et al. 2019, "Deconstructing Lottery Tickets", on LeNet-300-100 (offline data).

    scripts/deconstruct.py [--dataset mnist5k|fashion_mnist] [--epochs E] [--output DIR] [--quick]
                           [--criteria a,b,..] [--survivors a,b,..] [--remaining 5,..]
                           [--supermask-remaining 80,..] [--supermask-epochs N] [--seed S]

1. Train LeNet-300-100 dense once (Adam 1.2e-3, batch 60): record θ0 and θ_final.
2. Criteria x survivors: for every mask criterion (tf_lth.pruning.selection.CRITERIA) and every survivors
   action (tf_lth.pruning.rewind.SURVIVORS), prune ONE-SHOT from (θ0, θ_final) to each --remaining level
   and retrain the ticket for E epochs (same batch order for all). The per-layer sparsity follows
   the paper's per-round keep rates (fc 0.8, output 0.9): the level is reached as k "rounds' worth"
   in one step, k real, i.e. fc keeps 0.8^k and the output layer 0.9^k of its weights.
   A small extra table compares the mask-0 action (pruned weights zero vs frozen at θ0).
3. Supermask at init (no training): the large_final and large_final_same_sign masks (one-shot from
   θ_final) over θ0 ("original") and over sign(θ0)·σ ("signed_constant") at each
   --supermask-remaining level, plus a random mask; and the learned supermask (tf_lth.keras2.supermask,
   Adam 0.1 on the scores, --supermask-epochs) over θ0 and over the signed constant.

Writes to --output: results.json (everything), tables.md (the Markdown tables, also printed) and
supermask_at_init.png (accuracy vs weights remaining, log x axis). Grids: mnist5k runs the full
10 x 5 grid at 10% and 2% remaining, 10 epochs (~8-10 min on 2 cores); fashion_mnist defaults to a
reduced grid (6 criteria x 4 survivors at 5%, 5 epochs, learned supermask 3 epochs, ~12 min);
--quick runs 3 criteria x 3 survivors at 5%, 3 epochs (~35 s on mnist5k).
Accuracies are final test accuracies after E epochs; results.json also holds the test accuracy at
the early-stopping epoch (minimum validation loss), which the paper plots.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tf_lth.data import pipeline as data_lib  # noqa: E402
from tf_lth.pruning import selection as masks_lib  # noqa: E402
from tf_lth.models import networks  # noqa: E402
from tf_lth.keras2 import supermask
from tf_lth.util.io import write_json  # noqa: E402
from tf_lth.keras2 import keras  # noqa: E402
from tf_lth.ticket.ticket import LotteryTicket  # noqa: E402
from tf_lth.pruning.rewind import SURVIVORS  # noqa: E402
from tf_lth.keras2.training import LOSS  # noqa: E402

PAPER_RATES = {"dense": 0.2, "output": 0.1}  # Zhou et al.: keep 0.8 per round (fc), 0.9 (output)
SUPERMASK_CRITERIA = ("large_final", "large_final_same_sign")

# name -> (criteria, survivors, table levels in % remaining, epochs, supermask sweep levels, supermask epochs)
GRIDS = {
    "full": (tuple(masks_lib.CRITERIA), SURVIVORS, (10.0, 2.0), 10, (80, 60, 40, 20, 10, 5, 2, 1), 10),
    "reduced": (("large_final", "magnitude_increase", "large_init", "movement", "small_final", "random"),
                ("original", "reinit", "signed_constant", "random_sign_constant"), (5.0,), 5,
                (80, 60, 40, 20, 10, 5, 2, 1), 3),
    "quick": (("large_final", "magnitude_increase", "random"), ("original", "signed_constant", "random_sign_constant"),
              (5.0,), 3, (80, 20, 5), 2),
}


# -- pruning to a level ---------------------------------------------------------------------------
def level_rates_by_layer(ticket: LotteryTicket, remaining: float) -> dict[str, float]:
    """One-shot rates, by layer name (what ``LotteryTicket(rates=...)`` takes), that leave
    ``remaining`` (a fraction) of ``ticket``'s pruned weights with the layers in the ratio of its
    per-round rates (:func:`tf_lth.pruning.selection.level_rates`, which works on weight keys)."""
    pruned = set(ticket.pruned_keys())
    sizes = {k: m.size for k, m in ticket.masks.items() if k in pruned}  # the masks' order: same sums
    by_key = masks_lib.level_rates(sizes, ticket.rates, remaining)
    return {ticket.masked.layers[k].name: rate for k, rate in by_key.items()}


# -- training -------------------------------------------------------------------------------------
class Trainer:
    """Trains tickets with the LeNet-300-100 recipe, the same batch order for every run.

    Not :func:`tf_lth.keras2.training.train_round`: that draws each round's batches from (seed, round) and
    compiles with XLA and steps_per_execution, whereas every run here shares one batch order (the
    paper's controlled comparison) and keeps the results this script has always produced."""

    def __init__(self, ds, epochs: int, seed: int, batch_size: int = 60, learning_rate: float = 1.2e-3):
        self.ds, self.epochs, self.seed, self.batch_size, self.lr = ds, epochs, seed, batch_size, learning_rate
        self.val, self.test = ds.pipeline("val", 1000), ds.pipeline("test", 1000)

    def fit(self, ticket: LotteryTicket, epochs: int | None = None) -> dict:
        epochs = epochs or self.epochs
        ticket.model.compile(keras.optimizers.Adam(self.lr), LOSS, metrics=["accuracy"], jit_compile=False)
        train, steps = self.ds.epochs(self.batch_size, epochs, seed=self.seed)
        ticket.model.fit(train, epochs=epochs, steps_per_epoch=steps, validation_data=self.val,
                         callbacks=[ticket.callback(test_data=self.test)], verbose=0)
        h = ticket.history[-1]
        return {"test_accuracy": h["test_accuracy"], "early_stop_test_accuracy": h.get("early_stop_test_accuracy"),
                "early_stop_iteration": h.get("early_stop_iteration"), "weights_remaining": ticket.weights_remaining}

    def accuracy(self, model) -> float:
        if model.optimizer is None:
            model.compile(loss=LOSS, metrics=["accuracy"], jit_compile=False)
        return float(model.evaluate(self.test, verbose=0, return_dict=True)["accuracy"])


# -- the three experiments ------------------------------------------------------------------------
def criteria_grid(build, theta0, thetaf, trainer: Trainer, criteria, survivors, levels, base: LotteryTicket,
                  seed: int = 0, frozen=(), log=print) -> list[dict]:
    """Retrain a one-shot ticket for every level x criterion x survivors, and for the ``frozen``
    criteria also with pruned weights frozen at θ0 (survivors original); return one row per run."""
    rows = []
    for level in levels:
        rates = level_rates_by_layer(base, level / 100)
        combos = [(c, s, "zero") for c in criteria for s in survivors]
        combos += [(c, "original", "frozen") for c in frozen]
        for criterion, surv, prune in combos:
            t0 = time.perf_counter()
            ticket = LotteryTicket.one_shot(build(), theta0, thetaf, rates=rates, criterion=criterion,
                                            survivors=surv, pruned=prune, seed=seed)
            row = {"level": level, "criterion": criterion, "survivors": surv, "pruned": prune,
                   **trainer.fit(ticket), "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            log(f"  {level:g}% {criterion:24s} {surv:20s} {prune:6s} test {row['test_accuracy']:.4f} "
                f"(early-stop {row['early_stop_test_accuracy']:.4f})  {row['seconds']:.1f} s")
    return rows


def supermask_sweep(build, theta0, thetaf, trainer: Trainer, levels, base: LotteryTicket, criteria, seed=0,
                    log=print) -> list[dict]:
    """Accuracy of the untrained masked net: masks (one-shot from θ_final) over θ0 and signed constant."""
    rows = []
    for level in levels:
        rates = level_rates_by_layer(base, level / 100)
        for criterion in (*criteria, "random"):
            ticket = LotteryTicket.one_shot(build(), theta0, thetaf, rates=rates, criterion=criterion, seed=seed)
            ticket.model.compile(loss=LOSS, metrics=["accuracy"], jit_compile=False)
            row = {"level": level, "criterion": criterion, "weights_remaining": ticket.weights_remaining,
                   **{v: supermask.untrained_accuracy(ticket, trainer.test, v)
                      for v in ("original", "signed_constant")}}
            rows.append(row)
            log(f"  {level:g}% {criterion:24s} θ0 {row['original']:.4f}  signed constant {row['signed_constant']:.4f}")
    return rows


def learned_supermasks(build, theta0, trainer: Trainer, epochs: int, seed: int = 0, log=print) -> list[dict]:
    """Learn a supermask over θ0 and over sign(θ0)·σ (tf_lth.keras2.supermask) and score it on the test set."""
    rows = []
    for weights in supermask.WEIGHTS:
        t0 = time.perf_counter()
        source = build()
        source.set_weights(theta0)
        model = supermask.learn_supermask(source, weights=weights, seed=seed)
        model.compile(supermask.optimizer(), LOSS, metrics=["accuracy"], jit_compile=False)
        model.fit(trainer.ds.pipeline("train", trainer.batch_size, shuffle=True, seed=seed), epochs=epochs, verbose=0)
        kept = masks_lib.remaining(supermask.supermask_masks(model))
        rows.append({"weights": weights, "epochs": epochs, "weights_remaining": kept,
                     "test_accuracy": trainer.accuracy(model), "seconds": round(time.perf_counter() - t0, 1)})
        log(f"  learned supermask over {weights}: {100 * kept:.1f}% kept, test {rows[-1]['test_accuracy']:.4f} "
            f"({rows[-1]['seconds']:.1f} s)")
    return rows


# -- tables and figure ----------------------------------------------------------------------------
def criteria_table(rows: list[dict], key: str = "test_accuracy") -> str:
    """Markdown tables (one per level) of ``key`` (in %): criteria as rows, survivors as columns; a
    mask-0 table (zero vs frozen, original survivors) follows where frozen runs exist."""
    out = []
    for level in dict.fromkeys(r["level"] for r in rows):
        at = [r for r in rows if r["level"] == level]
        zero = [r for r in at if r["pruned"] == "zero"]
        criteria = list(dict.fromkeys(r["criterion"] for r in zero))
        survivors = list(dict.fromkeys(r["survivors"] for r in zero))
        cell = {(r["criterion"], r["survivors"]): r[key] for r in zero}
        remaining = np.mean([r["weights_remaining"] for r in at])
        out.append(f"Test accuracy (%) after retraining, {100 * remaining:.1f}% of weights remaining "
                   f"(one-shot; pruned weights zero)\n")
        out.append("| criterion | " + " | ".join(survivors) + " |")
        out.append("|---|" + "---:|" * len(survivors))
        for c in criteria:
            out.append(f"| {c} | " + " | ".join(_pct(cell.get((c, s))) for s in survivors) + " |")
        frozen = [r for r in at if r["pruned"] != "zero"]
        if frozen:
            out.append(f"\nMask-0 action at {100 * remaining:.1f}% remaining (survivors original)\n")
            out.append("| criterion | zero | frozen |")
            out.append("|---|---:|---:|")
            for c in dict.fromkeys(r["criterion"] for r in frozen):
                z = cell.get((c, "original"))
                f = next(r[key] for r in frozen if r["criterion"] == c)
                out.append(f"| {c} | {_pct(z)} | {_pct(f)} |")
        out.append("")
    return "\n".join(out)


def supermask_table(rows: list[dict], learned: list[dict]) -> str:
    """Markdown: untrained-supermask accuracy (%) per level, one column per (criterion, values)."""
    cols = list(dict.fromkeys((r["criterion"], v) for r in rows for v in ("original", "signed_constant")))
    levels = list(dict.fromkeys(r["level"] for r in rows))
    cell = {(r["level"], r["criterion"], v): r[v] for r in rows for v in ("original", "signed_constant")}
    head = ["Supermask accuracy at init (%), no training (masks one-shot from θ_final)\n",
            "| remaining | " + " | ".join(f"{c} / {_values(v)}" for c, v in cols) + " |",
            "|---:|" + "---:|" * len(cols)]
    for level in levels:
        head.append(f"| {level:g}% | " + " | ".join(_pct(cell.get((level, c, v))) for c, v in cols) + " |")
    if learned:
        head += ["", "Learned supermask (weights frozen, scores trained)\n", "| weights | epochs | kept | test |",
                 "|---|---:|---:|---:|"]
        head += [f"| {r['weights']} | {r['epochs']} | {100 * r['weights_remaining']:.1f}% | "
                 f"{_pct(r['test_accuracy'])} |" for r in learned]
    return "\n".join(head) + "\n"


def _values(v: str) -> str:
    return "θ0" if v == "original" else "signed const"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def plot_supermask(rows: list[dict], learned: list[dict], dense: float, path: Path, title: str) -> Path:
    from tf_lth.runner import plots  # first: it selects matplotlib's Agg backend (no display needed)

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.8))
    styles = {"original": "--", "signed_constant": "-"}
    colors = {"large_final": "tab:blue", "large_final_same_sign": "tab:red", "random": "tab:gray"}
    for criterion in dict.fromkeys(r["criterion"] for r in rows):
        at = sorted((r for r in rows if r["criterion"] == criterion), key=lambda r: -r["weights_remaining"])
        for values, ls in styles.items():
            ax.plot([100 * r["weights_remaining"] for r in at], [100 * r[values] for r in at], ls, marker="o",
                    ms=4, color=colors.get(criterion), label=f"{criterion} mask, {values.replace('_', ' ')}"
                    if values == "signed_constant" else f"{criterion} mask, θ0")
    for r, (marker, color) in zip(learned, (("s", "tab:green"), ("*", "tab:purple"))):
        ax.plot([100 * r["weights_remaining"]], [100 * r["test_accuracy"]], marker, ms=12, color=color, mfc="none",
                mew=1.8, label=f"learned supermask over {'θ0' if r['weights'] == 'init' else 'signed constant'}")
    ax.axhline(100 * dense, color="black", ls=":", label=f"dense, trained ({100 * dense:.1f}%)")
    ax.axhline(10, color="gray", ls="-.", lw=0.8, label="chance (10%)")
    plots.weights_remaining_axis(ax, [100 * r["weights_remaining"] for r in (*rows, *learned)])
    ax.set_ylim(0, 100)
    ax.set_ylabel("test accuracy (%), untrained weights")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- main -----------------------------------------------------------------------------------------
def _list(text, kind=str):
    return tuple(kind(x) for x in text.split(",") if x.strip())


def parse_args(argv=None):
    lines = __doc__.splitlines()
    p = argparse.ArgumentParser(description=lines[0], epilog="\n".join(lines[lines.index("") + 4:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "fashion_mnist", "mnist"))
    p.add_argument("--epochs", type=int, help="epochs of the dense run and of each retrained ticket "
                   "(default: 10 full grid, 5 reduced, 3 quick)")
    p.add_argument("--output", type=Path, help="output folder (default runs/deconstruct_<dataset>[_quick])")
    p.add_argument("--quick", action="store_true", help="small grid: 3 criteria x 3 survivors at 5%%, 3 epochs")
    p.add_argument("--grid", choices=tuple(GRIDS),
                   help="full (mnist5k default), reduced (fashion_mnist default), quick (= --quick)")
    p.add_argument("--criteria", type=_list, help=f"comma-separated, from {', '.join(masks_lib.CRITERIA)}")
    p.add_argument("--survivors", type=_list, help=f"comma-separated, from {', '.join(SURVIVORS)}")
    p.add_argument("--remaining", type=lambda t: _list(t, float),
                   help="%% of weights remaining for the retrained grid, comma-separated")
    p.add_argument("--frozen", type=_list, default=("large_final", "magnitude_increase"),
                   help="criteria also run with pruned weights frozen at θ0 (mask-0 action); '' for none")
    p.add_argument("--supermask-remaining", type=lambda t: _list(t, float), help="%% levels of the supermask sweep")
    p.add_argument("--supermask-epochs", type=int, help="epochs of the learned supermask (0 to skip)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    grid = args.grid or ("quick" if args.quick else "full" if args.dataset == "mnist5k" else "reduced")
    criteria, survivors, levels, epochs, sm_levels, sm_epochs = GRIDS[grid]
    args.grid = grid
    args.criteria = args.criteria or criteria
    args.survivors = args.survivors or survivors
    args.remaining = args.remaining or levels
    args.epochs = args.epochs or epochs
    args.supermask_remaining = args.supermask_remaining or sm_levels
    args.supermask_epochs = sm_epochs if args.supermask_epochs is None else args.supermask_epochs
    args.frozen = tuple(c for c in args.frozen if c in args.criteria)
    args.output = args.output or Path("runs") / f"deconstruct_{args.dataset}{'_quick' if grid == 'quick' else ''}"
    bad = [c for c in args.criteria if c not in masks_lib.CRITERIA] + [s for s in args.survivors if s not in SURVIVORS]
    if bad:
        p.error(f"unknown criteria/survivors: {', '.join(bad)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    ds = data_lib.load(args.dataset, seed=args.seed)
    trainer = Trainer(ds, args.epochs, args.seed)

    def build():
        return networks.lenet_300_100(ds.input_shape, ds.num_classes)

    keras.utils.set_random_seed(args.seed)
    source = build()
    dense = LotteryTicket(source, rates=PAPER_RATES, seed=args.seed)
    theta0 = list(dense.theta0)
    print(f"{ds.name}: grid {args.grid}, {len(args.criteria)} criteria x {len(args.survivors)} survivors at "
          f"{', '.join(f'{x:g}%' for x in args.remaining)}, {args.epochs} epochs per run")
    dense_result = trainer.fit(dense)
    thetaf = source.get_weights()  # the ticket wraps the source's own layers: same variables, θ0's order
    assert [w.shape for w in thetaf] == [w.shape for w in theta0]
    print(f"dense: test {dense_result['test_accuracy']:.4f} ({time.perf_counter() - started:.0f} s)")

    print("supermask at init:")
    sweep = supermask_sweep(build, theta0, thetaf, trainer, args.supermask_remaining, dense, SUPERMASK_CRITERIA,
                            args.seed)
    learned = (learned_supermasks(build, theta0, trainer, args.supermask_epochs, args.seed)
               if args.supermask_epochs else [])
    print("criteria x survivors:")
    grid = criteria_grid(build, theta0, thetaf, trainer, args.criteria, args.survivors, args.remaining, dense,
                         args.seed, frozen=args.frozen)

    tables = (f"# Deconstructing lottery tickets: LeNet-300-100 on {ds.name}\n\n"
              f"Dense: {100 * dense_result['test_accuracy']:.1f}% test accuracy after {args.epochs} epochs.\n\n"
              + criteria_table(grid) + "\n" + supermask_table(sweep, learned))
    seconds = round(time.perf_counter() - started, 1)
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    (out / "tables.md").write_text(tables)
    png = plot_supermask(sweep, learned, dense_result["test_accuracy"], out / "supermask_at_init.png",
                         f"Supermask at init, LeNet-300-100 on {ds.name}")
    result = {"dataset": ds.name, "grid": args.grid, "epochs": args.epochs, "seed": args.seed,
              "criteria": list(args.criteria), "survivors": list(args.survivors), "remaining": list(args.remaining),
              "pruning": "one-shot from the dense run, per-layer keep 0.8^k (fc) and 0.9^k (output)",
              "dense": dense_result, "criteria_survivors": grid, "supermask_at_init": sweep,
              "learned_supermask": learned, "seconds": seconds}
    write_json(out / "results.json", json.loads(json.dumps(result)))
    print("\n" + tables)
    print(f"wrote {out / 'results.json'}, {out / 'tables.md'}, {png} in {seconds:.0f} s")
    return result


if __name__ == "__main__":
    main()
