"""A run on ``tf.distribute`` and mixed precision, with tf_keras (tf-lth's Keras 3 path trains on one device):
the strategy, the precision policy, the optimizer state an epoch checkpoint saves (a loss scale's too), and
:func:`open_session`, the run's :class:`~tf_lth.training.cluster.Session`. What needs no TensorFlow (the
strategies, ``TF_CONFIG`` parsing and checks, the learning-rate rule) is :mod:`tf_lth.training.cluster`,
re-exported here, so ``tf_lth.distribute`` is one module to a user.

TensorFlow's own engine: the model and ticket are built inside ``strategy.scope()`` (variables mirrored,
gradients all-reduced each step); pruning decisions are numpy over the variables' values, the same on
every replica and worker. Only the chief writes the run folder; another worker trains in a temporary copy
of it, removed at the end (it reads the chief's folder to resume: on several machines a shared folder,
as Keras' ``BackupAndRestore`` needs).
"""
from __future__ import annotations

import functools
import shutil
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path

from tf_lth.errors import TfLthError
from tf_lth.keras2 import has_gpu, keras, tf
from tf_lth.training.cluster import (NOT_STATE, STRATEGIES, TF_CONFIG, Cluster, Session, check,  # noqa: F401
                                     check_strategy, learning_rate_rule, parse_cluster, per_replica_batch)


def make_strategy(name: str, devices: tuple = ()):
    """The strategy: for ``default`` the current one (of the caller's scope, if any), else one made once
    per process and kind (MultiWorkerMirroredStrategy configures the collectives before any other op)."""
    return tf.distribute.get_strategy() if name == "default" else made_strategy(name, tuple(devices))


@functools.cache
def made_strategy(name: str, devices: tuple):
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
    found = list(optimizer.variables)
    if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer) and optimizer.dynamic:
        state = tf.train.TrackableView(optimizer).children(optimizer)["loss_scale"]
        found += [v for _, v in sorted(tf.train.TrackableView(state).children(state).items())]
    return found


@contextmanager
def open_session(strategy: str, devices: tuple, training, reference_batch: int, folder):
    """Make the strategy, check the batch against its replicas, set the precision policy, enter
    ``strategy.scope()`` and yield the :class:`Session`; a worker that is not the chief gets a temporary
    copy of ``folder`` (removed at the end), synchronised with the chief before anything is written."""
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
    files = sorted(f"{p.relative_to(folder)}:{p.stat().st_size}" for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") or part in NOT_STATE for part in p.relative_to(folder).parts))
    mine = float(zlib.crc32("\n".join(files).encode()) % 2**20) if folder.is_dir() else -1.0
    values = strategy.run(lambda: tf.constant([mine, mine * mine, 1.0], tf.float64))
    total, squares, n = strategy.reduce("SUM", values, axis=None).numpy()
    if n * squares != total * total:
        raise TfLthError(f"the workers see different run folders at {folder}: the output folder must be one "
                         "folder every worker reads (e.g. on NFS), written by the chief only")


__all__ = ["make_strategy", "precision", "optimizer_variables", "open_session", "agree", "STRATEGIES", "TF_CONFIG",
           "Cluster", "Session", "check", "check_strategy", "learning_rate_rule", "parse_cluster", "per_replica_batch"]
