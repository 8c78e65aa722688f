"""Plumbing every layer uses: atomic files (:mod:`~tf_lth.util.io`), TensorFlow's and LiteRT's native start-up
noise filtered (:mod:`~tf_lth.util.native_log`) and the one quiet TensorFlow import
(:mod:`~tf_lth.util.tensorflow`)."""
