"""tf_bihalf.losses."""
