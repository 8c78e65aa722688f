"""What a lottery-ticket round does inside ``fit``, for both Keras flavours (no Keras imported here).

:class:`RoundLogic` is the body of the round's callback: θk for late rewinding, the validation/test
curve that gives the early-stopping iteration, the early-bird and patience stops, and the round
contract calls (``start_training`` when ``fit`` begins, ``finish_round`` when it ends). The Keras
classes are thin: :class:`tf_lth.keras2.callback.TicketCallback` (tf_keras, on TF-MOT's
``UpdatePruningStep``) and :class:`tf_lth.keras3.callback.TicketCallback` (Keras 3). Each hook calls
``super()``, so the Keras base class's own hooks still run. Three flavour hooks differ:
:meth:`RoundLogic.live_model` (the model without a state sync: the JAX trainer syncs all variables
to Python on every ``self.model`` read), :meth:`RoundLogic.synced_model` (before reading weights)
and :meth:`RoundLogic.steps_per_execution`.

With ``steps_per_execution=N`` in ``compile``, Keras calls batch hooks once per N steps; the steps at
which the round acts (``eval_every``, the θk step, ``max_steps``) must then be multiples of N.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tf_lth.config.flags import check_steps_per_execution
from tf_lth.pruning import stopping
from tf_lth.pruning.stopping import StopRules
from tf_lth.training.evaluation import accuracy, early_stop_metrics, evaluate


@dataclass
class RoundProgress:
    """Where the training of a round stands: the optimizer step it started at (``None`` before it
    starts), the steps trained, the curve so far, the distances between successive early-bird
    candidate masks and why it stopped early (``None``: it did not). A runner checkpoints it
    (:meth:`to_dict`) and gives it back to a new callback to resume the round
    (:meth:`RoundLogic.resume`)."""

    start: int | None = None
    steps: int = 0
    curve: list = field(default_factory=list)
    distances: list = field(default_factory=list)
    stopped: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RoundProgress":
        return cls(None if d["start"] is None else int(d["start"]), int(d["steps"]), list(d["curve"]),
                   list(d.get("distances", [])), d.get("stopped"))


class RoundLogic:
    """Records a round's curve and θk and applies its stops; mixed into each flavour's callback.

    Args:
        ticket: the :class:`~tf_lth.LotteryTicket` being trained.
        test_data: optional test set (anything ``evaluate`` takes); scored at every evaluation
            point so that the test accuracy at the early-stopping iteration is known.
        validation_data: validation set for ``eval_every``; by default the curve uses the
            ``val_loss`` that ``fit(validation_data=...)`` reports at each epoch end.
        eval_every: evaluate every this many steps instead of once per epoch (the papers use 100).
        stops: the :class:`~tf_lth.pruning.stopping.StopRules` under which the round may end early (at
            each evaluation point, the early-bird rule draws the mask ``next_round`` would draw now and
            measures how far it moved); by default none: train to the end.
        max_steps: end the round after this many steps, part-way through an epoch if need be.
    """

    def __init__(self, ticket, test_data=None, validation_data=None, eval_every: int | None = None,
                 stops: StopRules = StopRules(), max_steps: int | None = None):
        super().__init__()
        if eval_every is not None and validation_data is None:
            raise ValueError("eval_every needs validation_data= on the callback")
        self.max_steps, self.stops = max_steps, stops
        self.candidates: list[dict] = []  # the last early-bird candidate masks, oldest first (checkpointed)
        self.ticket = ticket
        self.test_data = test_data
        self.validation_data = validation_data
        self.eval_every = eval_every
        self.progress = RoundProgress()
        self._epoch_base = 0

    # -- flavour hooks (the tf_keras defaults) -----------------------------------------------
    def live_model(self):
        """The model, without syncing its state (for ``stop_training``)."""
        return self.model

    def synced_model(self):
        """The model with its variables current (before reading weights or the optimizer step)."""
        return self.model

    def steps_per_execution(self) -> int:
        every = getattr(self.model, "_steps_per_execution", None)
        return 1 if every is None else int(every.numpy())

    # -- the round ---------------------------------------------------------------------------
    @property
    def curve(self) -> list[dict]:
        """The round's evaluation points so far: iteration, val_loss, [val_accuracy, test_accuracy]."""
        return self.progress.curve

    def resume(self, progress: RoundProgress, candidates: list | None = None):
        """Continue a round interrupted after some epochs from its checkpointed :attr:`progress` (and
        the last early-bird :attr:`candidates`, oldest first)."""
        self.progress = RoundProgress.from_dict(progress.to_dict())
        self.candidates = list(candidates or [])
        return self

    def needs_batch_hooks(self) -> bool:
        """Whether the round acts inside an epoch; if not, Keras can keep its hot loop free."""
        return bool(self.eval_every) or self.ticket.needs_thetak() or self.max_steps is not None

    def _step(self) -> int:
        return int(self.synced_model().optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        check_marks(self)
        self.ticket.start_training(fresh=self.progress.start is None)
        if self.progress.start is None:
            self.progress.start = self._step()
        if self.ticket.needs_thetak() and self.ticket.rewind.iteration == 0:
            self.ticket.record_thetak()

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._epoch_base = self._step() - self.progress.start

    def on_train_batch_end(self, batch, logs=None):
        # step count from the batch index: no read of a variable, so no sync per step
        steps = self.progress.steps = self._epoch_base + batch + 1
        if self.ticket.needs_thetak() and steps >= self.ticket.rewind.iteration:
            self.synced_model()
            self.ticket.record_thetak()
        if self.eval_every and steps % self.eval_every == 0:
            val = evaluate(self.synced_model(), self.validation_data)
            self._add_point(val["loss"], val.get("accuracy"))
        if self.max_steps is not None and steps >= self.max_steps:
            self.live_model().stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.progress.steps = self._step() - self.progress.start
        if not self.eval_every and logs and "val_loss" in logs:
            self._add_point(logs["val_loss"], logs.get("val_accuracy"))

    def _add_point(self, val_loss, val_accuracy):
        point = {"iteration": self.progress.steps, "val_loss": float(val_loss)}
        if val_accuracy is not None:
            point["val_accuracy"] = float(val_accuracy)
        if self.test_data is not None:
            point["test_accuracy"] = accuracy(self.synced_model(), self.test_data)
        self.curve.append(point)
        rules = self.stops
        if rules.early_bird is not None:
            self.synced_model()
            candidate = self.ticket.draw_masks()
            if self.candidates:
                alive = {k: self.ticket.masks[k] for k in candidate}
                distance = max(stopping.mask_distance(old, candidate, alive) for old in self.candidates)
                self.progress.distances.append({"iteration": point["iteration"], "distance": distance})
                full = [p["distance"] for p in self.progress.distances][rules.early_bird_window - 1:]  # window filled
                if stopping.early_bird_stop(full, rules.early_bird, rules.early_bird_patience):
                    self.stop("early_bird")
            self.candidates = [*self.candidates, candidate][-rules.early_bird_window:]
        if rules.patience and stopping.val_loss_stop([p["val_loss"] for p in self.curve], rules.patience):
            self.stop("val_loss")

    def stop(self, reason: str) -> None:
        """End the round at this evaluation point (Keras stops after the current call of steps)."""
        if self.progress.stopped is None:
            self.progress.stopped = reason
        self.live_model().stop_training = True

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        model = self.synced_model()
        metrics = early_stop_metrics(self.curve)
        metrics["iterations"] = steps = self.progress.steps
        if self.stops.active:
            metrics["stopped"] = self.progress.stopped or "end"
        if self.stops.early_bird is not None:
            metrics["mask_distance"] = self.progress.distances
        if self.test_data is not None:
            last = self.curve[-1] if self.curve and self.curve[-1]["iteration"] == steps else None
            metrics["test_accuracy"] = last["test_accuracy"] if last else accuracy(model, self.test_data)
        self.ticket.finish_round(metrics, self.curve, int(model.optimizer.iterations.numpy()))
        self.progress, self.candidates = RoundProgress(), []  # ready for the next round if reused


def check_marks(callback: RoundLogic) -> None:
    """Batch hooks come only at the end of each call of ``steps_per_execution`` steps: every step the
    round's callback must see has to end one (a call never spans two epochs)."""
    every = callback.steps_per_execution()
    if every == 1 or not callback.needs_batch_hooks():
        return
    marks = {"the steps per epoch": callback.params.get("steps")}
    if callback.eval_every:
        marks["eval_every"] = callback.eval_every
    if callback.ticket.needs_thetak():
        marks["the rewind step"] = callback.ticket.rewind.iteration
    if callback.max_steps is not None:
        marks["the iterations"] = callback.max_steps
    check_steps_per_execution(every, marks)


__all__ = ["RoundLogic", "RoundProgress", "check_marks"]
