"""Gradient norms at the start of training: per layer, the norm of the discriminator's weight
gradient at initialization and after each of the first training steps on real data, per
normalization and seed; which layers' gradients explode and which vanish.

Writes `gradients.csv` (a row per normalization, seed, step and layer) and `gradients.png`.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_bssn import advance_power_iteration
from keras_bssn.convert import normalized_layers
from training import data
from training.callbacks import DiagnosticsCallback
from training.experiments import reporting
from training.experiments.normalizations import label, scale_of
from training.experiments.training_runs import TrainingSetup
from training.presets import TrainConfig
from training.building import build_gan

COLUMNS = ("norm", "scale", "seed", "step", "layer", "grad_norm")
_GRADIENT_PREFIX = "diag/weight_grad/"  # DiagnosticsCallback's key of a layer's gradient norm


def run(out: pathlib.Path, setup: TrainingSetup, norms: Sequence[str], scale: float,
        seeds: Sequence[int], num_images: int, warm_up: int) -> list[dict[str, Any]]:
    """Measures every normalization (SSN and BSSN at `scale`) on every seed, writes
    `gradients.csv` and `.png` to `out`, and returns the rows.

    `num_images` real (and generated) images make each measurement; `warm_up` is as in
    `diagnostics_history`.
    """
    rows = gradient_rows(setup, norms, scale, seeds, num_images, warm_up)
    reporting.write_csv(out / "gradients.csv", rows, COLUMNS)
    plot(rows, out / "gradients.png",
         f"Discriminator weight-gradient norms, first {setup.steps} steps "
         f"({setup.arch.upper()}, {setup.image_size}x{setup.image_size}, "
         f"batch {setup.batch_size}, seeds {', '.join(map(str, seeds))}; line: geometric mean, "
         "band: min-max)")
    return rows


def gradient_rows(setup: TrainingSetup, norms: Sequence[str], scale: float,
                  seeds: Sequence[int], num_images: int,
                  warm_up: int) -> list[dict[str, Any]]:
    """One row per (norm, seed, step, layer): the norm of D's weight gradient."""
    rows = []
    for config in run_configs(setup, norms, scale, seeds):
        print(f"gradients: {config.norm} (c = {config.scale:g}), seed {config.seed}", flush=True)
        for entry in diagnostics_history(config, num_images, warm_up):
            rows.extend({"norm": config.norm, "scale": config.scale, "seed": config.seed,
                         "step": entry["step"], "layer": key[len(_GRADIENT_PREFIX):],
                         "grad_norm": value}
                        for key, value in entry.items() if key.startswith(_GRADIENT_PREFIX))
    return rows


def run_configs(setup: TrainingSetup, norms: Sequence[str], scale: float,
                seeds: Sequence[int]) -> list[TrainConfig]:
    """The configuration of each (normalization, seed) measured, each once."""
    return [setup.config(norm, scale_of(norm, scale), seed)
            for norm in dict.fromkeys(norms) for seed in dict.fromkeys(seeds)]


def diagnostics_history(config: TrainConfig, num_images: int,
                        warm_up: int) -> list[dict[str, float]]:
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
                                      shuffle_buffer=config.shuffle_buffer,
                                      seed=config.seed)
    gan.fit(batches, steps_per_epoch=config.steps, epochs=1, callbacks=[callback], verbose=0,
            shuffle=False)
    return callback.history


def converge_sigmas(model: keras.Model, calls: int) -> None:
    """Advances every power-iteration vector of `model` `calls` times: wrappers that store u
    only when asked are asked; those that advance in their training calls are called (on one
    blank input; the reference discriminators have no other training-mode state)."""
    advance_in_calls = any(layer.vector_updates == "in_call"
                           for layer in normalized_layers(model))
    blank = keras.ops.zeros((1, *model.input_shape[1:]))

    @tf.function  # traced once: run eagerly, every call paid Python's overhead per op
    def advance_once():
        if advance_in_calls:  # a forward pass is the slow part: only when it advances u
            model(blank, training=True)
        advance_power_iteration(model)

    for _ in range(calls):
        advance_once()


def plot(rows: list[dict], path: pathlib.Path, title: str) -> None:
    """A panel per normalization: per-layer gradient norms over steps (log scale)."""
    pyplot = reporting.pyplot()
    norms = list(dict.fromkeys(row["norm"] for row in rows))
    layers = list(dict.fromkeys(row["layer"] for row in rows))
    columns = min(len(norms), 3)
    figure, panels = pyplot.subplots(math.ceil(len(norms) / columns), columns, squeeze=False,
                                     sharex=True, sharey=True,
                                     figsize=(4.6 * columns, 3.6 * math.ceil(len(norms) / columns)))
    colors = pyplot.get_cmap("viridis")
    for axes, norm in zip(panels.flat, norms):
        chosen = [row for row in rows if row["norm"] == norm]
        curves = reporting.curves(chosen, "layer", "grad_norm")
        for index, (layer, by_step) in enumerate(curves.items()):
            reporting.line_with_band(axes, by_step, _geometric_mean,
                                     colors(index / max(len(layers) - 1, 1)), label=layer)
        axes.set_title(label(norm, chosen[0]["scale"]))
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
    reporting.save_figure(figure, path)


def summary(rows: list[dict]) -> list[str]:
    """Per normalization, the range of the layers' gradient norms (geometric means over seeds)
    at the first and the last step."""
    lines = []
    for norm, chosen in reporting.grouped(rows, "norm").items():
        by_step = reporting.grouped(chosen, "step")
        parts = []
        for step in (min(by_step), max(by_step)):
            layers = reporting.grouped(by_step[step], "layer").values()
            means = [_geometric_mean(row["grad_norm"] for row in seeds) for seeds in layers]
            parts.append(f"step {step}: {min(means):.3g} .. {max(means):.3g}")
        lines.append(f"{label(norm):>10}: per-layer ||grad W||  " + ";  ".join(parts))
    return lines


def _geometric_mean(values: Iterable[float]) -> float:
    return float(np.exp(np.mean(np.log(np.maximum(list(values), 1e-30)))))
