"""What experiments wrote, read back without TensorFlow: flat rows, replicate aggregates, comparisons.

A run folder's results.json is ``{"config", "rounds": [row, ...]}``; a replicate folder holds one
run folder per seed (``seed_<s>/``) and the aggregate written from them (``aggregate.json``: per
round the mean, min and max over seeds of every numeric metric, controls included). Several runs or
aggregates are compared by the config keys in which they differ (:func:`labels`).
"""
from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

from tf_lth.errors import TfLthError
from tf_lth.util.io import atomic_write, read_json

SEED_PREFIX = "seed_"  # a replicate folder holds seed_<s>/ per seed
AGGREGATE = "aggregate.json"


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested mappings as one level of ``a.b`` keys (results.csv's columns, config comparison)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def write_csv(path, rows: list[dict]) -> None:
    """``rows`` flattened into one CSV (columns in order of first appearance), atomically."""
    flat = [flatten(r) for r in rows]
    columns = list(dict.fromkeys(k for row in flat for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns)
    writer.writeheader()
    writer.writerows(flat)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def parse_seeds(text) -> tuple[int, ...]:
    """``"0-4"`` -> (0, 1, 2, 3, 4); ``"0,3,7"`` -> (0, 3, 7); a list of ints passes through."""
    if isinstance(text, (list, tuple)):
        parts = [str(p) for p in text]
    else:
        parts = str(text).split(",")
    seeds = []
    for part in (p.strip() for p in parts if p.strip()):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match or (match[2] and int(match[2]) < int(match[1])):
            raise TfLthError(f"seeds {text!r}: use a range like 0-4 or a list like 0,3,7")
        seeds += range(int(match[1]), int(match[2] or match[1]) + 1)
    if not seeds or len(set(seeds)) != len(seeds):
        raise TfLthError(f"seeds {text!r}: give each seed once, e.g. 0-4 or 0,3,7")
    return tuple(seeds)


def numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def aggregate(runs: dict[int, dict]) -> dict:
    """Per round, ``{"mean", "min", "max", "n"}`` over seeds of every numeric metric of the rows
    (flattened: ``controls.random_reinit.test_accuracy``); ``runs`` maps seed -> results.json. Only
    rounds every seed finished are aggregated."""
    if not runs:
        raise TfLthError("nothing to aggregate: no finished run")
    if len({repr(without_seed(r["config"])) for r in runs.values()}) > 1:
        raise TfLthError("the runs hold different experiments: aggregate the seeds of one experiment")
    by_round = [{row["round"]: flatten(row) for row in r["rounds"]} for r in runs.values()]
    common = sorted(set.intersection(*(set(rows) for rows in by_round)))
    rounds = []
    for k in common:
        rows = [rows[k] for rows in by_round]
        keys = [key for key in rows[0] if key != "round" and all(numeric(row.get(key)) for row in rows)]
        stats = {}
        for key in keys:
            values = [float(row[key]) for row in rows]
            stats[key] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values),
                          "n": len(values)}
        rounds.append({"round": k, **stats})
    config = without_seed(next(iter(runs.values()))["config"])
    return {"seeds": sorted(runs), "config": {**config, "seeds": sorted(runs)}, "rounds": rounds}


def without_seed(config: dict) -> dict:
    """An experiment's config less its seed (also the ticket's): what the seeds of replicates share."""
    config = {k: v for k, v in config.items() if k != "seed"}
    if isinstance(config.get("ticket"), dict):
        config["ticket"] = {k: v for k, v in config["ticket"].items() if k != "seed"}
    return config


def read_run(folder) -> dict:
    """A run folder's results.json, or an aggregate folder's aggregate.json, as ``{"label_config",
    "rows": [{"round", metric: value or {"mean","min","max"}}]}``; a one-line error otherwise."""
    folder = Path(folder)
    if (folder / AGGREGATE).exists():
        agg = read_json(folder / AGGREGATE)
        return {"config": agg["config"], "rows": agg["rounds"], "aggregate": True}
    if (folder / "results.json").exists():
        res = read_json(folder / "results.json")
        if "branch" in res:  # RUN/branches/<kind>-<value>/: the run's config, labelled by the branch
            run = folder.parent.parent
            if not (run / "config.json").exists():
                raise TfLthError(f"{folder} is a branch outside its run folder (no {run / 'config.json'}): give "
                                 "RUN_DIR/branches/<name> where tf-lth branch wrote it")
            return {"config": read_json(run / "config.json"), "rows": [flatten(r) for r in res["rounds"]],
                    "aggregate": False, "label": folder.name}
        return {"config": res["config"], "rows": [flatten(r) for r in res["rounds"]], "aggregate": False}
    raise TfLthError(f"{folder} holds neither results.json (a run or a branch) nor {AGGREGATE} (replicates): "
                     "give folders written by tf-lth run or tf-lth branch")


def labels(configs: list[dict]) -> list[str]:
    """A label per config from the (flattened) keys in which they differ, last name part only
    (``rewind=lr``; keys a config lacks are left out); identical configs are numbered."""
    flat = [flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f if len({repr(g.get(k)) for g in flat}) > 1})
    out = []
    for i, f in enumerate(flat):
        parts = dict.fromkeys(f"{k.split('.')[-1]}={_text(f[k])}" for k in keys if f.get(k) is not None)
        out.append(", ".join(parts) if parts else f"run {i + 1}")
    return out


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def value(row: dict, metric: str):
    """``row``'s metric as (mean, min, max) for an aggregate row or (v, v, v) for a run's row."""
    v = row.get(metric)
    if isinstance(v, dict):
        return v["mean"], v["min"], v["max"]
    return (v, v, v) if numeric(v) else (None, None, None)


def compare_table(runs: list[dict], names: list[str], metric: str) -> str:
    """One line per round: weights remaining (%) and each run's ``metric`` (mean [min, max])."""
    head = f"{'round':>5} {'remain%':>8}" + "".join(f"  {n}" for n in names)
    lines = [head]
    rounds = sorted({row["round"] for run in runs for row in run["rows"]})
    for k in rounds:
        cells, remain = [], None
        for run in runs:
            row = next((r for r in run["rows"] if r["round"] == k), None)
            mean, lo, hi = value(row, metric) if row else (None, None, None)
            remain = remain if remain is not None or not row else value(row, "weights_remaining")[0]
            cells.append("-" if mean is None else f"{mean:.4g}" if lo == hi else f"{mean:.4g} [{lo:.4g}, {hi:.4g}]")
        pct = "-" if remain is None else f"{100 * remain:.2f}"
        lines.append(f"{k:>5} {pct:>8}" + "".join(f"  {c:>{len(n)}}" for c, n in zip(cells, names)))
    return "\n".join(lines)


SUMMARY_LEGEND = ("best_it: iteration of minimum validation loss (the early-stopping point); test@best: test accuracy "
                  "there; supermask: the round's masks over the untrained weights as signed constants (Zhou et al.); "
                  "controls: test accuracy at the end")


def summary_table(results: list, controls: tuple) -> str:
    """The end-of-run table: one line per round, and a line saying what the columns are."""
    head = f"{'round':>5} {'weights%':>8} {'test':>7} {'best_it':>8} {'test@best':>9} {'supermask':>9}"
    head += "".join(f" {c:>14}" for c in controls)
    lines = [head]
    for r in results:
        line = (f"{r['round']:>5} {100 * r['weights_remaining']:>8.2f} {r['test_accuracy']:>7.4f} "
                f"{r['early_stop_iteration']:>8} {r['early_stop_test_accuracy']:>9.4f} "
                f"{r['supermask_signed_constant_test_accuracy']:>9.4f}")
        line += "".join(f" {r['controls'][c]['test_accuracy']:>14.4f}" if c in r["controls"] else f" {'-':>14}"
                        for c in controls)
        lines.append(line)
    return "\n".join([*lines, SUMMARY_LEGEND])
