"""Keras callbacks of the training system."""

from training.callbacks.checkpoints import CheckpointCallback, CheckpointError, RunCheckpoint
from training.callbacks.diagnostics import DiagnosticsCallback
from training.callbacks.diversity import SampleDiversityMonitor
from training.callbacks.fid import FIDCallback
from training.callbacks.guards import NonFiniteLossError, StopAtStep, StopOnNonFiniteLoss
from training.callbacks.metrics_csv import MetricsCSVLogger
from training.callbacks.progress import ProgressLine
from training.callbacks.samples import SampleGridCallback
from training.callbacks.steps import generator_step
from training.callbacks.tensorboard import StepScalarLogger
