"""Training: a loop with callbacks, runs that resume exactly, and evaluation."""

from .callbacks import Callback, Checkpointer, MetricsLog, ProgressBar, TensorBoardLogger
from .run import Run, find_checkpoint, load, train
from .trainer import Trainer, TrainingInterrupted, TrainState, evaluate

__all__ = [
    "Callback", "Checkpointer", "MetricsLog", "ProgressBar", "Run", "TensorBoardLogger",
    "TrainState", "Trainer", "TrainingInterrupted", "evaluate", "find_checkpoint", "load", "train",
]
