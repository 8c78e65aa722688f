"""Training a round, the same for both Keras flavours (no Keras imported here): the recipe's lengths and
learning-rate schedules (:mod:`~tf_lth.training.recipe`), what a round does inside ``fit``
(:mod:`~tf_lth.training.round_logic`), scoring (:mod:`~tf_lth.training.evaluation`), the round's skeleton
and the :class:`~tf_lth.training.fit_round.TrainingKit` each flavour fills (:mod:`~tf_lth.training.fit_round`),
and scaling out (:mod:`~tf_lth.training.cluster`: ``tf.distribute``, mixed precision).

``tf_lth.training.LOSS``, ``compile_round``, ``train_round`` and the rest of the tf_keras training helpers of
earlier versions still answer here: they are :mod:`tf_lth.keras2.training`'s (loaded on first use).
"""
import importlib

_FLAVOUR_NEUTRAL = ("steps_per_epoch", "round_steps", "epochs_for", "steps_per_execution", "MAX_STEPS_PER_EXECUTION")
_TF_KERAS = ("LOSS", "compile_round", "train_round", "make_optimizer", "EpochCheckpoint", "Throughput", "restore",
             "session", "batch_loss", "with_l2", "RecipeSchedule")


def __getattr__(name: str):
    if name in _FLAVOUR_NEUTRAL:
        return getattr(importlib.import_module("tf_lth.training.fit_round"), name)
    if name in _TF_KERAS:
        return getattr(importlib.import_module("tf_lth.keras2.training"), name)
    raise AttributeError(f"module 'tf_lth.training' has no attribute {name!r}")
