"""The collapse study: which settings make the CNN GAN collapse, on how many seeds, and when.

A *cell* (`training.experiments.cells`) is a normalization, a scale and a training semantics,
written `NORM:SCALE:SEMANTICS[+SETTING=VALUE...]`, e.g. `bssn:1.2:official`, `sn:1:keras`, or
for an ablation `bssn:1.2:keras+differentiable_power_iteration=true` (one official setting
switched on in the old semantics). Each (cell, seed) is one `training.train` run of the
`cifar10-cnn-bssn` preset with the cell's settings; the runs log every `log_every` steps the
mean D(real), D(fake), ||grad_x D|| on fakes and the sample diversity
(`training.callbacks.SampleDiversityMonitor`).

Collapse, defined before the study ran (the rule of the training command's warning): from step
`DIVERSITY_WARM_UP_STEPS` on, the diversity is below `DIVERSITY_THRESHOLD` at
`DIVERSITY_PATIENCE` log rows in a row; the run collapsed at the first of those rows.

`run` trains the runs seed by seed (an unfinished study has compared every cell on its first
seeds), skips finished ones, and writes `collapse.csv` (a row per run), `collapse_log.csv`
(every logged row of every run) and `collapse.png` (the curves).
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from training.callbacks.diversity import (DIVERSITY_PATIENCE, DIVERSITY_THRESHOLD,
                                          DIVERSITY_WARM_UP_STEPS)
from training.callbacks.metrics_csv import read_metrics
from training.experiments import reporting
from training.experiments.cells import Cell
from training.experiments.training_runs import check_study_runs, train_to_end
from training.presets import TrainConfig
from training.runs import finished_status

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RUN_COLUMNS = ("cell", "seed", "steps", "collapsed", "collapse_step", "recovery_step",
               "collapsed_at_end", "diverse_from_step", "final_diversity",
               "min_diversity", "max_d_real", "final_d_real", "final_grad_norm_fake")
LOG_COLUMNS = ("cell", "seed", "step", "diversity", "d_real", "d_fake", "grad_norm_fake",
               "d_loss", "g_loss")


def run(out: pathlib.Path, cell_specs: Sequence[str], seeds: Sequence[int], steps: int,
        log_every: int, dataset: str, data_dir: str | None, batch_size: int,
        jit_compile: bool = False) -> list[dict[str, Any]]:
    """Trains the study's runs not finished yet, writes its files to `out` (after every run
    too, so that they are readable while it runs), and returns a row per run (`summarize_run`).

    `jit_compile` trains every run's step XLA-compiled: the same computation up to rounding,
    faster on some CPUs and slower on others (`benchmarks/README.md`). Off by default, as in
    the training command, so that the study measures what the main command runs.

    A cell or seed given twice is one run. Every run's settings are checked before the first
    run starts (`ConfigError`), and so are the runs an earlier call left in `out`
    (`RunFolderError` where one was trained with other settings). Ctrl-C propagates; calling
    again resumes.
    """
    planned = planned_runs(cell_specs, seeds, steps, log_every, dataset, data_dir, batch_size,
                           jit_compile)
    check_study_runs((config, cell.folder(out, seed)) for cell, seed, config in planned)
    cells = list(dict.fromkeys(cell for cell, _, _ in planned))
    seeds = list(dict.fromkeys(seed for _, seed, _ in planned))
    for index, (cell, seed, config) in enumerate(planned, 1):
        folder = cell.folder(out, seed)
        progress = f"collapse [{index}/{len(planned)}]: {cell.name} seed {seed}"
        if finished_status(folder, steps) != "incomplete":
            print(f"{progress} already done, skipped.")
            continue
        print(f"{progress}: training {folder}", flush=True)
        train_to_end(config, folder)
        _write_study(out, cells, seeds, steps, batch_size)
    return _write_study(out, cells, seeds, steps, batch_size)


def planned_runs(cell_specs: Sequence[str], seeds: Sequence[int], steps: int, log_every: int,
                 dataset: str, data_dir: str | None, batch_size: int,
                 jit_compile: bool = False) -> list[tuple[Cell, int, TrainConfig]]:
    """The study's runs, each (cell, seed) once, with the configuration each trains with (the
    arguments as for `run`); seed by seed, so that an unfinished study has compared every
    cell on its first seeds."""
    cells = dict.fromkeys(Cell.parse(spec) for spec in cell_specs)
    return [(cell, seed, cell.config(seed, steps, log_every, dataset, data_dir, batch_size,
                                     jit_compile))
            for seed in dict.fromkeys(seeds) for cell in cells]


def _write_study(out: pathlib.Path, cells: Sequence[Cell], seeds: Sequence[int], steps: int,
                 batch_size: int) -> list[dict[str, Any]]:
    logs = {(cell.name, seed): read_metrics(cell.folder(out, seed) / "metrics.csv")
            for cell in cells for seed in seeds}
    rows = [summarize_run(cell, seed, logs[cell.name, seed], steps)
            for cell in cells for seed in seeds]
    reporting.write_csv(out / "collapse.csv", rows, RUN_COLUMNS)
    log_rows = [{"cell": cell, "seed": seed, **row} for (cell, seed), run_log in logs.items()
                for row in run_log]
    reporting.write_csv(out / "collapse_log.csv", log_rows, LOG_COLUMNS)
    if log_rows:
        title = (f"CIFAR-10 CNN, batch {batch_size}: sample diversity and D(real); "
                 f"collapse below {DIVERSITY_THRESHOLD} (dashed) for {DIVERSITY_PATIENCE} rows")
        reporting.save_figure(plot_study(logs, title), out / "collapse.png")
    return rows


def collapse_step(rows: Sequence[dict[str, float]], threshold: float = DIVERSITY_THRESHOLD,
                  patience: int = DIVERSITY_PATIENCE,
                  warm_up_steps: int = DIVERSITY_WARM_UP_STEPS) -> int | None:
    """The step where the run collapsed (see the module docstring), or None.

    Example:

    >>> rows = [{"step": s, "diversity": d} for s, d in [(500, .9), (550, .1), (600, .1),
    ...                                                   (650, .1)]]
    >>> collapse_step(rows)
    550
    """
    return _first_streak((row for row in rows if row["step"] >= warm_up_steps),
                         lambda diversity: diversity < threshold, patience)


def recovery_step(rows: Sequence[dict[str, float]], collapsed_at: int,
                  threshold: float = DIVERSITY_THRESHOLD,
                  patience: int = DIVERSITY_PATIENCE) -> int | None:
    """The first step after `collapsed_at` that starts `patience` log rows in a row with the
    diversity back at or above `threshold`, or None (a collapse counts whether or not the run
    recovers; this says whether it did).

    Example:

    >>> rows = [{"step": s, "diversity": d} for s, d in [(550, .1), (600, .5), (650, .6),
    ...                                                   (700, .7)]]
    >>> recovery_step(rows, 550)
    600
    """
    return diverse_from_step([row for row in rows if row["step"] > collapsed_at], threshold,
                             patience)


def diverse_from_step(rows: Sequence[dict[str, float]], threshold: float = DIVERSITY_THRESHOLD,
                      patience: int = DIVERSITY_PATIENCE) -> int | None:
    """The first step, from the start of training, that starts `patience` log rows in a row
    with the diversity at or above `threshold`, or None: when the samples first became varied.

    The generator starts with little variety and early training may lose what it has, so a run
    can be low before the collapse rule's warm-up without counting as collapsed; this says for
    how long.

    Example:

    >>> rows = [{"step": s, "diversity": d} for s, d in [(50, .1), (100, .3), (150, .1),
    ...                                                   (200, .5), (250, .6), (300, .7)]]
    >>> diverse_from_step(rows)
    200
    """
    return _first_streak(rows, lambda diversity: diversity >= threshold, patience)


def _first_streak(rows: Iterable[dict[str, float]], holds: Callable[[float], bool],
                  patience: int) -> int | None:
    """The step of the first row that starts `patience` rows in a row whose diversity
    `holds`, or None. Rows without a diversity (the one a stopped run writes when it is
    interrupted between log rows) neither count nor break a streak."""
    streak_start, streak = None, 0
    for row in rows:
        diversity = row.get("diversity", math.nan)
        if math.isnan(diversity):
            continue
        if holds(diversity):
            streak_start = row["step"] if streak == 0 else streak_start
            streak += 1
            if streak >= patience:
                return int(streak_start)
        else:
            streak = 0
    return None


def summarize_run(cell: Cell, seed: int, rows: Sequence[dict[str, float]],
                  steps: int) -> dict[str, Any]:
    """One row of the study's table for a run's log; `steps` is the study's run length.

    An unfinished run that has not collapsed yet is undecided: `collapsed` and
    `collapsed_at_end` are None (blank in the CSV), not False.
    """
    if not rows:
        return {"cell": cell.name, "seed": seed, "steps": 0}
    step = collapse_step(rows)
    recovered = None if step is None else recovery_step(rows, step)
    last = rows[-1]
    finished = last["step"] >= steps
    diversities = _logged(rows, "diversity")
    return {
        "cell": cell.name, "seed": seed, "steps": last["step"],
        "collapsed": True if step is not None else (False if finished else None),
        "collapse_step": step, "recovery_step": recovered,
        "collapsed_at_end": (step is not None and recovered is None) if finished else None,
        "diverse_from_step": diverse_from_step(rows),
        # The last measured: a run stopped by Ctrl-C ends on a row without one.
        "final_diversity": diversities[-1] if diversities else math.nan,
        "min_diversity": min(diversities, default=math.nan),
        "max_d_real": max(_logged(rows, "d_real"), default=math.nan),
        "final_d_real": last.get("d_real"),
        "final_grad_norm_fake": last.get("grad_norm_fake"),
    }


def _logged(rows: Sequence[dict[str, float]], key: str) -> list[float]:
    """The values of `key` the rows have (NaN marks one a row lacks)."""
    return [row[key] for row in rows if not math.isnan(row.get(key, math.nan))]


def cell_verdicts(run_rows: Sequence[dict[str, Any]], steps: int) -> list[str]:
    """One line per cell: collapsed runs out of finished ones, with their steps (and the step
    each recovered at, if it did)."""
    lines = []
    for cell in dict.fromkeys(row["cell"] for row in run_rows):
        rows = [row for row in run_rows if row["cell"] == cell]
        finished = [row for row in rows if row["steps"] >= steps or row.get("collapsed")]
        collapsed = [row for row in finished if row.get("collapsed")]
        where = ", ".join(
            f"seed {row['seed']} at {row['collapse_step']}"
            + (f", recovered at {row['recovery_step']}" if row.get("recovery_step") else "")
            for row in collapsed)
        lines.append(f"{cell}: collapsed in {len(collapsed)} of {len(finished)} finished runs"
                     + (f" ({where})" if where else "")
                     + (f"; {len(rows) - len(finished)} unfinished" if len(finished) < len(rows)
                        else ""))
    return lines


def plot_study(logs: dict[tuple[str, int], list[dict[str, float]]], title: str) -> Figure:
    """Diversity and mean D(real) over steps: a column per cell, a line per seed."""
    pyplot = reporting.pyplot()
    cells = list(dict.fromkeys(cell for cell, _ in logs))
    figure, panels = pyplot.subplots(2, len(cells), squeeze=False, sharex=True,
                                     figsize=(3.6 * len(cells), 6.2))
    for column, cell in enumerate(cells):
        top, bottom = panels[0, column], panels[1, column]
        for (name, seed), rows in sorted(logs.items()):
            if name != cell or not rows:
                continue
            # A row an interruption wrote has losses but no diversity: a gap in no line.
            measured = [row for row in rows if math.isfinite(row.get("diversity", math.nan))]
            top.plot([row["step"] for row in measured], [row["diversity"] for row in measured],
                     label=f"seed {seed}")
            bottom.plot([row["step"] for row in rows], [row.get("d_real", math.nan) for row in rows])
        top.axhline(DIVERSITY_THRESHOLD, color="grey", linestyle="--", linewidth=0.8)
        top.set_title(cell, fontsize=9)
        top.set_ylabel("sample diversity / real batch's")
        top.set_ylim(0, 1.3)
        if top.get_legend_handles_labels()[0]:  # a cell without a run yet has no lines
            top.legend(fontsize=7)
        # Linear near 0 (mean D(real) may be negative), logarithmic in the hundreds of a
        # collapse.
        bottom.set_yscale("symlog", linthresh=1.0)
        bottom.set_ylabel("mean D(real)")
        bottom.set_xlabel("generator step")
        for axes in (top, bottom):
            axes.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return figure
