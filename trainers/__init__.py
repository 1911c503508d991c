"""Runnable jobs: ``python -m trainers.autoencoder | trainers.image | trainers.video`` (a config
plus a task), ``trainers.sweep`` and ``trainers.launch``.

TensorFlow's C++ start-up messages (oneDNN notices, CUDA probing on a machine without a GPU,
"All log messages before absl::InitializeLog()") are hidden while TensorFlow is imported and its
devices are initialised, unless asked for: set ``TF_CPP_MIN_LOG_LEVEL`` yourself (``0`` shows
everything) and nothing is hidden. Messages after start-up are shown as usual.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

TF_LOGS_ASKED_FOR = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _flush_c_streams() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def quiet_native_stderr():
    """Sends file descriptor 2 to /dev/null inside the block (native libraries' start-up
    output), unless the user set ``TF_CPP_MIN_LOG_LEVEL``."""
    if TF_LOGS_ASKED_FOR:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        _flush_c_streams()  # native libraries' buffered output goes to /dev/null too
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow, Keras and ``tf_bihalf`` inside ``quiet_native_stderr`` (Keras probes
    the devices when it is imported). The trainers call it before anything imports TensorFlow;
    ``trainers.sweep``, which only starts trainers, never imports TensorFlow at all."""
    with quiet_native_stderr():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401

        import tf_bihalf  # noqa: F401
