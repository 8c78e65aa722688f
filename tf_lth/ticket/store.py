"""A ticket in a folder: :func:`save` and :func:`load` (numpy files and JSON, written atomically).

::

    ticket.json          round, config, history, optimizer steps per round, kernel keys, model JSON
    theta0.npz           θ0 (every weight, numbered in the model's order)   [thetak.npz: θk]
    rounds/<k>/          masks.npz (by kernel key, "/" as "|") and weights.npz (the round's weights)

ticket.json is written last, so a folder whose ticket.json exists holds everything it names.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tf_lth.ticket import flavours
from tf_lth.config.configs import TicketConfig
from tf_lth.errors import TfLthError
from tf_lth.util.io import read_json, read_npz, write_json, write_npz
from tf_lth.ticket.ticket import LotteryTicket


def save(ticket: LotteryTicket, path) -> Path:
    """Write θ0, θk, this round's masks and weights, and the metrics (atomically, ticket.json last)."""
    path = Path(path)
    write_npz(path / "theta0.npz", numbered(ticket.theta0))
    if ticket.thetak is not None:
        write_npz(path / "thetak.npz", numbered(ticket.thetak))
    rd = path / "rounds" / str(ticket.round)
    write_npz(rd / "masks.npz", {k.replace("/", "|"): m for k, m in ticket.masks.items()})
    write_npz(rd / "weights.npz", numbered(ticket.get_weights()))
    write_json(path / "ticket.json", {
        "round": ticket.round, "config": asdict(ticket.config), "history": ticket.history,
        "steps": {str(r): s for r, s in sorted(ticket.steps.items())},
        "kernels": sorted(ticket.kernels()), "model": json.loads(ticket.source.to_json()), "flavour": ticket.flavour.name,
        **({"at_init": ticket.pruned_at_init} if ticket.pruned_at_init else {}),
    })
    return path


def load(path, round: int | None = None, model=None, custom_objects=None) -> LotteryTicket:
    """Rebuild a saved ticket at ``round`` (default: the last saved one) from its masks and
    weights; ``model`` gives the architecture when it cannot be rebuilt from its JSON."""
    path = Path(path)
    meta = read_json(path / "ticket.json")
    if round is not None:
        if not (path / "rounds" / str(round) / "masks.npz").exists():
            raise TfLthError(f"{path} has no round {round} (rounds saved: {', '.join(saved_rounds(path)) or 'none'})")
        meta["round"], meta["history"] = round, [h for h in meta["history"] if h["round"] <= round]
    if model is None:
        flavour = flavours.FLAVOURS.get(meta.get("flavour", flavours.TF_KERAS.name))
        model = flavour.model_from_json(json.dumps(meta["model"]), custom_objects)
    ticket = LotteryTicket(model, TicketConfig.from_dict(meta["config"]))
    if sorted(ticket.kernels()) != meta["kernels"]:
        raise TfLthError(f"{path} holds a ticket of another architecture (kernels {meta['kernels']})")
    n = len(ticket.theta0)
    ticket.round, ticket.history = meta["round"], meta["history"]
    ticket.pruned_at_init = meta.get("at_init")
    ticket.steps = {int(r): s for r, s in meta.get("steps", {}).items() if int(r) <= ticket.round}
    ticket.theta0 = unnumbered(read_npz(path / "theta0.npz"), n, path / "theta0.npz")
    if (path / "thetak.npz").exists():
        ticket.thetak = unnumbered(read_npz(path / "thetak.npz"), n, path / "thetak.npz")
    previous = path / "rounds" / str(ticket.round - 1) / "weights.npz"
    if ticket.rewind.keeps_weights and ticket.round and previous.exists():
        ticket.start_weights = unnumbered(read_npz(previous), n, previous)
    rd = path / "rounds" / str(ticket.round)
    masks = {k.replace("|", "/"): m for k, m in read_npz(rd / "masks.npz").items()}
    if sorted(masks) != meta["kernels"]:
        raise TfLthError(f"{rd / 'masks.npz'} does not hold the masks of {', '.join(meta['kernels'])}")
    ticket.set_masks(masks, unnumbered(read_npz(rd / "weights.npz"), n, rd / "weights.npz"))
    # a round saved after training holds its trained weights; one saved after next_round, its rewound ones
    ticket.holds = "trained" if any(h["round"] == ticket.round for h in ticket.history) else "rewound"
    return ticket


def saved_rounds(path: Path) -> list[str]:
    """The rounds a ticket folder holds masks of, in order."""
    return sorted((p.parent.name for p in Path(path).glob("rounds/*/masks.npz")), key=int)


def numbered(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """A list of weights as npz entries ``w0``, ``w1``, ..."""
    return {f"w{i}": a for i, a in enumerate(arrays)}


def unnumbered(d: dict[str, np.ndarray], n: int, path) -> list[np.ndarray]:
    """:func:`numbered`'s inverse, checking that the file holds the model's ``n`` weights."""
    if sorted(d) != sorted(f"w{i}" for i in range(n)):
        raise TfLthError(f"{path} holds {len(d)} arrays, the model has {n} weights: wrong or damaged file")
    return [d[f"w{i}"] for i in range(n)]
