"""KID over training: short training runs over normalizations x scales x seeds (the paper's
grid at a CPU size), each evaluated with KID every few steps; SN and BSN at a scale c other
than 1 are SSN and BSSN.

Each run is a `training.train` run folder under `<out>/runs/`, so an interrupted sweep resumes
where it stopped and finished runs are skipped. Writes `sweep.csv` (a row per run and KID
evaluation) and `sweep.png`. Without the Inception graph KID is computed in pixel space
(images resized to a small size): it ranks runs against each other, but its values are not
comparable with published KIDs; the CSV's `extractor` column and the plot say which was used.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import pathlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from training.experiments import reporting
from training.experiments.normalizations import label
from training.experiments.training_runs import TrainingSetup, check_study_runs, train_to_end
from training.inception import INCEPTION_GRAPH_ENV
from training.presets import TrainConfig
from training.protocol import INCEPTION_2015_NAME
from training.runs import finished_status

COLUMNS = ("norm", "scale", "seed", "step", "kid", "kid_std", "fid", "extractor", "status")
# c multiplies every normalization here: SN and BSN at c != 1 are SSN and BSSN.
_SCALED_NAMES = {"sn": "SSN", "bsn": "BSSN"}


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One (normalization, scale, seed) of the sweep and its run folder."""

    norm: str
    scale: float
    seed: int
    folder: pathlib.Path

    def status(self, steps: int) -> str:
        """"finished" / "diverged" once trained to `steps`, else "incomplete"."""
        return finished_status(self.folder, steps)


def run(out: pathlib.Path, setup: TrainingSetup, *, norms: Sequence[str],
        scales: Sequence[float], seeds: Sequence[int], eval_every: int, kid_samples: int,
        kid_real: int, extractor: str, pixel_size: int) -> list[dict[str, Any]]:
    """Trains the runs of the grid not finished yet, writes `sweep.csv` and `.png` to `out`
    (after every run too, so that partial results are readable), and returns the rows.

    Every `eval_every` steps (which must divide `setup.steps`) a run computes KID between
    `kid_samples` generated and `kid_real` real images with `extractor`: "auto" (the
    Inception graph if KERAS_BSSN_INCEPTION_GRAPH is set, else pixels), "pixels" (the pixels
    of images resized to `pixel_size`), or what `TrainConfig.extractor` takes.
    Ctrl-C propagates; calling again resumes.
    """
    planned = planned_runs(out, setup, norms=norms, scales=scales, seeds=seeds,
                           eval_every=eval_every, kid_samples=kid_samples, kid_real=kid_real,
                           extractor=extractor, pixel_size=pixel_size)
    check_study_runs((config, sweep_run.folder) for sweep_run, config in planned)
    extractor_path, extractor_label = _kid_extractor(extractor, pixel_size, out)
    if _kid_choice(extractor) == "pixels":
        _save_pixel_extractor(pathlib.Path(extractor_path), pixel_size)
    runs = [sweep_run for sweep_run, _ in planned]
    for index, (sweep_run, config) in enumerate(planned, 1):
        if sweep_run.status(setup.steps) != "incomplete":
            print(f"sweep [{index}/{len(runs)}]: {sweep_run.folder.name} already done, skipped.")
            continue
        print(f"sweep [{index}/{len(runs)}]: training {sweep_run.folder}", flush=True)
        train_to_end(config, sweep_run.folder)
        _write_sweep(out, setup, seeds, runs, extractor_label)  # readable while it runs
    return _write_sweep(out, setup, seeds, runs, extractor_label)


def planned_runs(out: pathlib.Path, setup: TrainingSetup, *, norms: Sequence[str],
                 scales: Sequence[float], seeds: Sequence[int], eval_every: int,
                 kid_samples: int, kid_real: int, extractor: str,
                 pixel_size: int) -> list[tuple[SweepRun, TrainConfig]]:
    """The grid's runs (`sweep_runs`), each with the configuration it trains with (the
    arguments as for `run`)."""
    extractor = _kid_extractor(extractor, pixel_size, out)[0]
    return [(sweep_run, setup.config(sweep_run.norm, sweep_run.scale, sweep_run.seed,
                                     log_every=eval_every, sample_every=eval_every,
                                     checkpoint_every=eval_every, fid_every=eval_every,
                                     fid_samples=kid_samples, fid_real_samples=kid_real,
                                     is_samples=kid_samples, extractor=extractor))
            for sweep_run in sweep_runs(out, norms, scales, seeds)]


def sweep_runs(out: pathlib.Path, norms: Sequence[str], scales: Sequence[float],
               seeds: Sequence[int]) -> list[SweepRun]:
    """The grid: every normalization x scale x seed ("none" only at c = 1), each once."""
    runs = []
    for norm in dict.fromkeys(norms):
        for scale in sorted({1.0 if norm == "none" else scale for scale in scales}):
            for seed in dict.fromkeys(seeds):
                folder = out / "runs" / f"{norm}-c{scale:g}-s{seed}"
                runs.append(SweepRun(norm, scale, seed, folder))
    return runs


def _kid_extractor(choice: str, pixel_size: int, out: pathlib.Path) -> tuple[str, str]:
    """(extractor for TrainConfig, label for outputs); "pixels" is the model
    `_save_pixel_extractor` writes."""
    choice = _kid_choice(choice)
    if choice != "pixels":
        return choice, choice
    return (str(out / f"pixels{pixel_size}.keras"),
            f"pixels {pixel_size}x{pixel_size}, not comparable with published KID")


def _kid_choice(choice: str) -> str:
    """The extractor "auto" stands for: the Inception graph when it is here, else pixels."""
    if choice == "auto":
        return INCEPTION_2015_NAME if os.environ.get(INCEPTION_GRAPH_ENV) else "pixels"
    return choice


def _save_pixel_extractor(path: pathlib.Path, size: int) -> None:
    """Writes to `path` a `.keras` model whose features are the pixels of images resized to
    size x size.

    Written once: its digest names the cached real statistics, so it must not change.
    """
    folder = path.parent
    if not path.exists():
        images = keras.Input((size, size, 3))
        model = keras.Model(images, keras.layers.Flatten()(images), name=f"pixels{size}")
        partial = folder / f".partial-pixels{size}.keras"
        folder.mkdir(parents=True, exist_ok=True)
        model.save(partial)
        os.replace(partial, path)


def _run_rows(sweep_run: SweepRun, steps: int, extractor_label: str) -> list[dict]:
    """The KID evaluations in a run's metrics.csv (the last row of each step wins)."""
    path = sweep_run.folder / "metrics.csv"
    if not path.exists():
        return []
    status = sweep_run.status(steps)
    by_step = {}
    with open(path) as file:
        for row in csv.DictReader(file):
            kid = float(row.get("kid") or "nan")
            if math.isfinite(kid):
                step = int(float(row["step"]))
                by_step[step] = {"norm": sweep_run.norm, "scale": sweep_run.scale,
                                 "seed": sweep_run.seed, "step": step, "kid": kid,
                                 "kid_std": float(row["kid_std"]), "fid": float(row["fid"]),
                                 "extractor": extractor_label, "status": status}
    return [by_step[step] for step in sorted(by_step)]


def _write_sweep(out: pathlib.Path, setup: TrainingSetup, seeds: Sequence[int],
                 runs: list[SweepRun], extractor_label: str) -> list[dict]:
    rows = [row for sweep_run in runs for row in _run_rows(sweep_run, setup.steps,
                                                           extractor_label)]
    reporting.write_csv(out / "sweep.csv", rows, COLUMNS)
    if rows:
        plot(rows, out / "sweep.png",
             f"KID ({extractor_label}) over training: {setup.arch.upper()} "
             f"{setup.image_size}x{setup.image_size}, batch {setup.batch_size}, "
             f"seeds {', '.join(map(str, seeds))}; line: mean, band: min-max")
    return rows


def plot(rows: list[dict], path: pathlib.Path, title: str) -> None:
    """KID over steps (a panel per normalization, a line per scale) and final KID vs scale."""
    pyplot = reporting.pyplot()
    groups = reporting.grouped(rows, "norm")
    figure, panels = pyplot.subplots(1, len(groups) + 1, squeeze=False,
                                     figsize=(4.4 * (len(groups) + 1), 3.8))
    scales = sorted({row["scale"] for row in rows})
    colors = pyplot.get_cmap("plasma")
    final = panels[0, -1]
    for axes, (norm, chosen) in zip(panels[0], groups.items()):
        if axes is not panels[0, 0]:
            axes.sharey(panels[0, 0])  # one KID axis for every normalization
        finals = []
        for scale, by_scale in sorted(reporting.grouped(chosen, "scale").items()):
            color = colors(0.85 * scales.index(scale) / max(len(scales) - 1, 1))
            by_step = reporting.curves(by_scale, "scale", "kid")[scale]
            reporting.line_with_band(axes, by_step, np.mean, color, marker="o", markersize=3,
                                     label=f"c = {scale:g}")
            last = by_step[max(by_step)]
            finals.append((scale, np.mean(last), np.std(last)))
        name = label(norm)
        if norm in _SCALED_NAMES:
            name += f" ({_SCALED_NAMES[norm]} at c ≠ 1)"
        axes.set_title(name)
        axes.set_xlabel("generator step")
        axes.set_ylabel("KID")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        xs, means, stds = zip(*finals)
        final.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=name)
    final.set_title("last evaluation (mean ± std over seeds)")
    final.set_xlabel("scale c")
    final.set_ylabel("KID")
    final.grid(alpha=0.3)
    final.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    reporting.save_figure(figure, path)


def summary(rows: list[dict]) -> list[str]:
    """Per (normalization, scale), the mean ± std over seeds of each seed's last KID."""
    last: dict = defaultdict(dict)
    for row in rows:
        last[(row["norm"], row["scale"])][row["seed"]] = row
    lines = []
    for (norm, scale), by_seed in sorted(last.items()):
        kids = [row["kid"] for row in by_seed.values()]
        step = max(row["step"] for row in by_seed.values())
        lines.append(f"{label(norm):>10} c = {scale:<4g}: KID at step {step} "
                     f"{np.mean(kids):.4g} ± {np.std(kids):.2g} over {len(kids)} seed(s)")
    return lines
