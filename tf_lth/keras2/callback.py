"""The tf_keras callback that trains one lottery-ticket round with ``model.fit``.

It is TF-MOT's ``UpdatePruningStep`` (which the wrappers require) plus the round's logic
(:class:`tf_lth.training.round_logic.RoundLogic`: θk, the curve, the stops, the round contract). Masks stay frozen
without per-batch work (see :mod:`tf_lth.keras2.masked`); the round writes them into the variables when
``fit`` begins and again when it ends, after Keras has copied EMA averages into the weights.
"""
from __future__ import annotations

from tf_lth import keras2  # noqa: F401  (Keras 2 selected before TF-MOT is imported)
from tf_lth.training.round_logic import RoundLogic
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_callbacks import UpdatePruningStep


class TicketCallback(RoundLogic, UpdatePruningStep):
    """A round of ``fit`` on a tf_keras ticket; get one from :meth:`LotteryTicket.callback` (the
    arguments are :class:`~tf_lth.training.round_logic.RoundLogic`'s)."""

    def __init__(self, ticket, **options):
        super().__init__(ticket, **options)
        self._supports_tf_logs = True  # batch logs are not read: Keras need not sync them per step

    def _implements_train_batch_hooks(self):
        # Keras calls batch hooks only for callbacks that need them: keep the hot loop free.
        return self.needs_batch_hooks()


__all__ = ["TicketCallback"]
