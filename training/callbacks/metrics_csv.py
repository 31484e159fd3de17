"""metrics.csv: one row per log interval, `step` first, only columns that hold values."""

from __future__ import annotations

import csv
import io
import math
import os

import keras
import numpy as np

from training.callbacks.steps import generator_step
from training.images import atomic_writer


class MetricsCSVLogger(keras.callbacks.Callback):
    """Appends the epoch logs to a CSV file, keyed by the generator step.

    Unlike `keras.callbacks.CSVLogger`: the first column is `step` (the generator step of the
    row, which a resumed run continues), there is no `epoch` column and no empty `val_*`
    columns, and a row with keys the file's header lacks (another normalization after
    `--force`, a metric added later) rewrites the file with the union of the columns, so no
    row ever sits under the wrong header. Rows are flushed as they are written.
    `write_partial_row` saves the running means of an interval cut short (Ctrl-C), so no
    step's losses are lost from the file; the checkpoint keeps them too, so that the row that
    ends the interval after a resume averages all of its steps (`CheckpointCallback`).

    Args:
        path: the CSV file; created, or appended to.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = os.fspath(path)
        self._batch_logs: dict = {}
        self._written_step: int | None = None

    def _header(self) -> list[str]:
        if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
            return []
        with open(self.path, newline="") as file:
            return next(csv.reader(file), [])

    def _rewrite(self, columns: list[str]) -> None:
        with open(self.path, newline="") as file:
            rows = list(csv.DictReader(file))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        with atomic_writer(self.path) as file:
            file.write(text.getvalue().encode())

    def write_row(self, logs: dict) -> None:
        """Appends one row: the current step and every scalar entry of `logs`."""
        row = {"step": generator_step(self.model)}
        for key, value in logs.items():
            if key != "step" and np.ndim(value) == 0:
                row[key] = _format(float(value))
        header = self._header()
        columns = header or ["step", *sorted(key for key in row if key != "step")]
        missing = [key for key in row if key not in columns]
        if missing:
            columns = columns + sorted(missing)
            self._rewrite(columns)
        with open(self.path, "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns, lineterminator="\n")
            if not header and not missing:
                writer.writeheader()
            writer.writerow(row)
        self._written_step = row["step"]

    def write_partial_row(self) -> None:
        """Writes the running means of the current interval, if it has a step not yet in the
        file (call it when training stops between two log rows)."""
        if self._batch_logs and generator_step(self.model) != self._written_step:
            self.write_row(self._batch_logs)

    def on_train_batch_end(self, batch, logs=None):
        self._batch_logs = dict(logs or {})

    def on_epoch_end(self, epoch, logs=None):
        self.write_row(logs or {})


def read_metrics(path: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of a metrics.csv that have a step, as numbers (NaN where empty), by step; the
    last row of a step wins (a resumed run logs again the steps after its checkpoint).
    A missing file has no rows."""
    if not os.path.exists(path):
        return []
    by_step = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            values = {key: _number(value) for key, value in row.items() if key}
            if math.isfinite(values.get("step", math.nan)):
                values["step"] = int(values["step"])
                by_step[values["step"]] = values
    return [by_step[step] for step in sorted(by_step)]


def _number(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _format(value: float) -> str:
    return repr(value) if math.isfinite(value) else str(value)
