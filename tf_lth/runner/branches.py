"""Branches: something new run off a finished experiment, as OpenLTH's branches are.

A question asked after a run (does round 6's ticket need its structure? do its survivors do as well
as signed constants? would its masks train better rewound to the previous round's weights?) should cost one twin's training per round it asks about, not a rerun of
the experiment. A branch loads the ticket of each chosen round from the experiment's folder
(:func:`tf_lth.ticket.store.load`), makes a twin of it (:data:`BRANCH_KINDS`) and trains that twin
exactly as the runner trains its own controls, so a branch that repeats one of them gives its very
numbers. It is stored beside the experiment, whose own files it never writes::

    RUN_DIR/branches/<kind>-<value>/results.json   {"branch": {"kind", "value", "rounds"}, "rounds": [...]}
    RUN_DIR/branches/<kind>-<value>/rounds/<k>/    result.json [ticket.ckpt.npz while training]

A finished round (its result.json) is skipped on a rerun, an interrupted one continues from its
epoch checkpoint. Only ``RUN_DIR/plots/`` is redrawn: the experiment's lines and every branch's.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

from tf_lth.config.configs import ExperimentConfig
from tf_lth.data import pipeline as data_lib
from tf_lth.errors import TfLthError
from tf_lth.pruning import controls
from tf_lth.pruning import rewind as rewind_lib
from tf_lth.pruning.rewind import SURVIVORS
from tf_lth.registry import Registry
from tf_lth.runner import at_init_branches
from tf_lth.ticket import flavours, store
from tf_lth.training import fit_round
from tf_lth.util.io import read_json, read_npz, write_json

BRANCHES = "branches"  # the folder of an experiment that holds its branches


class BranchKind(NamedTuple):
    """What a branch may be: the check of its value (the registry's or parser's own one-line error,
    given before anything loads) and ``make(ticket, value, run_dir)``, the twin
    of a round's ticket that the branch trains (``needs_data``: with the run's data)."""

    check: Callable[[str], object]
    make: Callable
    needs_data: bool = False  # make also takes data= (the run's Dataset) and batch_size= (the run's)


BRANCH_KINDS: Registry[BranchKind] = Registry("branch kind")


def control_twin(ticket, value: str, run_dir=None):
    """The ``value`` control of the round, made as the runner makes its own controls (same seeds), so
    a control the experiment ran is reproduced exactly and a new one is what the runner would give."""
    return controls.make(ticket, value)


def survivors_twin(ticket, value: str, run_dir=None):
    """The round's masks and rewind point (θ0, θk or the previous round's weights), its survivors
    restarted by the ``value`` action: only what the kept weights start from differs from the ticket,
    and the action draws (``reshuffle``, ``reinit``) from the seeds the experiment would have used."""
    twin = ticket.twin()
    twin.config = replace(twin.config, survivors=value)  # rewind_to reads the action from the config
    twin.theta0 = list(ticket.theta0)
    twin.masks = {k: m.copy() for k, m in ticket.masks.items()}
    twin.start_weights, twin.thetak = ticket.start_weights, ticket.thetak
    twin.rewind_to(ticket.rewind_source())
    return twin


def rewind_twin(ticket, value: str, run_dir):
    """The round's masks over another rewind point: ``init`` (θ0), ``lr`` / ``finetune`` (the previous
    round's trained weights, read from ``run_dir``; ``finetune`` also keeps its optimizer step) or
    ``iteration:K`` (θk, if the experiment took it at that K); the survivors action stays the run's."""
    mode = rewind_lib.parse(value)
    if mode.needs_snapshot and (ticket.thetak is None or ticket.rewind.iteration != mode.iteration):
        raise TfLthError(f"rewind {value} needs θk at step {mode.iteration}, which {run_dir} did not record: "
                         f"run the experiment with --rewind {value}")
    k = ticket.round
    twin = ticket.twin()
    twin.config, twin.rewind = replace(twin.config, rewind=value), mode
    twin.theta0, twin.thetak = list(ticket.theta0), ticket.thetak
    twin.masks = {key: m.copy() for key, m in ticket.masks.items()}
    previous = Path(run_dir) / "rounds" / str(k - 1) / "weights.npz"
    twin.start_weights = store.unnumbered(read_npz(previous), len(ticket.theta0), previous)
    twin.rewind_to(twin.rewind_source())
    step = mode.optimizer_iteration(ticket.steps.get(k - 1, [0, None])[1] or 0)
    twin.steps, twin.pending_step = {k: [step, None]}, step
    return twin


BRANCH_KINDS.add("control", BranchKind(controls.CONTROLS.get, control_twin))
BRANCH_KINDS.add("survivors", BranchKind(SURVIVORS.get, survivors_twin))
BRANCH_KINDS.add("rewind", BranchKind(rewind_lib.parse, rewind_twin))
BRANCH_KINDS.add("at_init", BranchKind(at_init_branches.parse, at_init_branches.at_init_twin, needs_data=True))
BRANCH_KINDS.add("ablation", BranchKind(at_init_branches.check_ablation, at_init_branches.ablation_twin))


def check(kind: str, value: str) -> BranchKind:
    """The kind of branch ``kind``, with ``value`` one of its choices (else a one-line error)."""
    branch_kind = BRANCH_KINDS.get(kind)
    branch_kind.check(value)
    return branch_kind


def make_twin(ticket, kind: str, value: str, run_dir=None, **data):
    """The twin that the ``kind``/``value`` branch trains at ``ticket``'s round (not compiled);
    ``run_dir``: the experiment's folder (a rewind branch reads the previous round's weights there);
    ``data``: ``data=`` and ``batch_size=`` for a kind that ``needs_data`` (at_init's gradients)."""
    return check(kind, value).make(ticket, value, run_dir, **data)


def branch_name(kind: str, value: str) -> str:
    return f"{kind}-{value.replace('/', '-')}"  # at_init's METHOD/ABLATION: one folder


def read_experiment(run_dir: Path) -> tuple[ExperimentConfig, list[dict]]:
    """The config and the finished rounds' rows of the experiment in ``run_dir`` (one-line errors)."""
    cfg = ExperimentConfig.of_run(run_dir, ("config.json", "results.json", "ticket.json"))
    return cfg, read_json(run_dir / "results.json")["rounds"]


def chosen_rounds(rows: list[dict], rounds, run_dir: Path) -> list[int]:
    """The rounds to branch at: ``rounds`` (ints, or text ``"3,6,9"``), each a pruned round the
    experiment has finished; None: all of those."""
    have = sorted(r["round"] for r in rows if r["round"] >= 1)
    if rounds is None:
        return have
    try:
        wanted = sorted({int(r) for r in (rounds.split(",") if isinstance(rounds, str) else rounds) if str(r).strip()})
    except ValueError:
        raise TfLthError(f"rounds {rounds!r}: give round numbers like 3,6,9") from None
    bad = [r for r in wanted if r not in have]
    if bad or not wanted:
        raise TfLthError(f"{run_dir} has no finished pruned round {', '.join(map(str, bad)) or 'given'}: "
                         f"choose from {', '.join(map(str, have)) or 'none (it has no pruned round yet)'}")
    return wanted


def finished(folder: Path) -> list[dict]:
    """The result rows a branch folder holds, by round."""
    paths = [p for p in (folder / "rounds").glob("*/result.json") if p.parent.name.isdigit()]
    return [read_json(p) for p in sorted(paths, key=lambda p: int(p.parent.name))]


def run_branch(run_dir, kind: str, value: str, rounds: Iterable[int] | str | None = None, *,
               data_dir: str | None = None, verbose: int = 0, log=print) -> dict:
    """Train the ``kind``/``value`` branch of the experiment in ``run_dir`` at ``rounds`` (default:
    every pruned round it finished), skipping rounds the branch already holds; redraw the
    experiment's plots with every branch; return the branch's results.json content. ``data_dir``:
    where the dataset's files are now, if not where the experiment found them."""
    run_dir = Path(run_dir)
    branch_kind = check(kind, value)
    cfg, rows = read_experiment(run_dir)
    todo = chosen_rounds(rows, rounds, run_dir)
    name = branch_name(kind, value)
    folder = run_dir / BRANCHES / name
    data = val = test = None
    for k in todo:
        done = folder / "rounds" / str(k) / "result.json"
        if done.exists():
            continue
        if data is None:  # loaded only when some round is still to train
            data = data_lib.load_config(cfg, data_dir)
            val, test = data.pipeline("val", 1000), data.pipeline("test", 1000)
        started, checkpoint = time.time(), done.parent / "ticket.ckpt.npz"
        extra = {"data": data, "batch_size": cfg.training.batch_size} if branch_kind.needs_data else {}
        twin = branch_kind.make(store.load(run_dir, round=k), value, run_dir, **extra)
        kit = flavours.by_version(cfg.keras).training
        kit.compile_round(twin, cfg.training, fit_round.steps_per_epoch(data, cfg.training))
        result = fit_round.train_round(kit, twin, data, cfg.training, seed=cfg.seed, round_=k, val=val, test=test,
                                       checkpoint=checkpoint, tensorboard=None, verbose=verbose)
        result["wall_seconds"] = round(time.time() - started, 2)
        write_json(done, result)
        checkpoint.unlink(missing_ok=True)
        log(f"branch {name} round {k}: weights {100 * result['weights_remaining']:.1f}%  "
            f"test {result['test_accuracy']:.4f}  early-stop it {result['early_stop_iteration']}  "
            f"{result['wall_seconds']:.1f} s")
    held = finished(folder)
    content = {"branch": {"kind": kind, "value": value, "rounds": [r["round"] for r in held]}, "rounds": held}
    write_json(folder / "results.json", content)
    from tf_lth.runner import plots  # matplotlib: only once something is drawn

    plots.plot_results(rows_with_branches(run_dir), run_dir / "plots")
    return content


def rows_with_branches(run_dir) -> list[dict]:
    """The experiment's results.json rows, each branch's result of a round added to that round's
    ``controls`` under the branch's name: what the plots draw, one line per control and branch."""
    run_dir = Path(run_dir)
    rows = [{**row, "controls": dict(row.get("controls") or {})}
            for row in read_json(run_dir / "results.json")["rounds"]]
    by_round = {row["round"]: row for row in rows}
    for folder in sorted(p for p in (run_dir / BRANCHES).glob("*") if p.is_dir()):
        for result in finished(folder):
            if result.get("round") in by_round:
                by_round[result["round"]]["controls"][folder.name] = result
    return rows
