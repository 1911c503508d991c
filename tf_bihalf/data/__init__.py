"""tf_bihalf.data."""
