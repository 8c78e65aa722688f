"""Channel groups: which output channels of a network are tied together, and what removing one touches
(pure Python and numpy: each Keras flavour reads its model into a :class:`Graph`, ``<flavour>.graph.describe``).

A structured ticket removes whole units (Dense neurons, convolution filters). A unit's channel lives on past
its layer: through BatchNormalization, activations and pooling, into the next layer's input rows, across a
``Flatten`` (channel ``c`` of an ``H x W x C`` map is feature ``p * C + c`` of every position ``p``,
channels-last), into a ``Concatenate`` (at its offset), and through an ``Add`` / ``Multiply`` / ...,
which *ties* the channels of its inputs: channel ``c`` of a residual block's output and of its shortcut
are one channel, removed together or not at all. A :class:`Group` is such a set of tied channels, with
every place it reaches (:class:`Member`): the producers' output units, the per-channel layers
(depthwise kernels, BatchNormalization), the consumers' input rows.

A group whose channels cannot be removed safely keeps all of them and says why (``fixed``): the model's
input and its outputs, a layer this module does not know (a custom layer, a ``Lambda``, a ``Reshape``,
a depthwise multiplier above 1, ...), or a layer whose kernel has no mask. Nothing ever breaks the model:
an unknown layer only fixes the groups it touches.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KINDS = ("input", "producer", "depthwise", "channelwise", "flatten", "merge", "concat", "unknown")


@dataclass
class Node:
    """One layer of a :class:`Graph`, as the flavour's ``describe`` reads it.

    ``kind``: one of :data:`KINDS` (``producer``: Dense or a convolution making ``units`` channels;
    ``channelwise``: per-channel or channel-preserving, e.g. BatchNormalization, activations, pooling,
    padding, dropout, global pooling); ``inputs``: the names of the layers feeding it, in order;
    ``in_shapes`` / ``out_shape``: one example's shapes; ``kernel``: the key of its kernel (``conv1/kernel``)
    if it has one; ``spatial``: a producer's kernel entries per input channel (3x3: 9; Dense: 1);
    ``macs``: its multiply-adds for one example at full size; ``what``: its class, for messages;
    ``weighted``: a channelwise layer with weights per channel (BatchNormalization), which cannot follow a
    Flatten or a Concatenate; ``fixed``: why a producer's own units must all stay (a softmax activation
    mixes them), or None."""

    name: str
    kind: str
    inputs: list
    in_shapes: list
    out_shape: tuple
    units: int | None = None
    kernel: str | None = None
    spatial: int = 1
    macs: int = 0
    what: str = ""
    weighted: bool = False
    fixed: str | None = None


@dataclass
class Graph:
    """A network as nodes in topological order (``nodes``: name -> :class:`Node`) and its output layers."""

    nodes: dict
    outputs: list


@dataclass
class Member:
    """Where a group's channels live in one layer: as its output units (``role="out"``), as its channels
    (``"channel"``: depthwise kernel, BatchNormalization), or as its input rows (``"in"``; ``rows[p, c]``:
    the kernel row of channel ``c`` at position ``p`` of a Flatten, plus a Concatenate's offset)."""

    layer: str
    role: str
    kernel: str | None = None
    rows: np.ndarray | None = None


@dataclass
class Group:
    """Tied channels: ``size`` of them, where they live (``members``) and why they stay if they must (``fixed``)."""

    index: int
    size: int
    members: list = field(default_factory=list)
    fixed: str | None = None

    def producers(self) -> list:
        return [m for m in self.members if m.role == "out"]

    def layers(self) -> list[str]:
        return list(dict.fromkeys(m.layer for m in self.members))


class _Spaces:
    """Union-find over channel spaces (a producer's output, the input, an unknown layer's output)."""

    def __init__(self):
        self.parent, self.size, self.fixed = [], [], []

    def new(self, size: int, fixed: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.size.append(int(size))
        self.fixed.append(fixed)
        return len(self.parent) - 1

    def root(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def fix(self, s: int, why: str) -> None:
        r = self.root(s)
        self.fixed[r] = self.fixed[r] or why

    def union(self, a: int, b: int) -> None:
        a, b = self.root(a), self.root(b)
        if a != b:
            self.parent[b] = a
            self.fixed[a] = self.fixed[a] or self.fixed[b]


def _spaces_of(desc) -> list[int]:
    """The spaces a tensor descriptor reads: ``("space", s)``, ``("flat", s, positions)``, ``("concat", parts)``."""
    if desc is None:
        return []
    if desc[0] == "concat":
        return [s for part, _ in desc[1] for s in _spaces_of(part)]
    return [desc[1]]


def _rows(desc, spaces: _Spaces) -> list[tuple[int, np.ndarray]] | None:
    """``[(space, rows[p, c])]``: which input rows of a consumer each channel of each space is, or None."""
    if desc[0] == "space":
        return [(desc[1], np.arange(spaces.size[desc[1]])[None, :])]
    if desc[0] == "flat":
        size, positions = spaces.size[desc[1]], desc[2]
        return [(desc[1], np.arange(positions)[:, None] * size + np.arange(size)[None, :])]
    found, offset = [], 0
    for part, width in desc[1]:
        inner = _rows(part, spaces)
        if inner is None:
            return None
        found += [(s, rows + offset) for s, rows in inner]
        offset += width
    return found


def find(graph: Graph, masked: set, keep: tuple = ()) -> list[Group]:
    """The channel groups of ``graph``: ``masked`` names the kernels a ticket can mask, ``keep`` the layers
    whose own units must stay (a ticket's ``ignore``). Every group is returned, fixed ones with their reason."""
    spaces, out, members = _Spaces(), {}, []  # members: (space, Member)

    def fix_all(desc, why):
        for s in _spaces_of(desc):
            spaces.fix(s, why)

    for node in graph.nodes.values():
        ins = [out.get(name) for name in node.inputs]
        what = f"{node.name} ({node.what or node.kind})"
        if node.kind == "input":
            out[node.name] = ("space", spaces.new(node.out_shape[-1], "the model's input"))
            continue
        if node.kind == "producer" and node.kernel not in masked:  # its rows cannot be masked: all read
            for desc in ins:
                fix_all(desc, f"{what} has no kernel mask")
        if node.kind == "producer":
            desc = ins[0] if len(ins) == 1 else None
            rows = _rows(desc, spaces) if desc is not None else None
            if rows is None:
                for d in ins:
                    fix_all(d, f"{what} reads it in a way tf-lth cannot slice")
            else:
                members += [(s, Member(node.name, "in", node.kernel, r)) for s, r in rows]
            s = spaces.new(node.units, None if node.kernel in masked else f"{what} has no kernel mask")
            if node.name in keep:
                spaces.fix(s, f"{what} is kept whole (ignore)")
            if node.fixed:
                spaces.fix(s, f"{what} {node.fixed}")
            members.append((s, Member(node.name, "out", node.kernel)))
            out[node.name] = ("space", s)
        elif node.kind in ("depthwise", "channelwise") and len(ins) == 1 and ins[0] is not None and ins[0][0] == "space":
            members.append((ins[0][1], Member(node.name, "channel", node.kernel if node.kind == "depthwise" else None)))
            out[node.name] = ins[0]
        elif node.kind == "channelwise" and len(ins) == 1 and ins[0] is not None:
            if node.macs or node.kernel or node.weighted:  # per-feature weights after a Flatten or a Concatenate
                fix_all(ins[0], f"{what} has weights per feature")
            out[node.name] = ins[0]
        elif node.kind == "flatten" and len(ins) == 1 and ins[0] is not None and ins[0][0] == "space":
            positions = int(np.prod(node.in_shapes[0][:-1])) if len(node.in_shapes[0]) > 1 else 1
            out[node.name] = ("flat", ins[0][1], positions)
        elif node.kind == "merge" and ins and all(d is not None and d[0] == "space" for d in ins):
            for d in ins[1:]:
                spaces.union(ins[0][1], d[1])
            out[node.name] = ins[0]
        elif node.kind == "concat" and ins and all(d is not None for d in ins):
            out[node.name] = ("concat", [(d, shape[-1]) for d, shape in zip(ins, node.in_shapes)])
        else:
            for desc in ins:
                fix_all(desc, f"{what} is a layer tf-lth cannot slice")
            out[node.name] = ("space", spaces.new(node.out_shape[-1] if node.out_shape else 1, f"{what} made it"))
    for name in graph.outputs:
        fix_all(out.get(name), f"{name} is a model output")
    groups: dict[int, Group] = {}
    for s in range(len(spaces.parent)):
        r = spaces.root(s)
        groups.setdefault(r, Group(len(groups), spaces.size[r], fixed=spaces.fixed[r]))
    for s, member in members:
        groups[spaces.root(s)].members.append(member)
    return [g for g in groups.values() if g.members]


def prunable(groups: list[Group]) -> list[Group]:
    return [g for g in groups if g.fixed is None and g.producers()]


# -- masks, sizes, multiply-adds --------------------------------------------------------------------------
def remove(group: Group, kept: np.ndarray, masks: dict) -> dict:
    """``masks`` (kernel key -> bool array; changed arrays are copies) with the channels not ``kept`` of
    ``group`` removed wherever they live."""
    gone = np.flatnonzero(~np.asarray(kept, bool))
    if not gone.size:
        return masks
    masks = dict(masks)
    for m in group.members:
        if m.kernel is None or m.kernel not in masks:
            continue
        mask = masks[m.kernel] = masks[m.kernel].copy()
        if m.role == "out":
            mask[..., gone] = False
        elif m.role == "channel":  # a depthwise kernel [h, w, channels, multiplier]
            mask[..., gone, :] = False
        else:
            mask[..., m.rows[:, gone].ravel(), :] = False
    return masks


def alive(group: Group, masks: dict) -> np.ndarray:
    """Which channels of ``group`` are alive: some producer still has a weight in that unit."""
    found = np.zeros(group.size, bool)
    for m in group.producers():
        if m.kernel in masks:
            mask = masks[m.kernel]
            found |= mask.reshape(-1, mask.shape[-1]).any(axis=0)
    return found


def kept_channels(groups: list[Group], masks: dict) -> dict[int, np.ndarray]:
    """Group index -> its alive channels (every channel of a fixed group)."""
    return {g.index: np.ones(g.size, bool) if g.fixed else alive(g, masks) for g in groups}


def read_channels(groups: list[Group], masks: dict) -> dict[int, np.ndarray]:
    """Group index -> which of its channels some layer still reads (an input row left in a consumer's
    mask; a consumer without a mask reads everything), every channel of a fixed group. A channel nobody
    reads can be cut out of the network with its function unchanged, whatever its producer holds: this
    is what a shrunk model keeps. A group nobody reads at all keeps its first channel (no empty layer)."""
    found = {}
    for g in groups:
        read = np.ones(g.size, bool) if g.fixed else np.zeros(g.size, bool)
        for m in g.members if not g.fixed else ():
            if m.role != "in":
                continue
            if m.kernel not in masks:
                read[:] = True
                break
            mask = np.asarray(masks[m.kernel], bool)
            per_row = np.moveaxis(mask, -2, 0).reshape(mask.shape[-2], -1).any(axis=1)
            read |= per_row[m.rows].any(axis=0)
        if g.size and not read.any():
            read[0] = True
        found[g.index] = read
    return found


def macs(graph: Graph, groups: list[Group], kept: dict | None = None) -> dict[str, int]:
    """Multiply-adds of one example per layer, with only the ``kept`` channels (group index -> bool; all by
    default): a layer's count scales with its kept output channels and kept input rows."""
    fraction_in, fraction_out = {}, {}
    for g in groups:
        share = 1.0 if kept is None else float(np.mean(kept[g.index])) if g.size else 1.0
        for m in g.members:
            if m.role == "out":
                fraction_out[m.layer] = share
            elif m.role == "channel":  # a depthwise layer's work scales with its channels, once
                fraction_out[m.layer] = share
            else:
                fraction_in[m.layer] = fraction_in.get(m.layer, 0.0) + share * m.rows.size
    total_rows = {}
    for g in groups:
        for m in g.members:
            if m.role == "in":
                total_rows[m.layer] = total_rows.get(m.layer, 0) + m.rows.size
    found = {}
    for node in graph.nodes.values():
        if not node.macs:
            continue
        rows_in = fraction_in.get(node.name, 1.0) / total_rows[node.name] if node.name in total_rows else \
            fraction_in.get(node.name, 1.0)
        found[node.name] = int(round(node.macs * rows_in * fraction_out.get(node.name, 1.0)))
    return found


__all__ = ["Node", "Graph", "Member", "Group", "KINDS", "find", "prunable", "remove", "alive", "kept_channels", "read_channels", "macs"]
