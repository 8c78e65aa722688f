"""How a run scales out: the ``tf.distribute`` strategy, the ``TF_CONFIG`` cluster, which process is
the chief, the per-replica batch, the learning-rate rule and mixed precision.

TensorFlow's own engine: the model and ticket are built inside ``strategy.scope()`` (variables
mirrored, gradients all-reduced each step); pruning decisions are numpy over the variables' values,
the same on every replica and worker. Only the chief writes the run folder; another worker trains in a
temporary copy of it, removed at the end (it reads the chief's folder to resume: on several machines a
shared folder, as Keras' ``BackupAndRestore`` needs). Checks that need no TensorFlow answer before it
loads (``tf-lth run``); only the functions that make a strategy or set a policy import it."""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import zlib
from contextlib import contextmanager
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


def make_strategy(name: str, devices: tuple = ()):
    """The strategy: for ``default`` the current one (of the caller's scope, if any), else one made once
    per process and kind (MultiWorkerMirroredStrategy configures the collectives before any other op)."""
    from tf_lth.keras2 import tf

    return tf.distribute.get_strategy() if name == "default" else made_strategy(name, tuple(devices))


@functools.cache
def made_strategy(name: str, devices: tuple):
    from tf_lth.keras2 import tf

    if name == "mirrored":
        visible = {d.name.split("device:")[-1].upper() for d in tf.config.list_logical_devices()}
        missing = [d for d in devices if d.split("device:")[-1].lstrip("/").upper() not in visible]
        if missing:
            raise TfLthError(f"device(s) {', '.join(missing)} not visible (visible: {', '.join(sorted(visible))})")
        return tf.distribute.MirroredStrategy(list(devices) or None)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as e:
        raise TfLthError(f"cannot start the multi_worker strategy ({' '.join(str(e).split())}): it must be made "
                         "before TensorFlow runs anything in this process") from None


@contextmanager
def precision(mixed: bool | str):
    """Inside the block the Keras global policy (models built there compute in it, variables stay
    float32) is ``mixed_float16`` on a GPU (tensor cores), ``mixed_bfloat16`` on CPUs (no fast float16
    kernels there; bfloat16 needs no loss scaling), or the policy named; outside, what it was. Yields it."""
    from tf_lth.keras2 import has_gpu, keras

    policy = mixed if isinstance(mixed, str) else ("mixed_float16" if has_gpu() else "mixed_bfloat16") if mixed else "float32"
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)


def optimizer_variables(optimizer) -> list:
    """The optimizer's whole state (what an epoch checkpoint saves): its variables, and a loss-scale
    optimizer's dynamic loss scale and counter, which its ``variables`` leave out."""
    from tf_lth.keras2 import keras, tf

    found = list(optimizer.variables)
    if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer) and optimizer.dynamic:
        state = tf.train.TrackableView(optimizer).children(optimizer)["loss_scale"]
        found += [v for _, v in sorted(tf.train.TrackableView(state).children(state).items())]
    return found


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


@contextmanager
def open_session(strategy: str, devices: tuple, training, reference_batch: int, folder):
    """Make the strategy, check the batch against its replicas, set the precision policy, enter
    ``strategy.scope()`` and yield the :class:`Session`; a worker that is not the chief gets a temporary
    copy of ``folder`` (removed at the end), synchronised with the chief before anything is written."""
    from tf_lth.keras2 import tf

    cluster = check(strategy, devices, training.batch_size)
    tf_strategy = make_strategy(strategy, tuple(devices))
    replicas = tf_strategy.num_replicas_in_sync
    trained, rule = learning_rate_rule(training, reference_batch)
    record = {"strategy": strategy, "devices": list(devices), "workers": cluster.workers if cluster else 1,
              "replicas": replicas, "global_batch": training.batch_size,
              "per_replica_batch": per_replica_batch(training.batch_size, replicas),
              "learning_rate": trained.learning_rate, "learning_rate_rule": rule}
    folder, is_chief = Path(folder), cluster is None or cluster.is_chief
    scratch = None if is_chief else Path(tempfile.mkdtemp(prefix="tf-lth-worker-"))
    mine = folder if is_chief else scratch / folder.name
    try:
        if not is_chief and folder.is_dir():
            shutil.copytree(folder, mine, ignore=shutil.ignore_patterns(*NOT_STATE))
        if cluster is not None:
            agree(tf_strategy, mine)
        with precision(bool(training.mixed_precision)) as policy, tf_strategy.scope():
            yield Session(tf_strategy, is_chief, mine, trained, {**record, "precision": policy})
    except tf.errors.UnavailableError as e:  # a peer died: one line, and how to go on
        raise TfLthError(f"a worker stopped or cannot be reached ({str(e).splitlines()[0][:200]}): start every "
                         "worker again with the same command; they resume from the chief's folder") from None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def agree(strategy, folder: Path) -> None:
    """Barrier (the chief writes nothing before every worker copied its folder) and check that all
    workers see the same run state, a checksum d of its files' names and sizes (n sum(d^2) == (sum d)^2
    iff all d are equal; d < 2**20 sums exactly): one that cannot read the chief's folder would start
    afresh where the chief resumes, and both would wait for ever."""
    from tf_lth.keras2 import tf

    files = sorted(f"{p.relative_to(folder)}:{p.stat().st_size}" for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") or part in NOT_STATE for part in p.relative_to(folder).parts))
    mine = float(zlib.crc32("\n".join(files).encode()) % 2**20) if folder.is_dir() else -1.0
    values = strategy.run(lambda: tf.constant([mine, mine * mine, 1.0], tf.float64))
    total, squares, n = strategy.reduce("SUM", values, axis=None).numpy()
    if n * squares != total * total:
        raise TfLthError(f"the workers see different run folders at {folder}: the output folder must be one "
                         "folder every worker reads (e.g. on NFS), written by the chief only")

