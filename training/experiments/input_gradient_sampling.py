"""Whether `||grad_x D||` measured on every k-th step logs the curve that every step gives.

From a run that logged one row per step with the statistic measured on every step
(`--log-every 1 --input-gradient-every 1`), this forms the rows of `row_steps` steps that a run
measuring every `every`-th step would log (the same training bit for bit:
tests/training/test_gan.py::test_input_gradients_measured_every_kth_step_are_those_of_every_step),
next to the rows that every step gives, with the standard error of the sampled mean: the
spread of the row's steps, the sample of n of its N steps taken as a simple random one,
sd / sqrt(n) * sqrt(1 - n / N). Within noise means |z| = |sampled - every step| / error
mostly below 2.
"""

from __future__ import annotations

import math
import pathlib
import statistics

from training.callbacks.metrics_csv import read_metrics
from training.errors import RunFolderError, UsageError
from training.experiments.reporting import grouped, pyplot, save_figure, write_csv
from training.runs import saved_config

COLUMNS = ("grad_norm_real", "grad_norm_fake")
CSV_COLUMNS = ("step", "column", "every_step", "sampled", "standard_error", "z")


def check_settings(run_dir: pathlib.Path, every: int, row_steps: int) -> None:
    """Refuses a run that did not log every step's value, and a sample the rows cannot hold.

    Raises:
        RunFolderError: `run_dir` holds no run, or one that logged rows of several steps or
            measured on some steps only.
        UsageError: `every` above `row_steps`.
    """
    config = saved_config(run_dir)
    if config.log_every != 1 or config.input_gradient_interval() != 1:
        raise RunFolderError(
            f"{run_dir} logged a row every {config.log_every} steps, measuring ||grad_x D|| "
            f"every {config.input_gradient_interval()}; this needs every step's value: train "
            "it with --log-every 1 --input-gradient-every 1.")
    if every > row_steps:
        raise UsageError(f"--every {every} is above --row-steps {row_steps}: a row would "
                         "hold no measured step. Give --every at most --row-steps.")


def run(out: pathlib.Path, run_dir: pathlib.Path, every: int,
        row_steps: int) -> list[dict]:
    """Writes `input-gradient-sampling.csv` and `.png` to `out`; returns the rows."""
    by_step = {row["step"]: row for row in read_metrics(run_dir / "metrics.csv")}
    last_row = max(by_step, default=0) // row_steps * row_steps
    rows = []
    for end in range(row_steps, last_row + 1, row_steps):
        steps = range(end - row_steps + 1, end + 1)
        if not all(step in by_step for step in steps):
            continue  # a row the run did not log whole
        # The GAN measures where its step counter, before the step, is a multiple of
        # `every`: the logged step is one more.
        sampled = [step for step in steps if (step - 1) % every == 0]
        for column in COLUMNS:
            rows.append(_row(end, column, [by_step[step][column] for step in steps],
                             [by_step[step][column] for step in sampled]))
    if not rows:
        raise RunFolderError(f"{run_dir} has no {row_steps} logged steps yet; let it train "
                             "further or give a smaller --row-steps.")
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "input-gradient-sampling.csv", rows, CSV_COLUMNS)
    _plot(rows, every, row_steps, out / "input-gradient-sampling.png")
    return rows


def _row(step: int, column: str, values: list[float], sample: list[float]) -> dict:
    error = (statistics.stdev(values) / math.sqrt(len(sample))
             * math.sqrt(1 - len(sample) / len(values)))
    every_step, sampled = statistics.fmean(values), statistics.fmean(sample)
    return {"step": step, "column": column, "every_step": every_step, "sampled": sampled,
            "standard_error": error,
            "z": (sampled - every_step) / error if error else 0.0}


def summary(rows: list[dict]) -> list[str]:
    """A line per statistic: how far the sampled rows are from the every-step rows, in
    standard errors and against the curve's own change from row to row."""
    lines = []
    for column, of_column in grouped(rows, "column").items():
        z = [abs(row["z"]) for row in of_column]
        differences = [abs(row["sampled"] - row["every_step"]) for row in of_column]
        changes = [abs(b["every_step"] - a["every_step"])
                   for a, b in zip(of_column, of_column[1:])]
        change = f"{statistics.fmean(changes):.4g}" if changes else "-"
        lines.append(
            f"{column}: {len(of_column)} rows; |z| below 2 in {sum(v < 2 for v in z)}, "
            f"largest {max(z):.2f}; mean |sampled - every step| {statistics.fmean(differences):.4g}"
            f", mean change between rows {change}")
    return lines


def _plot(rows: list[dict], every: int, row_steps: int, path: pathlib.Path) -> None:
    plt = pyplot()
    figure, panels = plt.subplots(1, len(COLUMNS), figsize=(6 * len(COLUMNS), 4))
    for axes, (column, of_column) in zip(panels, grouped(rows, "column").items()):
        steps = [row["step"] for row in of_column]
        axes.plot(steps, [row["every_step"] for row in of_column], color="black",
                  label="every step")
        sampled = [row["sampled"] for row in of_column]
        errors = [2 * row["standard_error"] for row in of_column]
        axes.errorbar(steps, sampled, yerr=errors, fmt="o", color="tab:orange", capsize=3,
                      label=f"every {every}th step (±2 standard errors)")
        axes.set(title=f"{column}, rows of {row_steps} steps", xlabel="generator step",
                 ylabel="mean ||grad_x D||")
        axes.legend()
    save_figure(figure, path)
