"""Test session setup: quiet TensorFlow and two logical CPU devices.

The two logical CPUs let the tests run ``tf.distribute.MirroredStrategy`` with two replicas on a
one-CPU machine. They must be configured before TensorFlow initialises its devices, hence here.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
except RuntimeError:  # Devices already initialised by an earlier import: keep what exists.
    pass
