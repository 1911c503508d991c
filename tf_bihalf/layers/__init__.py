"""Hash layers: Bi-half and the baselines the paper compares against.

Every layer maps continuous features ``(batch, bits)`` to float32 codes; in training each
applies its own binarisation, at inference each returns ``sign(U)`` (``sign(0) = +1``).
"""

from __future__ import annotations

from tf_bihalf.layers.base import HashLayer, sign_codes
from tf_bihalf.layers.bi_half import BiHalf, bihalf_codes
from tf_bihalf.layers.median_shift import MedianShift
from tf_bihalf.layers.relaxed import Relaxed
from tf_bihalf.layers.sign import Sign
from tf_bihalf.layers.sign_reg import SignReg
from tf_bihalf.layers.tanh import Tanh

LAYERS = {
    "bihalf": BiHalf,
    "sign": Sign,
    "signreg": SignReg,
    "tanh": Tanh,
    "relaxed": Relaxed,
    "median": MedianShift,
}


def get(name, **kwargs) -> HashLayer:
    """Returns a hash layer by name (``bihalf``, ``sign``, ``signreg``, ``tanh``, ``relaxed``,
    ``median``), constructed with ``kwargs``; a ``HashLayer`` instance is returned as is.

    Example:

    >>> get("bihalf", gamma=1.0).gamma
    1.0
    """
    if isinstance(name, HashLayer):
        if kwargs:
            raise ValueError("Keyword arguments cannot be applied to an existing layer instance.")
        return name
    if not isinstance(name, str) or name.lower() not in LAYERS:
        raise ValueError(f"Unknown hash layer {name!r}; choose one of {sorted(LAYERS)}.")
    return LAYERS[name.lower()](**kwargs)


__all__ = [
    "BiHalf",
    "HashLayer",
    "LAYERS",
    "MedianShift",
    "Relaxed",
    "Sign",
    "SignReg",
    "Tanh",
    "bihalf_codes",
    "get",
    "sign_codes",
]
