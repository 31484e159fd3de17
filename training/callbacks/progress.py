"""A progress line a person can read: step / total, speed, elapsed, ETA and the key scalars;
and a notice of the first step's compilation, the last silent wait of a start."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import keras
import numpy as np

from training.callbacks.steps import generator_step

# The scalars worth a glance; everything else is in metrics.csv and TensorBoard.
SHOWN = (("d_loss", "d_loss"), ("g_loss", "g_loss"), ("d_real", "D(real)"),
         ("d_fake", "D(fake)"), ("diversity", "diversity"))


def format_duration(seconds: float) -> str:
    """H:MM:SS, or M:SS under an hour.

    Example:

    >>> format_duration(3725)
    '1:02:05'
    """
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class FirstStepNotice(keras.callbacks.Callback):
    """Says `compiling the training step (first step)...` as the first step of the first
    `fit` begins, and `compiled in 12.3 s` when it ends: the step is traced and compiled
    then, which takes a minute or two for a large model.

    Args:
        stream: where to print (default: stdout).
    """

    def __init__(self, stream: TextIO | None = None):
        super().__init__()
        self.stream = stream or sys.stdout
        self._start_time = None
        self._done = False

    def on_train_batch_begin(self, batch, logs=None):
        if self._start_time is None:
            self._start_time = time.monotonic()
            self.stream.write("compiling the training step (first step)...\n")
            self.stream.flush()

    def on_train_batch_end(self, batch, logs=None):
        if not self._done:
            self._done = True
            self.stream.write(f"compiled in {time.monotonic() - self._start_time:.1f} s\n")
            self.stream.flush()


class ProgressLine(keras.callbacks.Callback):
    """Prints `step 1200/4000 (30%) | 0.95 steps/s | elapsed 21:03 | ETA 49:07 | d_loss ...`.

    One line per log interval (the epoch end), and one after the first step this process
    trains, which compiles the step and so comes long before the first interval ends; on a
    terminal the line is also redrawn in place after every step in between. Speed and ETA
    count only the steps of this process, so a resumed run's first line is not flattered by
    the steps it did not train; they run from the first `fit` the callback is given (a run
    may continue in a second one), and need two steps: the first one's time is mostly the
    compilation.

    Args:
        total_steps: the run's target generator step.
        stream: where to print (default: stdout).
    """

    def __init__(self, total_steps: int, stream: TextIO | None = None):
        super().__init__()
        self.total_steps = total_steps
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self._start_time = None
        self._start_step = None
        self._last_logs: dict = {}
        self._printed_step = None

    def on_train_begin(self, logs=None):
        if self._start_time is None:
            self._start_time = time.monotonic()
            self._start_step = generator_step(self.model)

    def line(self, logs: dict | None = None) -> str:
        """The progress line at the current step."""
        step = generator_step(self.model)
        elapsed = time.monotonic() - self._start_time
        trained = step - self._start_step
        rate = trained / elapsed if elapsed > 0 and trained > 1 else 0.0
        remaining = (self.total_steps - step) / rate if rate else float("nan")
        parts = [f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.0f}%)",
                 f"{rate:.2f} steps/s" if rate else "- steps/s",
                 f"elapsed {format_duration(elapsed)}",
                 f"ETA {format_duration(remaining)}" if np.isfinite(remaining) else "ETA -"]
        values = logs if logs is not None else self._last_logs
        shown = [f"{label} {float(values[key]):.3g}" for key, label in SHOWN if key in values]
        return " | ".join(parts + ([" ".join(shown)] if shown else []))

    def on_train_batch_end(self, batch, logs=None):
        if logs:
            self._last_logs = logs
        if generator_step(self.model) == self._start_step + 1:
            self._print_line()
        elif self.live:
            self.stream.write("\r\033[K" + self.line())
            self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        self._last_logs = logs or self._last_logs
        self._print_line()

    def _print_line(self) -> None:
        """Prints the line of the current step, once (the first step may end an interval)."""
        step = generator_step(self.model)
        if step != self._printed_step:
            self._printed_step = step
            self.stream.write(("\r\033[K" if self.live else "") + self.line() + "\n")
            self.stream.flush()
