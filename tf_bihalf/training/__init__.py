"""tf_bihalf.training."""
