"""The TF-MOT pruning schedule of a lottery-ticket round: masks never change while training.

tf-lth sets masks itself between rounds (rewinding survivors), so TF-MOT must never recompute
them inside a round, which could let pruned weights come back.
"""
from tf_lth.keras2 import keras, tf
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_schedule import PruningSchedule


@keras.utils.register_keras_serializable(package="tf_lth")
class FrozenMask(PruningSchedule):
    """A ``PruningSchedule`` that never prunes: the masks set between rounds stay as they are."""

    def __call__(self, step):
        return tf.constant(False), tf.constant(0.0, tf.float32)

    def get_config(self):
        return {"class_name": type(self).__name__, "config": {}}
