"""How a run scales out, as far as it needs no TensorFlow: the strategies, the ``TF_CONFIG`` cluster and
which process is the chief, the per-replica batch, the learning-rate rule and the :class:`Session` record;
all checked before TensorFlow loads (``tf-lth run`` answers bad input at once). Making the strategy and
setting the precision policy is the tf_keras flavour's (:mod:`tf_lth.keras2.distribute`)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from tf_lth.errors import TfLthError

STRATEGIES = ("default", "mirrored", "multi_worker")  # --strategy's choices
TASK_TYPES = ("chief", "worker")  # what MultiWorkerMirroredStrategy runs (no parameter servers)
TF_CONFIG = "TF_CONFIG"
EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", '
           '"index": 0}}\' on the first machine, index 1 on the second')
# what a worker does not copy from the chief's folder: outputs only the chief makes, and temp files
NOT_STATE = ("plots", "tensorboard", "export", "branches", ".*")


@dataclass(frozen=True)
class Cluster:
    """``TF_CONFIG`` read and checked: the task addresses by type, and this process's task."""

    tasks: dict
    task_type: str
    task_index: int

    @property
    def workers(self) -> int:
        return sum(map(len, self.tasks.values()))

    @property
    def is_chief(self) -> bool:
        """The ``chief`` task, or worker 0 when the cluster names no chief (TensorFlow's rule)."""
        return self.task_type == "chief" or ("chief" not in self.tasks and self.task_index == 0)


def parse_cluster(text: str) -> Cluster:
    """``TF_CONFIG``'s JSON as a :class:`Cluster`; anything malformed or inconsistent is a one-line error."""
    def bad(what: str):
        return TfLthError(f"TF_CONFIG {what}: set it on every machine, e.g. {EXAMPLE}")

    try:
        spec = json.loads(text)
    except ValueError as e:
        raise bad(f"is not JSON ({e})") from None
    cluster, task = (spec.get("cluster"), spec.get("task")) if isinstance(spec, dict) else (None, None)
    if not isinstance(cluster, dict) or not cluster:
        raise bad("has no \"cluster\" mapping task types to \"host:port\" lists")
    unknown = sorted(set(cluster) - set(TASK_TYPES))
    if unknown:
        raise bad(f"names task type(s) {', '.join(map(repr, unknown))}: tf-lth's multi_worker strategy runs "
                  f"{' and '.join(TASK_TYPES)} tasks only")
    for kind, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses or not all(map(is_address, addresses)):
            raise bad(f"cluster.{kind} = {addresses!r} is not a list of \"host:port\" addresses")
    everyone = [a for addresses in cluster.values() for a in addresses]
    if len(set(everyone)) != len(everyone) or len(cluster.get("chief", [])) > 1:
        raise bad("lists an address twice or several chiefs: each task needs its own host:port, one chief at most")
    if not isinstance(task, dict) or "type" not in task:
        raise bad("has no \"task\": {\"type\": ..., \"index\": ...} saying which task this machine runs")
    kind, index = task["type"], task.get("index", 0)
    if kind not in cluster:
        raise bad(f"task type {kind!r} is not in its cluster ({', '.join(cluster)})")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
        raise bad(f"task index {index!r} is out of range: cluster.{kind} has {len(cluster[kind])} task(s), "
                  f"index 0 to {len(cluster[kind]) - 1}")
    return Cluster({k: tuple(v) for k, v in cluster.items()}, kind, index)


def is_address(text) -> bool:
    host, _, port = text.rpartition(":") if isinstance(text, str) else ("", "", "")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def per_replica_batch(batch_size: int, replicas: int, what: str = "replicas") -> int:
    """The batch each replica computes: the global ``batch_size`` split evenly, else a one-line error."""
    if batch_size % replicas:
        raise TfLthError(f"batch size {batch_size} does not divide over the {replicas} {what}: give a multiple of "
                         f"{replicas} (e.g. --batch-size {-(-batch_size // replicas) * replicas}), or fewer devices")
    return batch_size // replicas


def check_strategy(strategy: str, devices=()) -> None:
    """A known strategy, and devices only for ``mirrored`` (what a config can say of itself)."""
    if strategy not in STRATEGIES:
        raise TfLthError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if devices and strategy != "mirrored":
        raise TfLthError(f"devices {','.join(devices)} are for --strategy mirrored, not {strategy}")


def check(strategy: str, devices=(), batch_size: int | None = None, environ=None) -> Cluster | None:
    """What can be checked without TensorFlow: :func:`check_strategy`, for ``multi_worker`` a valid
    ``TF_CONFIG`` in ``environ`` (default: this process's; its cluster is returned), a batch that divides
    over the devices or workers named (the replicas are counted once TensorFlow runs)."""
    check_strategy(strategy, devices)
    cluster, text = None, (os.environ if environ is None else environ).get(TF_CONFIG, "").strip()
    if strategy == "multi_worker" and not text:
        raise TfLthError(f"--strategy multi_worker needs {TF_CONFIG} on every machine, e.g. {EXAMPLE} "
                         "(one machine: use --strategy mirrored)")
    if strategy == "multi_worker":
        cluster = parse_cluster(text)
    if batch_size:
        per_replica_batch(batch_size, len(devices) or (cluster.workers if cluster else 1),
                          "workers" if cluster else "devices")
    return cluster


@dataclass(frozen=True)
class Session:
    """One process's part in a run: its strategy, whether it is the chief, the folder it writes (a
    worker's is a temporary copy), its training config (learning rate scaled if asked), and what
    results.json records of it."""

    strategy: object
    is_chief: bool
    folder: Path
    training: object
    record: dict


def learning_rate_rule(training, reference_batch: int) -> tuple[object, str]:
    """``training`` with its learning rate kept, or (``scale_lr``) scaled by the global batch over the
    batch the model's recipe tuned it for (Goyal et al. 2017's linear rule), and the rule in words."""
    if not training.scale_lr or training.batch_size == reference_batch:
        return training, "kept"
    rate = training.learning_rate * training.batch_size / reference_batch
    return replace(training, learning_rate=rate), f"linear: {training.learning_rate:g} x {training.batch_size}/{reference_batch}"


