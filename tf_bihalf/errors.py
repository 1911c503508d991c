"""The error a user can fix: a bad configuration, flag, file or input.

``InputError`` subclasses ``ValueError`` (code catching ``ValueError`` keeps working). The trainers'
and command-line tools' entry points report an ``InputError`` (and ``FileNotFoundError``) as one
line with exit status 2; any other exception is a bug and keeps its traceback.

>>> try:
...     raise InputError("bits must be a positive integer; got 0.")
... except ValueError as error:
...     print(error)
bits must be a positive integer; got 0.
"""

from __future__ import annotations


class InputError(ValueError):
    """A configuration, flag, file or input problem the user can fix; its message says how."""
