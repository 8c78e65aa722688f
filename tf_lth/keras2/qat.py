"""Sparsity-preserving quantization-aware training (the ``int8_qat`` format): TF-MOT's collaborative
optimization on a stripped tf_keras ticket (TF-MOT takes tf_keras models only). The format itself, its
conversion and checks are :mod:`tf_lth.export.quantize`'s.
"""
from __future__ import annotations

import tensorflow_model_optimization as tfmot

from tf_lth.errors import TfLthError
from tf_lth.keras2 import keras
from tf_lth.keras2.training import LOSS


def unwrappable(net) -> list[str]:
    """``name (Class)`` of each layer of ``net`` that the prune-preserving 8-bit scheme cannot quantize
    (it needs both its own registry and TF-MOT's default 8-bit one to take the layer)."""
    registries = (tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme().get_quantize_registry(),
                  tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme().get_quantize_registry())
    return [f"{layer.name} ({type(layer).__name__})" for layer in net.layers
            if not isinstance(layer, keras.layers.InputLayer) and not all(r.supports(layer) for r in registries)]


def qat_model(net, data, options: Options):
    """``net`` wrapped for sparsity-preserving quantization-aware training and fine-tuned for
    ``options.qat_steps`` steps (Adam, seeded batch order) on ``data``'s train split."""
    try:
        annotated = tfmot.quantization.keras.quantize_annotate_model(net)
        with tfmot.quantization.keras.quantize_scope():
            model = tfmot.quantization.keras.quantize_apply(
                annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    except (ValueError, RuntimeError) as e:  # what check() cannot foresee (a layer TF-MOT cannot clone)
        raise TfLthError(f"TF-MOT cannot wrap {net.name} for QAT ({str(e).splitlines()[0]}): "
                         "export int8_full instead (formats= / --formats)") from None
    model.compile(optimizer=keras.optimizers.Adam(options.qat_learning_rate), loss=LOSS)
    batches = data.pipeline("train", options.qat_batch, shuffle=True, seed=options.seed).repeat()
    model.fit(batches, steps_per_epoch=options.qat_steps, epochs=1, verbose=0)
    return model


__all__ = ["unwrappable", "qat_model"]
