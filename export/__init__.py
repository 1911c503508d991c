"""Export and deployment of trained tf_bihalf encoders (see docs/export.md).

- ``export.saved_model``: run directory -> versioned SavedModel (``serving_default``,
  ``image_bytes``), servable by TF Serving;
- ``export.tflite``: SavedModel -> TFLite (float32, float16, int8), checked against it;
- ``export.serving_client``: REST / gRPC client for TF Serving;
- ``export.encode``: encode image folders or lists into codes and a Hamming index, and query it.
"""
