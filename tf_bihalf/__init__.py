"""tf_bihalf: deep unsupervised hashing with the Bi-half layer in TensorFlow/Keras 3.

Importing the package registers every layer, model and loss with Keras' serialization, so a
`.keras` file written by this project (a run's ``encoder.keras``, say) loads in a fresh process
after ``import tf_bihalf``. Nothing is downloaded at import time.
"""

from tf_bihalf import codes, layers, losses, models  # noqa: F401  (registers Keras objects)

__version__ = "0.1.0"
