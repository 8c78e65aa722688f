"""tf-lth: find lottery tickets in tf_keras models with TF-MOT and ship them as sparse models."""
from tf_lth.keras2 import keras
from tf_lth import data, masks, models, rewind, supermask
from tf_lth.callbacks import TicketCallback
from tf_lth.errors import TfLthError
from tf_lth.export import export_ticket
from tf_lth.lottery import CONTROLS, LotteryTicket, TicketConfig
from tf_lth.schedules import FrozenMask

__version__ = "0.1.0"
__all__ = [
    "keras", "data", "masks", "models", "rewind", "supermask", "LotteryTicket", "TicketConfig",
    "TicketCallback", "FrozenMask", "TfLthError", "CONTROLS", "export_ticket",
]
