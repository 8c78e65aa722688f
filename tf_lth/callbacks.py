"""The Keras callback that trains one lottery-ticket round with ``model.fit``.

It is TF-MOT's ``UpdatePruningStep`` (which the wrappers require) plus what a round needs: the
θk snapshot for late rewinding, and the validation/test curve that gives the early-stopping
iteration. Masks stay frozen without it doing per-batch work (see :mod:`tf_lth.masked`); it writes
them into the variables when ``fit`` begins and again when it ends, after Keras has copied EMA
averages into the weights.

With ``steps_per_execution=N`` in ``compile``, Keras calls batch hooks once per N steps; the steps
at which this callback acts (``eval_every``, the θk step, epoch ends) must then be multiples of N.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from tf_lth import keras2  # noqa: F401  (Keras 2 selected before TF-MOT is imported)
from tf_lth import stopping
from tf_lth.options import check_steps_per_execution
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_callbacks import UpdatePruningStep


@dataclass
class RoundProgress:
    """Where the training of a round stands: the optimizer step it started at (``None`` before it
    starts), the steps trained, the curve so far, the distances between successive early-bird
    candidate masks and why it stopped early (``None``: it did not). A runner checkpoints it
    (:meth:`to_dict`) and gives it back to a new callback to resume the round
    (:meth:`TicketCallback.resume`)."""

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


class TicketCallback(UpdatePruningStep):
    """Records a round's curve and θk; get one from :meth:`LotteryTicket.callback`.

    Args:
        ticket: the :class:`~tf_lth.LotteryTicket` being trained.
        test_data: optional test set (anything ``evaluate`` takes); scored at every evaluation
            point so that the test accuracy at the early-stopping iteration is known.
        validation_data: validation set for ``eval_every``; by default the curve uses the
            ``val_loss`` that ``fit(validation_data=...)`` reports at each epoch end.
        eval_every: evaluate every this many steps instead of once per epoch (the papers use 100).
        early_bird: at each evaluation point, draw the mask ``next_round`` would draw now and stop
            the round once it changed in less than this fraction of the weights ``early_bird_patience``
            points in a row (:mod:`tf_lth.stopping`); ``None``: train to the end.
        early_bird_window: compare each candidate with the last this many candidates and take the
            largest distance (You et al.'s FIFO of masks; no stop before it is full); 1: with the
            previous candidate only.
        patience: stop after this many evaluation points without a lower validation loss.
        max_steps: end the round after this many steps, part-way through an epoch if need be.
    """

    def __init__(self, ticket, test_data=None, validation_data=None, eval_every: int | None = None,
                 early_bird: float | None = None, early_bird_patience: int = 2, early_bird_window: int = 5,
                 patience: int | None = None, max_steps: int | None = None):
        super().__init__()
        self.max_steps = max_steps
        self.early_bird, self.early_bird_patience, self.patience = early_bird, early_bird_patience, patience
        self.early_bird_window = early_bird_window
        self.candidates: list[dict] = []  # the last early-bird candidate masks, oldest first (checkpointed)
        if eval_every is not None and validation_data is None:
            raise ValueError("eval_every needs validation_data= on the callback")
        self.ticket = ticket
        self.test_data = test_data
        self.validation_data = validation_data
        self.eval_every = eval_every
        self.progress = RoundProgress()
        self._epoch_base = 0
        self._supports_tf_logs = True  # batch logs are not read: Keras need not sync them per step

    @property
    def curve(self) -> list[dict]:
        """The round's evaluation points so far: iteration, val_loss, [val_accuracy, test_accuracy]."""
        return self.progress.curve

    def resume(self, progress: RoundProgress, candidates: list | None = None) -> "TicketCallback":
        """Continue a round interrupted after some epochs from its checkpointed :attr:`progress` (and
        the last early-bird :attr:`candidates`, oldest first)."""
        self.progress = RoundProgress.from_dict(progress.to_dict())
        self.candidates = list(candidates or [])
        return self

    def _implements_train_batch_hooks(self):
        # Keras calls batch hooks only for callbacks that need them: keep the hot loop free.
        return bool(self.eval_every) or self.ticket.needs_thetak() or self.max_steps is not None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._check_steps_per_execution()
        self.ticket.start_training(fresh=self.progress.start is None)
        if self.progress.start is None:
            self.progress.start = int(self.model.optimizer.iterations.numpy())
        if self.ticket.needs_thetak() and self.ticket.rewind.iteration == 0:
            self.ticket.record_thetak()

    def _check_steps_per_execution(self):
        """Batch hooks come only at the end of each call of ``steps_per_execution`` steps: every step
        this callback must see has to end one (a call never spans two epochs)."""
        every = getattr(self.model, "_steps_per_execution", None)
        every = 1 if every is None else int(every.numpy())
        if every == 1 or not self._implements_train_batch_hooks():
            return
        marks = {"the steps per epoch": self.params.get("steps")}
        if self.eval_every:
            marks["eval_every"] = self.eval_every
        if self.ticket.needs_thetak():
            marks["the rewind step"] = self.ticket.rewind.iteration
        if self.max_steps is not None:
            marks["the iterations"] = self.max_steps
        check_steps_per_execution(every, marks)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_base = int(self.model.optimizer.iterations.numpy()) - self.progress.start

    def on_train_batch_end(self, batch, logs=None):
        # step count from the batch index: no read of a TF variable, so no sync per step
        steps = self.progress.steps = self._epoch_base + batch + 1
        if self.ticket.needs_thetak() and steps >= self.ticket.rewind.iteration:
            self.ticket.record_thetak()
        if self.eval_every and steps % self.eval_every == 0:
            val = evaluate(self.model, self.validation_data)
            self._add_point(val["loss"], val.get("accuracy"))
        if self.max_steps is not None and steps >= self.max_steps:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.progress.steps = int(self.model.optimizer.iterations.numpy()) - self.progress.start
        if not self.eval_every and logs and "val_loss" in logs:
            self._add_point(logs["val_loss"], logs.get("val_accuracy"))

    def _add_point(self, val_loss, val_accuracy):
        point = {"iteration": self.progress.steps, "val_loss": float(val_loss)}
        if val_accuracy is not None:
            point["val_accuracy"] = float(val_accuracy)
        if self.test_data is not None:
            point["test_accuracy"] = accuracy(self.model, self.test_data)
        self.curve.append(point)
        if self.early_bird is not None:
            candidate = self.ticket.draw_masks()
            if self.candidates:
                alive = {k: self.ticket.masks[k] for k in candidate}
                distance = max(stopping.mask_distance(old, candidate, alive) for old in self.candidates)
                self.progress.distances.append({"iteration": point["iteration"], "distance": distance})
                full = [p["distance"] for p in self.progress.distances][self.early_bird_window - 1:]  # window filled
                if stopping.early_bird_stop(full, self.early_bird, self.early_bird_patience):
                    self.stop("early_bird")
            self.candidates = [*self.candidates, candidate][-self.early_bird_window:]
        if self.patience and stopping.val_loss_stop([p["val_loss"] for p in self.curve], self.patience):
            self.stop("val_loss")

    def stop(self, reason: str) -> None:
        """End the round at this evaluation point (Keras stops after the current call of steps)."""
        if self.progress.stopped is None:
            self.progress.stopped = reason
        self.model.stop_training = True

    def on_train_end(self, logs=None):
        metrics = early_stop_metrics(self.curve)
        metrics["iterations"] = steps = self.progress.steps
        if self.early_bird is not None or self.patience:
            metrics["stopped"] = self.progress.stopped or "end"
        if self.early_bird is not None:
            metrics["mask_distance"] = self.progress.distances
        if self.test_data is not None:
            last = self.curve[-1] if self.curve and self.curve[-1]["iteration"] == steps else None
            metrics["test_accuracy"] = last["test_accuracy"] if last else accuracy(self.model, self.test_data)
        self.ticket.finish_round(metrics, self.curve, int(self.model.optimizer.iterations.numpy()))
        self.progress = RoundProgress()  # ready for the next round if reused


def evaluate(model, data) -> dict:
    """``evaluate`` on a dataset/pipeline or an ``(x, y)`` tuple of arrays (in large batches).

    ``evaluate`` resets the model's metrics; their running training values are put back, so an
    evaluation in the middle of an epoch leaves the epoch's reported loss and accuracy intact.
    """
    running = [v for metric in model.metrics for v in metric.variables]
    saved = [v.numpy() for v in running]
    if isinstance(data, tuple):
        result = model.evaluate(*data, batch_size=1000, verbose=0, return_dict=True)
    else:
        result = model.evaluate(data, verbose=0, return_dict=True)
    for variable, value in zip(running, saved):
        variable.assign(value)
    return result


def accuracy(model, data) -> float:
    return float(evaluate(model, data)["accuracy"])


def early_stop_metrics(curve: list[dict]) -> dict:
    """Iteration of minimum validation loss and the test accuracy there (Frankle & Carbin)."""
    if not curve:
        return {}
    best = min(curve, key=lambda p: (p["val_loss"] if not math.isnan(p["val_loss"]) else math.inf))
    out = {"early_stop_iteration": best["iteration"], "early_stop_val_loss": best["val_loss"]}
    if "test_accuracy" in best:
        out["early_stop_test_accuracy"] = best["test_accuracy"]
    return out


__all__ = ["TicketCallback", "RoundProgress", "early_stop_metrics", "evaluate", "accuracy"]
