"""What a round does inside fit, apart from Keras (tf_lth.training.round_logic): its checkpointable progress,
the steps every call of steps_per_execution must end on, and the stop rules it is given."""
import pytest

from tf_lth.errors import TfLthError
from tf_lth.pruning.stopping import StopRules
from tf_lth.training.round_logic import RoundLogic, RoundProgress, check_marks


def test_progress_round_trips_through_a_checkpoint():
    progress = RoundProgress(start=40, steps=120, curve=[{"iteration": 100, "val_loss": 0.3}],
                             distances=[{"iteration": 100, "distance": 0.05}], stopped="early_bird")
    assert RoundProgress.from_dict(progress.to_dict()) == progress
    assert RoundProgress.from_dict({"start": None, "steps": 0, "curve": []}) == RoundProgress()


class FakeTicket:
    def __init__(self, iteration=0):
        self.rewind = type("R", (), {"iteration": iteration})()

    def needs_thetak(self):
        return self.rewind.iteration > 0


class Logic(RoundLogic):
    """RoundLogic on no Keras base: what check_marks reads (params, steps per execution)."""

    def __init__(self, ticket, every, steps, **options):
        super().__init__(ticket, **options)
        self.every, self.params = every, {"steps": steps}

    def steps_per_execution(self):
        return self.every


def test_every_step_the_round_acts_on_ends_a_call():
    check_marks(Logic(FakeTicket(), 10, 70, validation_data=object(), eval_every=20))
    check_marks(Logic(FakeTicket(), 7, 71))  # no batch work: nothing to check
    with pytest.raises(TfLthError, match=r"must divide eval_every \(25\)"):
        check_marks(Logic(FakeTicket(), 10, 70, validation_data=object(), eval_every=25))
    with pytest.raises(TfLthError, match=r"the rewind step \(15\)"):
        check_marks(Logic(FakeTicket(15), 10, 70))


def test_the_round_takes_its_stop_rules_as_one_value():
    logic = Logic(FakeTicket(), 1, 10, stops=StopRules(early_bird=0.1))
    assert logic.stops.early_bird == 0.1 and logic.stops.active and not Logic(FakeTicket(), 1, 10).stops.active
    with pytest.raises(ValueError, match="eval_every needs validation_data"):
        Logic(FakeTicket(), 1, 10, eval_every=5)
