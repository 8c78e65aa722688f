"""Every option of tf-lth, declared once (no TensorFlow, no Keras): :mod:`~tf_lth.config.configs` holds the
three configs (how tickets are found, how each round trains, the whole experiment), each field with its
help, choices and parser, and :mod:`~tf_lth.config.flags` turns them into command-line flags."""
from tf_lth.config.configs import (DEFAULT_EXPORT_FORMATS, EARLY_BIRD_EPS, EXPORT_FORMATS, OPTIMIZE_FOR, OPTIMIZERS,
                                   RECIPE, WEIGHT_DECAY_KINDS, ExperimentConfig, TicketConfig, TrainingConfig)

__all__ = ["TicketConfig", "TrainingConfig", "ExperimentConfig", "EXPORT_FORMATS", "DEFAULT_EXPORT_FORMATS",
           "OPTIMIZE_FOR", "EARLY_BIRD_EPS", "OPTIMIZERS", "RECIPE", "WEIGHT_DECAY_KINDS"]
