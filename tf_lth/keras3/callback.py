"""The Keras 3 callback that trains one lottery-ticket round with ``model.fit`` (any backend).

The round's logic is :class:`tf_lth.training.round_logic.RoundLogic`, shared with the tf_keras callback; this
class only says how Keras 3 differs: on JAX, reading ``self.model`` syncs every variable back from
the trainer's state, so the hot path reads ``self._model``; and a callback that overrides
``on_train_batch_end`` turns off Keras' asynchronous dispatch, so a round that acts only at epoch
ends shadows that hook with a no-op Keras recognises as its default.
"""
from __future__ import annotations

from tf_lth.keras3 import keras
from tf_lth.config.flags import check_steps_per_execution
from tf_lth.training.round_logic import RoundLogic


def _no_batch_work(batch, logs=None):
    """Stands in for ``on_train_batch_end`` when the round does nothing inside epochs."""


_no_batch_work._is_default = True  # what keras.src.utils.python_utils.default marks


class TicketCallback(RoundLogic, keras.callbacks.Callback):
    """A round of ``fit`` on a Keras 3 ticket; get one from :meth:`LotteryTicket.callback` (the
    arguments are :class:`~tf_lth.training.round_logic.RoundLogic`'s)."""

    def __init__(self, ticket, **options):
        super().__init__(ticket, **options)
        if not self.needs_batch_hooks():
            self.on_train_batch_end = _no_batch_work

    def on_train_begin(self, logs=None):
        # Keras 3 runs a call of steps_per_execution steps across an epoch's end: epochs (and the round's
        # checkpoints) would shift, so that call length must divide the epoch
        every, steps = self.steps_per_execution(), self.params.get("steps")
        if every > 1 and steps:
            check_steps_per_execution(every, {"the steps per epoch": steps})
        super().on_train_begin(logs)

    def live_model(self):
        return self._model

    def steps_per_execution(self) -> int:
        return int(getattr(self._model, "steps_per_execution", 1) or 1)


Keras3TicketCallback = TicketCallback  # its name before the flavour packages

__all__ = ["TicketCallback", "Keras3TicketCallback"]
