r"""Bit statistics of binary codes: balance, entropy, correlation.

Codes are ±1 or {0,1} (N, K), or packed uint8 with ``bits=K`` (see ``tf_bihalf.search.hamming``).
A bit is "on" when it is +1 (or 1). Good hash codes have balanced (p = 1/2, entropy 1 bit),
uncorrelated bits; the Bi-half layer enforces the balance exactly on each training batch.

Example:

>>> codes = np.array([[1, 1, -1], [1, -1, -1], [-1, 1, -1], [-1, -1, -1]])
>>> bit_balance(codes)
array([0.5, 0.5, 0. ])
>>> per_bit, mean = bit_entropy(codes)
>>> per_bit, mean
(array([1., 1., 0.]), 0.6666666666666666)
>>> bit_correlation(codes)
array([[1., 0., 0.],
       [0., 1., 0.],
       [0., 0., 1.]])
"""

from __future__ import annotations

import numpy as np

from tf_bihalf.search import hamming

__all__ = ["bit_balance", "bit_correlation", "bit_entropy"]


def _ones(codes, bits: int | None) -> np.ndarray:
    """Codes in any accepted form -> uint8 {0,1} (N, K), with at least one row."""
    packed, bits = hamming.as_packed_codes(codes, bits, "codes")
    if packed.shape[0] == 0:
        raise ValueError("codes has zero rows; bit statistics need at least one code.")
    return np.unpackbits(packed, axis=1, count=bits)


def bit_balance(codes, bits: int | None = None) -> np.ndarray:
    r"""Fraction of codes with each bit on: :math:`p_k = \frac{1}{N} \sum_n [b_{nk} = +1]`.

    Returns:
      float64 (K,), 0.5 for a perfectly balanced bit.
    """
    return _ones(codes, bits).mean(axis=0, dtype=np.float64)


def bit_entropy(codes, bits: int | None = None) -> tuple[np.ndarray, float]:
    r"""Binary entropy of each bit in bits: :math:`H_k = -p_k \log_2 p_k - (1-p_k) \log_2 (1-p_k)`.

    :math:`0 \log 0 = 0`, so a constant bit has entropy 0 and a balanced bit 1.

    Returns:
      ``(per_bit, mean)``: float64 (K,) and their mean as a Python float.
    """
    balance = bit_balance(codes, bits)
    entropy = np.zeros_like(balance)
    for p in (balance, 1.0 - balance):
        positive = p > 0
        entropy[positive] -= p[positive] * np.log2(p[positive])
    return entropy, float(entropy.mean())


def bit_correlation(codes, bits: int | None = None) -> np.ndarray:
    r"""Pearson correlation between bits, a (K, K) matrix.

    .. math:: C_{kl} = \frac{\frac{1}{N}\sum_n b_{nk} b_{nl} - p_k p_l}
                            {\sqrt{p_k (1-p_k)\, p_l (1-p_l)}}

    (the same for ±1 and {0,1} codes). A constant bit has no defined correlation; this function
    reports 0 between it and any other bit and 1 on the diagonal, so ``max |C - I|`` stays a
    usable "redundancy" figure.

    Returns:
      float64 (K, K), symmetric, ones on the diagonal.
    """
    ones = _ones(codes, bits).astype(np.float64)
    balance = ones.mean(axis=0)
    centered = ones - balance
    covariance = centered.T @ centered / ones.shape[0]
    deviation = np.sqrt(np.diag(covariance))
    scale = np.outer(deviation, deviation)
    correlation = np.divide(covariance, scale, out=np.zeros_like(covariance), where=scale > 0)
    np.clip(correlation, -1.0, 1.0, out=correlation)
    np.fill_diagonal(correlation, 1.0)
    return correlation
