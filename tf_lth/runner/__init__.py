"""Whole experiments (``tf-lth run``): the resumable runner (:mod:`~tf_lth.runner.experiment`), branches off a
finished run (:mod:`~tf_lth.runner.branches`), replicates and comparisons (:mod:`~tf_lth.runner.replicates`),
results files read back (:mod:`~tf_lth.runner.results`) and figures (:mod:`~tf_lth.runner.plots`); results,
replicates and plots import neither TensorFlow nor Keras."""
