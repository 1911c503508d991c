"""tf_bihalf.search."""
