"""The paper's analysis, reproducible: `python -m training.analyze <experiment> [--flags]`.

Experiments (each writes `<experiment>.csv` and `<experiment>.png` to `--out`, default
`runs/analysis/<experiment>`):

- `init-variance`: per layer of a reference discriminator, the variance of the kernel the
  forward pass uses with no normalization (the reference init: N(0, 0.02^2) for the CNN), with
  LeCun init, and after SN, strict SN, BSN and BSSN (converged sigmas), next to the LeCun, Xavier
  and Kaiming variances.
- `gradients`: per-layer norms of D's weight gradients at initialization and after each of the
  first `--steps` training steps on real data, per normalization and seed: which explode, which
  vanish.
- `collapse`: the seed study of `training.collapse`: runs of the CIFAR-10 CNN per cell
  (normalization, scale, semantics) and seed, and when (if ever) each collapsed. Resumable
  like `sweep`.
- `sweep`: short training runs over normalizations x scales x seeds (the paper's grid at a CPU
  size), with KID over steps. Each run is a `training.train` run folder under `runs/`, so an
  interrupted sweep resumes where it stopped and finished runs are skipped; all results are
  gathered in one CSV. Without the Inception graph (`KERAS_BSSN_INCEPTION_GRAPH`) KID is
  computed in pixel space (images resized to `--pixel-size`): it ranks runs against each
  other, but its values are NOT comparable with published KIDs; the plot says which was used.

Data defaults to the shared CIFAR-10 JPEGs (`../shared/data/cifar10-jpeg.tar.gz`) when they
exist, else TFDS `cifar10`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import sys
from collections import defaultdict
from typing import Any, Iterable, Sequence

import keras
import numpy as np

from keras_bssn import advance_power_iteration, spectral_normalize
from keras_bssn.diagnostics import weight_variance_table
from training import collapse, data
from training.callbacks import DiagnosticsCallback
from training.images import atomic_writer
from training.inception import INCEPTION_2015_NAME, INCEPTION_GRAPH_ENV
from training.networks import build_networks
from training.presets import TrainConfig
from training.train import EXIT_NON_FINITE, build_gan, prepare_run_folder, train

SHARED_CIFAR10 = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "cifar10-jpeg.tar.gz"
LABELS = {"none": "none (reference init)", "lecun": "LeCun init", "sn": "SN",
          "ssn": "SSN", "strict": "strict SN", "bsn": "BSN", "bssn": "BSSN"}
INIT_SETTINGS = ("none", "lecun", "sn", "strict", "bsn", "bssn")
INIT_COLUMNS = ("setting", "scale", "seed", "name", "layer_class", "kernel_shape", "fan_in",
                "fan_out", "var", "lecun", "xavier", "kaiming", "var_over_lecun",
                "var_over_xavier", "var_over_kaiming")
# In the sweep c multiplies every normalization: SN and BSN at c != 1 are SSN and BSSN.
_SCALED_NAMES = {"sn": "SSN", "bsn": "BSSN"}
GRADIENT_COLUMNS = ("norm", "scale", "seed", "step", "layer", "grad_norm")
SWEEP_COLUMNS = ("norm", "scale", "seed", "step", "kid", "kid_std", "fid", "extractor",
                 "status")
SWEEP_STATUS_FILE = "sweep_status.json"
_GRAD_PREFIX = "diag/weight_grad/"


# Files.


def write_csv(path: pathlib.Path, rows: Iterable[dict], columns: Sequence[str]) -> None:
    """Writes `rows` (dicts with at least `columns`) as CSV, atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_writer(path) as file:
        file.write(text.getvalue().encode())


def _save_figure(figure, path: pathlib.Path) -> None:
    from matplotlib import pyplot

    with atomic_writer(path) as file:
        figure.savefig(file, format="png", dpi=150, bbox_inches="tight")
    pyplot.close(figure)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on training machines
    from matplotlib import pyplot

    return pyplot


def _scale_of(norm: str, scale: float) -> float:
    """The scale c applies to the scaled variants only; the others keep c = 1."""
    return scale if norm in ("ssn", "bssn") else 1.0


def _geometric_mean(values: Iterable[float]) -> float:
    return float(np.exp(np.mean(np.log(np.maximum(list(values), 1e-30)))))


# init-variance.


def _with_lecun_init(reference):
    def rebuild(layer):
        config = layer.get_config()
        if "kernel_initializer" in config:
            config["kernel_initializer"] = "lecun_normal"
        return layer.__class__.from_config(config)

    return keras.models.clone_model(reference, clone_function=rebuild)


def _normalized_copy(reference, method: str, scale: float, power_iterations: int):
    """`reference` wrapped in `method`, starting from its weights, with converged sigmas."""
    model = spectral_normalize(reference, method=method, scale=_scale_of(method, scale),
                               power_iterations=power_iterations)
    # One training call advances every vector `power_iterations` times.
    model(keras.ops.zeros((1, *reference.input_shape[1:])), training=True)
    return model


def init_variance_rows(arch: str, image_size: int, scale: float, seeds: Sequence[int],
                       power_iterations: int) -> list[dict[str, Any]]:
    """One row per (seed, setting, layer) of the reference discriminator at initialization."""
    rows = []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        _, reference = build_networks(arch, image_size, norm="none")
        for setting in INIT_SETTINGS:
            if setting == "none":
                model = reference
            elif setting == "lecun":
                model = _with_lecun_init(reference)
            else:
                model = _normalized_copy(reference, setting, scale, power_iterations)
            for row in weight_variance_table(model):
                values = row.to_dict()
                values["kernel_shape"] = "x".join(map(str, row.kernel_shape))
                rows.append({"setting": setting, "scale": _scale_of(setting, scale),
                             "seed": seed, **values})
    return rows


def plot_init_variance(rows: list[dict], path: pathlib.Path, title: str) -> None:
    """Grouped bars (log scale) per layer, with LeCun / Xavier / Kaiming marks per group."""
    pyplot = _pyplot()
    layers = list(dict.fromkeys(row["name"] for row in rows))
    settings = [s for s in INIT_SETTINGS if any(row["setting"] == s for row in rows)]
    reference = {row["name"]: row for row in rows}
    x = np.arange(len(layers))
    width = 0.84 / len(settings)
    figure, axes = pyplot.subplots(figsize=(1.5 * len(layers) + 2, 5.2))
    colors = pyplot.get_cmap("tab10")
    for index, setting in enumerate(settings):
        means = [np.mean([row["var"] for row in rows
                          if row["setting"] == setting and row["name"] == layer])
                 for layer in layers]
        scale = next(row["scale"] for row in rows if row["setting"] == setting)
        label = LABELS[setting] + (f" (c = {scale:g})" if scale != 1.0 else "")
        axes.bar(x + (index - (len(settings) - 1) / 2) * width, means, width, label=label,
                 color=colors(index))
    for key, style, label in (("lecun", "-", "LeCun 1/fan_in"),
                              ("xavier", "--", "Xavier 2/(fan_in+fan_out)"),
                              ("kaiming", ":", "Kaiming 2/fan_in")):
        for position, layer in zip(x, layers):
            axes.hlines(reference[layer][key], position - 0.45, position + 0.45, colors="black",
                        linestyles=style, linewidth=1.6, label=label if position == 0 else None)
    axes.set_yscale("log")
    axes.set_xticks(x, [f"{layer}\n{reference[layer]['kernel_shape']}" for layer in layers],
                    fontsize=8)
    axes.set_ylabel("per-entry variance of the kernel used (log)")
    axes.set_xlabel("discriminator layer (kernel shape)")
    axes.set_title(title + "\nbars: Var of the kernel the forward pass uses (converged sigmas); "
                   "black lines: the initializations' variances", fontsize=10)
    axes.grid(axis="y", which="major", alpha=0.3)
    axes.legend(ncol=5, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    _save_figure(figure, path)


def _summarize_init_variance(rows: list[dict]) -> str:
    lines = ["Convolutions:"]
    for setting in INIT_SETTINGS:
        chosen = [row for row in rows
                  if row["setting"] == setting and "Conv" in row["layer_class"]]
        lecun = [row["var_over_lecun"] for row in chosen]
        xavier = [row["var_over_xavier"] for row in chosen]
        lines.append(f"{LABELS[setting]:>26}: Var/LeCun {min(lecun):.3g} .. {max(lecun):.3g}, "
                     f"Var/Xavier {min(xavier):.3g} .. {max(xavier):.3g}")
    return "\n".join(lines)


def run_init_variance(args: argparse.Namespace) -> int:
    rows = init_variance_rows(args.arch, args.image_size, args.scale, args.seeds,
                              args.power_iterations)
    write_csv(args.out / "init-variance.csv", rows, INIT_COLUMNS)
    seeds = ", ".join(map(str, args.seeds))
    plot_init_variance(rows, args.out / "init-variance.png",
                       f"Weight variance at initialization: {args.arch.upper()} discriminator, "
                       f"{args.image_size}x{args.image_size}, seed(s) {seeds}")
    print(_summarize_init_variance(rows))
    return 0


# Training configurations shared by `gradients` and `sweep`.


def _config(args: argparse.Namespace, norm: str, scale: float, seed: int, **overrides):
    if norm == "strict":  # its own operator power iteration: the old semantics only
        overrides = {"differentiable_power_iteration": False, "vector_updates": "in_call",
                     **overrides}
    return TrainConfig(dataset=args.dataset, data_dir=args.data_dir, image_size=args.image_size,
                       arch=args.arch, norm=norm, scale=scale,
                       steps=args.steps, batch_size=args.batch_size, seed=seed, **overrides)


# gradients.


def converge_sigmas(model, calls: int) -> None:
    """Advances every power-iteration vector of `model` `calls` times (training-mode calls on
    one blank input; the reference discriminators have no other training-mode state)."""
    blank = keras.ops.zeros((1, *model.input_shape[1:]))
    for _ in range(calls):
        model(blank, training=True)
        advance_power_iteration(model)  # wrappers that store u only when asked


def diagnostics_history(config, num_images: int, warm_up: int) -> list[dict[str, float]]:
    """`DiagnosticsCallback` measurements at initialization and after every training step.

    With `warm_up` > 0 the sigmas are converged first, as the paper's analysis assumes; with 0,
    training starts from random power-iteration vectors as the reference code does, and the
    first steps also show the sigma estimates growing to their true values.
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    gan = build_gan(config)
    converge_sigmas(gan.discriminator, warm_up)
    real = data.load_images(**config.data_source())
    callback = DiagnosticsCallback(1, real, num_images=num_images, seed=config.seed)
    batches = data.make_train_dataset(**config.data_source(), batch_size=config.batch_size,
                                      seed=config.seed)
    gan.fit(batches, steps_per_epoch=config.steps, epochs=1, callbacks=[callback], verbose=0,
            shuffle=False)
    return callback.history


def gradient_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (norm, seed, step, layer): the norm of D's weight gradient."""
    rows = []
    for norm in args.norms:
        for seed in args.seeds:
            config = _config(args, norm, _scale_of(norm, args.scale), seed)
            print(f"gradients: {norm} (c = {config.scale:g}), seed {seed}", flush=True)
            for entry in diagnostics_history(config, args.num_images, args.warm_up):
                rows.extend({"norm": norm, "scale": config.scale, "seed": seed,
                             "step": entry["step"], "layer": key[len(_GRAD_PREFIX):],
                             "grad_norm": value}
                            for key, value in entry.items() if key.startswith(_GRAD_PREFIX))
    return rows


def _curves(rows: list[dict], group: str, value: str) -> dict:
    """{group value: {step: [values over seeds]}} of the rows, in their order."""
    curves: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        curves[row[group]][row["step"]].append(float(row[value]))
    return curves


def _line_with_band(axes, by_step: dict, center, color, **kwargs) -> None:
    """`center` of each step's values (over seeds) as a line, their min-max as a band."""
    steps = sorted(by_step)
    axes.plot(steps, [center(by_step[step]) for step in steps], color=color, **kwargs)
    axes.fill_between(steps, [min(by_step[step]) for step in steps],
                      [max(by_step[step]) for step in steps], color=color, alpha=0.15)


def plot_gradients(rows: list[dict], path: pathlib.Path, title: str) -> None:
    """A panel per normalization: per-layer gradient norms over steps (log scale)."""
    pyplot = _pyplot()
    norms = list(dict.fromkeys(row["norm"] for row in rows))
    layers = list(dict.fromkeys(row["layer"] for row in rows))
    columns = min(len(norms), 3)
    figure, panels = pyplot.subplots(math.ceil(len(norms) / columns), columns, squeeze=False,
                                     sharex=True, sharey=True,
                                     figsize=(4.6 * columns, 3.6 * math.ceil(len(norms) / columns)))
    colors = pyplot.get_cmap("viridis")
    for axes, norm in zip(panels.flat, norms):
        chosen = [row for row in rows if row["norm"] == norm]
        for index, (layer, by_step) in enumerate(_curves(chosen, "layer", "grad_norm").items()):
            _line_with_band(axes, by_step, _geometric_mean,
                            colors(index / max(len(layers) - 1, 1)), label=layer)
        scale = chosen[0]["scale"]
        axes.set_title(LABELS.get(norm, norm) + (f" (c = {scale:g})" if scale != 1.0 else ""))
        axes.set_yscale("log")
        axes.grid(which="major", alpha=0.3)
    for axes in panels.flat[len(norms):]:
        axes.set_visible(False)
    for axes in panels[-1]:
        axes.set_xlabel("discriminator step (0 = initialization)")
    for axes in panels[:, 0]:
        axes.set_ylabel("||dL_D / dW|| (log)")
    handles, labels = panels.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, title="layer (input to output)", loc="center left",
                  bbox_to_anchor=(1.0, 0.5), fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    _save_figure(figure, path)


def _summarize_gradients(rows: list[dict]) -> str:
    lines = []
    for norm, chosen in _grouped(rows, "norm").items():
        by_step = _grouped(chosen, "step")
        parts = []
        for step in (min(by_step), max(by_step)):
            layers = _grouped(by_step[step], "layer").values()
            means = [_geometric_mean(row["grad_norm"] for row in seeds) for seeds in layers]
            parts.append(f"step {step}: {min(means):.3g} .. {max(means):.3g}")
        lines.append(f"{LABELS.get(norm, norm):>10}: per-layer ||grad W||  " + ";  ".join(parts))
    return "\n".join(lines)


def _grouped(rows: list[dict], key: str) -> dict[Any, list[dict]]:
    groups: dict = defaultdict(list)
    for row in rows:
        groups[row[key]].append(row)
    return groups


def run_gradients(args: argparse.Namespace) -> int:
    rows = gradient_rows(args)
    write_csv(args.out / "gradients.csv", rows, GRADIENT_COLUMNS)
    seeds = ", ".join(map(str, args.seeds))
    plot_gradients(rows, args.out / "gradients.png",
                   f"Discriminator weight-gradient norms, first {args.steps} steps "
                   f"({args.arch.upper()}, {args.image_size}x{args.image_size}, "
                   f"batch {args.batch_size}, seeds {seeds}; line: geometric mean, band: "
                   "min-max)")
    print(_summarize_gradients(rows))
    return 0


# sweep.


def _sweep_extractor(args: argparse.Namespace) -> tuple[str, str]:
    """(extractor for TrainConfig, label for outputs)."""
    choice = args.extractor
    if choice == "auto":
        choice = INCEPTION_2015_NAME if os.environ.get(INCEPTION_GRAPH_ENV) else "pixels"
    if choice != "pixels":
        return choice, choice
    size = args.pixel_size
    return (str(_pixel_extractor(args.out, size)),
            f"pixels {size}x{size}, not comparable with published KID")


def _pixel_extractor(folder: pathlib.Path, size: int) -> pathlib.Path:
    """A `.keras` model whose features are the pixels of images resized to size x size.

    Written once: its digest names the cached real statistics, so it must not change.
    """
    path = folder / f"pixels{size}.keras"
    if not path.exists():
        images = keras.Input((size, size, 3))
        model = keras.Model(images, keras.layers.Flatten()(images), name=f"pixels{size}")
        partial = folder / f".partial-pixels{size}.keras"
        folder.mkdir(parents=True, exist_ok=True)
        model.save(partial)
        os.replace(partial, path)
    return path


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One (normalization, scale, seed) of the sweep and its run folder."""

    norm: str
    scale: float
    seed: int
    folder: pathlib.Path

    def status(self, steps: int) -> str:
        """"finished" / "diverged" once trained to `steps`, else "incomplete"."""
        return _run_status(self.folder, steps)


def sweep_runs(args: argparse.Namespace) -> list[SweepRun]:
    """The grid: every normalization x scale x seed ("none" only at c = 1)."""
    runs = []
    for norm in args.norms:
        for scale in sorted({_scale_of_sweep(norm, scale) for scale in args.scales}):
            for seed in args.seeds:
                runs.append(SweepRun(norm, scale, seed,
                                     args.out / "runs" / f"{norm}-c{scale:g}-s{seed}"))
    return runs


def _scale_of_sweep(norm: str, scale: float) -> float:
    return 1.0 if norm == "none" else scale


def _train_run(args: argparse.Namespace, run: SweepRun, extractor: str) -> int:
    every = args.eval_every
    config = _config(args, run.norm, run.scale, run.seed, log_every=every, sample_every=every,
                     checkpoint_every=every, fid_every=every, fid_samples=args.kid_samples,
                     fid_real_samples=args.kid_real, is_samples=args.kid_samples,
                     extractor=extractor)
    return _train_to_end(config, run.folder)


def _run_rows(run: SweepRun, steps: int, label: str) -> list[dict]:
    """The KID evaluations in a run's metrics.csv (the last row of each step wins)."""
    path = run.folder / "metrics.csv"
    if not path.exists():
        return []
    status = run.status(steps)
    by_step = {}
    with open(path) as file:
        for row in csv.DictReader(file):
            kid = float(row.get("kid") or "nan")
            if math.isfinite(kid):
                step = int(float(row["step"]))
                by_step[step] = {"norm": run.norm, "scale": run.scale, "seed": run.seed,
                                 "step": step, "kid": kid, "kid_std": float(row["kid_std"]),
                                 "fid": float(row["fid"]), "extractor": label,
                                 "status": status}
    return [by_step[step] for step in sorted(by_step)]


def plot_sweep(rows: list[dict], path: pathlib.Path, title: str) -> None:
    """KID over steps (a panel per normalization, a line per scale) and final KID vs scale."""
    pyplot = _pyplot()
    groups = _grouped(rows, "norm")
    figure, panels = pyplot.subplots(1, len(groups) + 1, squeeze=False,
                                     figsize=(4.4 * (len(groups) + 1), 3.8))
    scales = sorted({row["scale"] for row in rows})
    colors = pyplot.get_cmap("plasma")
    final = panels[0, -1]
    for axes, (norm, chosen) in zip(panels[0], groups.items()):
        if axes is not panels[0, 0]:
            axes.sharey(panels[0, 0])  # one KID axis for every normalization
        finals = []
        for scale, by_scale in sorted(_grouped(chosen, "scale").items()):
            color = colors(0.85 * scales.index(scale) / max(len(scales) - 1, 1))
            by_step = _curves(by_scale, "scale", "kid")[scale]
            _line_with_band(axes, by_step, np.mean, color, marker="o", markersize=3,
                            label=f"c = {scale:g}")
            last = by_step[max(by_step)]
            finals.append((scale, np.mean(last), np.std(last)))
        name = LABELS.get(norm, norm)
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
    _save_figure(figure, path)


def _write_sweep(args: argparse.Namespace, runs: list[SweepRun], label: str) -> list[dict]:
    rows = [row for run in runs for row in _run_rows(run, args.steps, label)]
    write_csv(args.out / "sweep.csv", rows, SWEEP_COLUMNS)
    if rows:
        seeds = ", ".join(map(str, args.seeds))
        plot_sweep(rows, args.out / "sweep.png",
                   f"KID ({label}) over training: {args.arch.upper()} "
                   f"{args.image_size}x{args.image_size}, batch {args.batch_size}, "
                   f"seeds {seeds}; line: mean, band: min-max")
    return rows


def run_sweep(args: argparse.Namespace) -> int:
    if args.steps % args.eval_every:
        print("error: --steps must be a multiple of --eval-every.", file=sys.stderr)
        return 2
    extractor, label = _sweep_extractor(args)
    runs = sweep_runs(args)
    for index, run in enumerate(runs, 1):
        if run.status(args.steps) != "incomplete":
            print(f"sweep [{index}/{len(runs)}]: {run.folder.name} already done, skipped.")
            continue
        print(f"sweep [{index}/{len(runs)}]: training {run.folder}", flush=True)
        code = _train_run(args, run, extractor)
        if code not in (0, EXIT_NON_FINITE):  # interrupted: rerun the command to resume
            return code
        _write_sweep(args, runs, label)  # partial results are readable while the sweep runs
    _print_sweep_summary(_write_sweep(args, runs, label))
    return 0


def _run_status(folder: pathlib.Path, steps: int) -> str:
    """"finished" / "diverged" once a run folder was trained to `steps`, else "incomplete"."""
    path = folder / SWEEP_STATUS_FILE
    if not path.exists():
        return "incomplete"
    status = json.loads(path.read_text())
    return status["status"] if status["steps"] >= steps else "incomplete"


def _train_to_end(config: TrainConfig, folder: pathlib.Path) -> int:
    """Trains (or resumes) one run of a study, and marks it done unless interrupted."""
    prepare_run_folder(folder, config, force=False)
    keras.backend.clear_session()
    code = train(config, folder, export_at_end=False)
    if code in (0, EXIT_NON_FINITE):
        status = {"status": "finished" if code == 0 else "diverged", "steps": config.steps}
        with atomic_writer(folder / SWEEP_STATUS_FILE) as file:
            file.write(json.dumps(status).encode())
    return code


def _write_collapse(args: argparse.Namespace, cells: list, seeds: list[int]) -> list[dict]:
    logs = {(cell.name, seed): collapse.read_log(cell.folder(args.out, seed) / "metrics.csv")
            for cell in cells for seed in seeds}
    rows = [collapse.summarize_run(cell, seed, logs[cell.name, seed])
            for cell in cells for seed in seeds]
    write_csv(args.out / "collapse.csv", rows, collapse.RUN_COLUMNS)
    log_rows = [{"cell": cell, "seed": seed, **row} for (cell, seed), rows_ in logs.items()
                for row in rows_]
    write_csv(args.out / "collapse_log.csv", log_rows,
              ("cell", "seed", "step", "diversity", "d_real", "d_fake", "grad_norm_fake",
               "d_loss", "g_loss"))
    if log_rows:
        title = (f"CIFAR-10 CNN, batch {args.batch_size}: sample diversity and D(real); "
                 f"collapse below {collapse.DIVERSITY_THRESHOLD} (dashed) for "
                 f"{collapse.DIVERSITY_PATIENCE} rows")
        _save_figure(collapse.plot_study(logs, title, _pyplot()), args.out / "collapse.png")
    return rows


def run_collapse(args: argparse.Namespace) -> int:
    cells = [collapse.Cell.parse(spec) for spec in args.cells]
    # Seed by seed: an unfinished study has compared every cell on its first seeds.
    runs = [(cell, seed) for seed in args.seeds for cell in cells]
    for index, (cell, seed) in enumerate(runs, 1):
        folder = cell.folder(args.out, seed)
        label = f"collapse [{index}/{len(runs)}]: {cell.name} seed {seed}"
        if _run_status(folder, args.steps) != "incomplete":
            print(f"{label} already done, skipped.")
            continue
        print(f"{label}: training {folder}", flush=True)
        config = cell.config(seed, args.steps, args.log_every, args.dataset, args.data_dir)
        code = _train_to_end(dataclasses.replace(config, batch_size=args.batch_size), folder)
        if code not in (0, EXIT_NON_FINITE):  # interrupted: rerun the command to resume
            return code
        _write_collapse(args, cells, args.seeds)  # readable while the study runs
    _write_collapse(args, cells, args.seeds)
    rows = [collapse.summarize_run(cell, seed, collapse.read_log(
        cell.folder(args.out, seed) / "metrics.csv")) for cell, seed in runs]
    for line in collapse.cell_verdicts(rows, args.steps):
        print(line)
    return 0


def _print_sweep_summary(rows: list[dict]) -> None:
    last: dict = defaultdict(dict)
    for row in rows:
        last[(row["norm"], row["scale"])][row["seed"]] = row
    for (norm, scale), by_seed in sorted(last.items()):
        kids = [row["kid"] for row in by_seed.values()]
        step = max(row["step"] for row in by_seed.values())
        print(f"{LABELS.get(norm, norm):>10} c = {scale:<4g}: KID at step {step} "
              f"{np.mean(kids):.4g} ± {np.std(kids):.2g} over {len(kids)} seed(s)")


# Command line.


def positive_int(text: str) -> int:
    """argparse type of a count or interval: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _default_data() -> tuple[str, str | None]:
    if SHARED_CIFAR10.exists():
        return "folder", str(SHARED_CIFAR10)
    return "cifar10", None


def _add_common_flags(parser: argparse.ArgumentParser, seeds: list[int]) -> None:
    parser.add_argument("--out", type=pathlib.Path,
                        # The subcommand is the last word of its parser's prog.
                        default=pathlib.Path("runs") / "analysis" / parser.prog.split()[-1],
                        help="output folder")
    parser.add_argument("--arch", default="cnn", help="cnn or resnet")
    parser.add_argument("--image-size", type=positive_int, default=32, help="image side in pixels")
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds, help="seeds")


def _add_scale_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=float, default=1.2,
                        help="the constant c of SSN/BSSN (the other normalizations use 1)")


def _add_training_flags(parser: argparse.ArgumentParser, norms: list[str], steps: int) -> None:
    dataset, data_dir = _default_data()
    parser.add_argument("--dataset", default=dataset, help="data set: cifar10, folder, npz, ...")
    parser.add_argument("--data-dir", default=data_dir, help="image folder / .tar.gz / .npz")
    parser.add_argument("--norms", nargs="+", default=norms, help="normalizations")
    parser.add_argument("--steps", type=positive_int, default=steps, help="generator steps per run")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="discriminator batch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.analyze", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    experiments = parser.add_subparsers(dest="experiment", required=True)
    defaults = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}

    init = experiments.add_parser("init-variance", help="weight variance at initialization",
                                   **defaults)
    _add_common_flags(init, seeds=[0])
    _add_scale_flag(init)
    init.add_argument("--power-iterations", type=positive_int, default=100,
                      help="power-iteration steps to converge the sigmas")

    gradients = experiments.add_parser("gradients", help="D's weight-gradient norms over steps",
                                        **defaults)
    _add_common_flags(gradients, seeds=[0, 1, 2])
    _add_scale_flag(gradients)
    _add_training_flags(gradients, ["none", "sn", "strict", "bsn", "bssn"], steps=100)
    gradients.add_argument("--num-images", type=positive_int, default=64,
                           help="real (and generated) images per measurement")
    gradients.add_argument("--warm-up", type=int, default=100,
                           help="power-iteration steps before training, so that sigmas start "
                                "converged (0: random vectors, as the reference code)")

    sweep = experiments.add_parser("sweep", help="short training runs, KID over steps",
                                    **defaults)
    _add_common_flags(sweep, seeds=[0, 1, 2])
    _add_training_flags(sweep, ["sn", "bsn"], steps=2000)
    sweep.add_argument("--scales", type=float, nargs="+", default=[0.7, 1.0, 1.2, 1.6, 2.0],
                       help="values of c (SN at c != 1 is SSN, BSN is BSSN)")
    sweep.add_argument("--eval-every", type=positive_int, default=500, help="steps between KIDs")
    sweep.add_argument("--kid-samples", type=positive_int, default=2000, help="generated images")
    sweep.add_argument("--kid-real", type=positive_int, default=2000, help="real images")
    sweep.add_argument("--extractor", default="auto",
                       help="auto (the Inception graph if KERAS_BSSN_INCEPTION_GRAPH is set, "
                            "else pixels), pixels, or what training.train's --extractor takes")
    sweep.add_argument("--pixel-size", type=positive_int, default=16,
                       help="side of the images whose pixels are the 'pixels' features")

    study = experiments.add_parser("collapse", help="seed study of collapse per setting",
                                    **defaults)
    study.add_argument("--out", type=pathlib.Path,
                       default=pathlib.Path("runs") / "analysis" / "collapse", help="output folder")
    study.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds")
    dataset, data_dir = _default_data()
    study.add_argument("--dataset", default=dataset, help="data set: cifar10, folder, npz, ...")
    study.add_argument("--data-dir", default=data_dir, help="image folder / .tar.gz / .npz")
    study.add_argument("--cells", nargs="+", default=list(collapse.DEFAULT_CELLS),
                       help="NORM:SCALE:SEMANTICS[+SETTING=VALUE...] per cell")
    study.add_argument("--steps", type=positive_int, default=1500, help="generator steps per run")
    study.add_argument("--log-every", type=positive_int, default=50, help="steps between log rows")
    study.add_argument("--batch-size", type=positive_int, default=64, help="discriminator batch")
    return parser


_RUNNERS = {"init-variance": run_init_variance, "gradients": run_gradients, "sweep": run_sweep,
            "collapse": run_collapse}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    code = _RUNNERS[args.experiment](args)
    if code == 0:
        print(f"wrote {args.out}/{args.experiment}.csv and .png")
    return code


if __name__ == "__main__":
    sys.exit(main())
