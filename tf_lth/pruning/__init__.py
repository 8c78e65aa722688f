"""The science of a round, in numpy (no TensorFlow, no Keras: tested on hand-made arrays in milliseconds):
which weights survive (:mod:`~tf_lth.pruning.selection`: criteria, scopes, blocks, N:M), how many per layer
(:mod:`~tf_lth.pruning.rates`), what the survivors restart from (:mod:`~tf_lth.pruning.rewind`), the
controls a ticket is compared with (:mod:`~tf_lth.pruning.controls`) and when a round may stop early
(:mod:`~tf_lth.pruning.stopping`)."""
