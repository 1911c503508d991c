"""Training callbacks: TensorBoard bit monitoring, retrieval evaluation during training, and
Keras' TensorBoard with the learning rate of each epoch."""

from tf_bihalf.callbacks.best_epoch import BestValidationEpoch
from tf_bihalf.callbacks.bit_monitor import BitMonitor
from tf_bihalf.callbacks.retrieval_evaluation import RetrievalEvaluation
from tf_bihalf.callbacks.tensorboard import TrainingTensorBoard

__all__ = ["BestValidationEpoch", "BitMonitor", "RetrievalEvaluation", "TrainingTensorBoard"]
