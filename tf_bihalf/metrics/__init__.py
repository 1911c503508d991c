"""tf_bihalf.metrics."""
