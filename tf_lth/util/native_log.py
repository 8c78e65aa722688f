"""TensorFlow's and LiteRT's native start-up lines, filtered from stderr (no TensorFlow import here).

The one TensorFlow import (:mod:`tf_lth.util.tensorflow`) and both Keras flavours' imports run inside
:func:`native_noise_filtered`, and :mod:`tf_lth.export.tflite` runs LiteRT interpreters inside it; other
lines pass through.
"""
import contextlib
import os
import re
import sys
import tempfile

# TensorFlow's native libraries print INFO lines while they load, before any log level applies,
# and an error line when a CPU-only machine is asked for its GPUs.
NATIVE_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+\s+\d+ \S+:\d+\] .*"
    r"|E\d{4} [\d:.]+\s+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*"
    # LiteRT announces its default CPU delegate each time an interpreter is made
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)$"
)
@contextlib.contextmanager
def native_noise_filtered():
    """Run the block with the native noise above (:data:`NATIVE_NOISE`) filtered out of stderr (other
    lines pass): around imports and CUDA probing here, around LiteRT interpreters in :mod:`tf_lth.export.tflite`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not NATIVE_NOISE.match(line.rstrip("\n"))))
            sys.stderr.flush()


__all__ = ["NATIVE_NOISE", "native_noise_filtered"]
