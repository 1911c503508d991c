"""Checks of the arrays users hand to the models' encode helpers."""

from __future__ import annotations

import numpy as np


def finite_features(values, width: int, what: str) -> np.ndarray:
    """``values`` as a float32 ``(N, width)`` array of finite numbers, else ``ValueError``.

    NaN has no sign, so it has no code: without this check ``sign(NaN)`` would silently
    encode as -1 (the serving signatures refuse NaN in the same way).
    """
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numeric; got dtype {array.dtype}.")
    array = array.astype(np.float32, copy=False)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{what} must be (N, {width}); got shape {array.shape}.")
    finite = np.isfinite(array)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"{what} contain NaN or Inf in {rows.size} of {len(array)} rows (first: row "
            f"{rows[0]}); NaN has no sign, so it has no code. Fix or drop those rows first."
        )
    return array
