"""tf_bihalf.callbacks."""
