"""Options of tf-lth (stub: being rewritten; the export formats live here so that the command line
knows them without importing TensorFlow)."""
EXPORT_FORMATS = ("saved_model", "tflite", "int8", "fp16")
DEFAULT_EXPORT_FORMATS = ("saved_model", "tflite", "int8")
