"""Full-integer TFLite of a ticket: calibrated post-training int8 and sparsity-preserving QAT.

Mobile and embedded targets (Edge TPU, microcontrollers, NPUs) run int8 weights *and* activations,
often with int8 input and output; the dynamic-range ``int8`` format keeps float activations. Two
formats here give full-integer files (:data:`FORMATS`), both sparse like the others:

- ``int8_full``: the ticket converted as is; the converter measures each activation's range on a
  *representative set*, :data:`CALIBRATION_EXAMPLES` training examples drawn by seed (at least
  :data:`MIN_CALIBRATION`, the low end of TFLite's advice of ~100-500: fewer give ranges that miss
  the tails and clip real inputs).
- ``int8_qat``: the ticket fine-tuned briefly with quantization in the forward pass (TF-MOT's
  collaborative optimization, ``Default8BitPrunePreserveQuantizeScheme``), so the weights adapt to
  the rounding that ``int8_full`` only suffers, then converted the same way. Plain QAT would let
  pruned weights grow back; this scheme multiplies each kernel by its own non-zero pattern, taken
  when the model is built, so a pruned weight gets no gradient and Adam never moves it. That is
  checked, not assumed: the QAT kernels' zeros must be exactly the ticket's.

The fine-tune is :data:`QAT_STEPS` steps of Adam at :data:`QAT_LEARNING_RATE` on the dataset's
train split (batch :data:`QAT_BATCH`): enough for the quantization ranges (moving averages) to settle
and the weights to absorb the rounding, short enough to leave the ticket the ticket (LeNet: ~5 s,
Conv-2: ~1 min on two CPU cores). The rate is about a tenth of LeNet's recipe and half of Conv-2's, so
the weights stay near where the ticket put them. Every file is checked: each kernel and its op's
output int8, input and output of the type asked, and every zero of the ticket still zero in the
TFLite tensors (rounding may add zeros, never remove one). A failed check is one line.

The QAT fine-tune is :mod:`tf_lth.keras2.qat` (TF-MOT takes tf_keras models only), imported where int8_qat
is made, so that a Keras 3 export (which refuses int8_qat) imports this module without tf_keras or TF-MOT.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tf_lth.export import tflite
from tf_lth.errors import TfLthError

FORMATS = tflite.FULL_INTEGER
CALIBRATION_EXAMPLES = 300
MIN_CALIBRATION = 100
QAT_STEPS, QAT_BATCH, QAT_LEARNING_RATE = 300, 64, 1e-4
KERNELS = ("kernel", "depthwise_kernel")  # the weights a ticket prunes and the TFLite ops' weight input


@dataclass(frozen=True)
class Options:
    """How the full-integer formats are made: int8 (else float) input and output, the size of the
    representative set and the seed it is drawn with (the QAT batches use it too), the QAT fine-tune."""

    int8_io: bool = False
    calibration: int = CALIBRATION_EXAMPLES
    seed: int = 0
    qat_steps: int = QAT_STEPS
    qat_batch: int = QAT_BATCH
    qat_learning_rate: float = QAT_LEARNING_RATE


def check(net, data, formats, options: Options) -> None:
    """Fail before any work when a requested full-integer format cannot be made: no training data, a
    representative set under :data:`MIN_CALIBRATION`, no QAT step, or a layer QAT cannot wrap."""
    kinds = [f for f in FORMATS if f in formats]
    if not kinds:
        return
    if data is None:
        raise TfLthError(f"{kinds[0]} calibrates on training examples: give the ticket's dataset "
                         "(dataset= / --dataset)")
    examples = min(options.calibration, len(data.x_train))
    if examples < MIN_CALIBRATION:
        raise TfLthError(f"the representative set for {kinds[0]} has {examples} examples ({data.name} has "
                         f"{len(data.x_train)} for training), under the {MIN_CALIBRATION} that stable activation "
                         f"ranges need: calibrate on >= {MIN_CALIBRATION} (Options(calibration=)) of a larger dataset")
    if "int8_qat" in kinds:
        if options.qat_steps < 1:
            raise TfLthError(f"int8_qat needs at least one fine-tuning step (qat_steps={options.qat_steps})")
        from tf_lth.keras2.qat import unwrappable  # TF-MOT, tf_keras only: int8_qat is refused for Keras 3
        unsupported = unwrappable(net)
        if unsupported:
            raise TfLthError(f"int8_qat cannot wrap {', '.join(unsupported)}: TF-MOT's sparsity-preserving QAT "
                             "takes Dense, Conv2D, DepthwiseConv2D and weightless layers (pooling, Flatten, ...); "
                             "export int8_full instead (formats= / --formats)")


def representative_set(data, options: Options) -> np.ndarray:
    """``options.calibration`` training images (float32 in the dataset's pixel range) drawn without
    replacement by ``options.seed``: what the converter measures activation ranges on."""
    x, y = data.split("train")
    rows = np.sort(np.random.default_rng(options.seed).choice(len(x), min(options.calibration, len(x)), replace=False))
    return data.normalize(x[rows], y[rows])[0].numpy()  # as the pipelines feed the model


def keras_kernels(model) -> list[tuple[str, np.ndarray]]:
    """``(layer name, kernel)`` of a plain or QAT-wrapped model, in TFLite's layout (output channels
    first; a depthwise kernel as [1, h, w, channels]), so that they compare with :func:`tflite.kernels`."""
    found = []
    for layer in model.layers:  # a QuantizeWrapperV2 holds the layer's variables, named as before wrapping
        for w in layer.weights:
            kind, k = w.name.split("/")[-1].split(":")[0], w.numpy()
            if kind in KERNELS:
                found.append((getattr(layer, "layer", layer).name, k.reshape(1, *k.shape[:2], -1)
                              if kind == "depthwise_kernel" else np.moveaxis(k, -1, 0)))
    return found


def zeros_kept(kind: str, ticket, tflite_kernels) -> dict:
    """Zeros of the ticket's kernels and of the TFLite file's, each ticket kernel paired with the next
    TFLite kernel of its shape (execution order); one line if a kernel is missing or a zero filled."""
    left, ticket_zeros, file_zeros = list(tflite_kernels), 0, 0
    for name, k in ticket:
        match = next((i for i, (_, t) in enumerate(left) if t.shape == k.shape), None)
        if match is None:
            raise TfLthError(f"the {kind} TFLite file has no kernel shaped like {name}'s {list(k.shape)}")
        t = left.pop(match)[1]
        filled = int(np.count_nonzero((k == 0) & (t != 0)))
        if filled:
            raise TfLthError(f"the {kind} TFLite file has {filled} non-zero weights where the ticket's {name} "
                             f"has zeros (its sparsity is lost)")
        ticket_zeros, file_zeros = ticket_zeros + int(np.sum(k == 0)), file_zeros + int(np.sum(t == 0))
    return {"ticket": ticket_zeros, "tflite": file_zeros, "tflite_from_rounding": file_zeros - ticket_zeros}


def integer_report(kind: str, model: bytes, int8_io: bool) -> dict:
    """The input and output types (and quantization) of a full-integer file, its kernels' and their ops'
    output types; one line unless both are int8 everywhere and the input and output as asked."""
    interpreter, _ = tflite.open_tflite(model, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    io = {side: {"dtype": d["dtype"].__name__, "scale": float(d["quantization"][0]),
                 "zero_point": int(d["quantization"][1])}
          for side, d in (("input", interpreter.get_input_details()[0]), ("output", interpreter.get_output_details()[0]))}
    found = tflite.kernels(model)
    not_int8 = [name for name, k, out in found if k.dtype != np.int8 or out != "int8"]
    wanted = "int8" if int8_io else "float32"
    if not found or not_int8 or any(side["dtype"] != wanted for side in io.values()):
        raise TfLthError(f"the {kind} TFLite file is not full-integer as asked (ops whose weights or outputs "
                         f"are not int8: {', '.join(not_int8) or 'none'}; input {io['input']['dtype']}, output "
                         f"{io['output']['dtype']}, asked {wanted})")
    return {**io, "kernel_dtypes": sorted({k.dtype.name for _, k, _ in found}),
            "activation_dtypes": sorted({out for _, _, out in found}), "kernels": [(n, k) for n, k, _ in found]}


class FullInteger:
    """A full-integer format of the stripped ticket ``net`` (``saved``: its SavedModel), ready to convert
    with its weights stored sparse or dense (:meth:`convert`): the representative set drawn and, for
    ``int8_qat``, the QAT fine-tune done once. :attr:`reference` is what the file is checked against:
    the ticket's outputs ``keras_logits`` on ``x`` for ``int8_full``, its QAT Keras model's for
    ``int8_qat``; :attr:`report` holds the calibration and QAT entries of ticket.json. ``calibration``:
    ``(representative set, split name)`` drawn already (a JAX ticket's export draws it before handing
    over to its TensorFlow process, which has no ``data``)."""

    def __init__(self, kind: str, net, saved, data, x, keras_logits, options: Options, calibration=None):
        self.kind, self.options = kind, options
        self.representative, split = calibration or (representative_set(data, options), f"{data.name} train")
        self.ticket = keras_kernels(net)
        self.report = {"calibration": {"examples": len(self.representative), "split": split, "seed": options.seed}}
        self.source, self.reference = saved, keras_logits
        if kind == "int8_qat":
            from tf_lth.keras2.qat import qat_model  # TF-MOT, tf_keras only: int8_qat is refused for Keras 3
            self.source = qat_model(net, data, options)
            qat = keras_kernels(self.source)
            changed = [name for (name, a), (_, b) in zip(self.ticket, qat) if not np.array_equal(a == 0, b == 0)]
            if changed or len(qat) != len(self.ticket):
                raise TfLthError(f"QAT changed the ticket's zeros in {', '.join(changed) or 'its kernels'} "
                                 "(TF-MOT's prune-preserving scheme failed)")
            self.reference = np.concatenate([self.source(x[i:i + 256], training=False).numpy()
                                             for i in range(0, len(x), 256)])
            test_x, test_y = data.arrays("test")
            test_logits = self.source.predict(test_x, batch_size=256, verbose=0)
            self.report["qat"] = {
                "steps": options.qat_steps, "batch": options.qat_batch, "optimizer": "Adam",
                "learning_rate": options.qat_learning_rate, "zeros": sum(int(np.sum(k == 0)) for _, k in qat),
                "keras_test_accuracy": round(float(np.mean(test_logits.argmax(-1) == test_y)), 6),
                "argmax_agreement_with_ticket": round(float(np.mean(
                    self.reference.argmax(-1) == keras_logits.argmax(-1))), 6),
                "reference": "the QAT Keras model (the file is checked against it)"}

    def convert(self, sparse: bool = True) -> tuple[bytes, dict]:
        """``(TFLite bytes, report entries)``, the weights stored sparse or dense; one line if the file is
        not full-integer as asked or lost a zero of the ticket."""
        model = tflite.convert(self.source, self.kind, self.representative, self.options.int8_io, sparse=sparse)
        integer = integer_report(self.kind, model, self.options.int8_io)
        report = {**self.report, **{k: v for k, v in integer.items() if k != "kernels"}}
        report["zeros"] = zeros_kept(self.kind, self.ticket, integer["kernels"])
        return model, report


__all__ = ["FORMATS", "CALIBRATION_EXAMPLES", "MIN_CALIBRATION", "QAT_STEPS", "QAT_BATCH", "QAT_LEARNING_RATE",
           "Options", "check", "representative_set", "keras_kernels", "zeros_kept",
           "integer_report", "FullInteger"]
