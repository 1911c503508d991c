"""tf_bihalf.models."""
