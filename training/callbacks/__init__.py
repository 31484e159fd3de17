"""Keras callbacks of the training system."""

from training.callbacks.checkpoints import CheckpointCallback, RunCheckpoint
from training.callbacks.diagnostics import DiagnosticsCallback
from training.callbacks.fid import FIDCallback
from training.callbacks.guards import NonFiniteLossError, StopAtStep, StopOnNonFiniteLoss
from training.callbacks.samples import SampleGridCallback
from training.callbacks.tensorboard import StepScalarLogger
