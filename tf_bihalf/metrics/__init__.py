"""Retrieval metrics for binary codes (mAP@k, precision@N, precision-recall by radius) and bit
statistics. ``retrieval_report`` computes all retrieval metrics from one pass. Definitions and
conventions: ``docs/retrieval.md``."""

from tf_bihalf.metrics.bits import bit_balance, bit_correlation, bit_entropy
from tf_bihalf.metrics.retrieval import (
    average_precision,
    mean_average_precision,
    precision_at_n,
    precision_recall_curve,
    precision_within_radius,
    retrieval_report,
)

__all__ = [
    "average_precision",
    "bit_balance",
    "bit_correlation",
    "bit_entropy",
    "mean_average_precision",
    "precision_at_n",
    "precision_recall_curve",
    "precision_within_radius",
    "retrieval_report",
]
