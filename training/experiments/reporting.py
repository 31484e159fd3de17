"""The experiments' tables and figures: CSV files, pyplot without a display, and the grouping
and line-with-band plotting that more than one experiment's figure uses."""

from __future__ import annotations

import csv
import io
import pathlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from training.images import atomic_writer

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def write_csv(path: pathlib.Path, rows: Iterable[dict], columns: Sequence[str]) -> None:
    """Writes `rows` (dicts with at least `columns`) as CSV, atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_writer(path) as file:
        file.write(text.getvalue().encode())


def pyplot() -> ModuleType:
    """matplotlib's pyplot, drawing to files only."""
    import matplotlib

    matplotlib.use("Agg")  # training machines have no display
    from matplotlib import pyplot as plt

    return plt


def save_figure(figure: Figure, path: pathlib.Path) -> None:
    """Writes `figure` as a PNG, atomically, and closes it."""
    with atomic_writer(path) as file:
        figure.savefig(file, format="png", dpi=150, bbox_inches="tight")
    from matplotlib import pyplot as plt

    plt.close(figure)


def grouped(rows: Iterable[dict], key: str) -> dict[Any, list[dict]]:
    """{value of `key`: the rows with it}, in the rows' order."""
    groups: dict = defaultdict(list)
    for row in rows:
        groups[row[key]].append(row)
    return groups


def curves(rows: Iterable[dict], group: str, value: str) -> dict[Any, dict[int, list[float]]]:
    """{group value: {step: [values over seeds]}} of the rows, in their order."""
    by_group: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_group[row[group]][row["step"]].append(float(row[value]))
    return by_group


def line_with_band(axes: Axes, by_step: dict[int, list[float]],
                   center: Callable[[list[float]], float], color: Any, **kwargs: Any) -> None:
    """`center` of each step's values (over seeds) as a line, their min-max as a band."""
    steps = sorted(by_step)
    axes.plot(steps, [center(by_step[step]) for step in steps], color=color, **kwargs)
    axes.fill_between(steps, [min(by_step[step]) for step in steps],
                      [max(by_step[step]) for step in steps], color=color, alpha=0.15)
