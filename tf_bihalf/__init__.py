"""tf_bihalf: deep unsupervised hashing with the Bi-half layer in TensorFlow/Keras 3.

Importing the package registers every layer with Keras' serialization, so a `.keras` file
that contains a tf_bihalf layer loads in a fresh process after `import tf_bihalf`.
Nothing is downloaded at import time.
"""

from tf_bihalf import layers  # noqa: F401  (registers the layers)

__version__ = "0.1.0"
