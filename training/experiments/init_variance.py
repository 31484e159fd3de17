"""Weight variance at initialization: per layer of a reference discriminator, the per-entry
variance of the kernel its forward pass uses with no normalization (the reference init:
N(0, 0.02^2) for the CNN), with LeCun init, and after SN, strict SN, BSN and BSSN (with
converged sigmas), next to the LeCun, Xavier and Kaiming variances of the layer.

Writes `init-variance.csv` (a row per seed, setting and layer) and `init-variance.png`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_bssn import spectral_normalize
from keras_bssn.diagnostics import weight_variance_table
from training.experiments import reporting
from training.experiments.normalizations import label, scale_of
from training.networks import build_networks

SETTINGS = ("none", "lecun", "sn", "strict", "bsn", "bssn")
COLUMNS = ("setting", "scale", "seed", "name", "layer_class", "kernel_shape", "fan_in",
           "fan_out", "var", "lecun", "xavier", "kaiming", "var_over_lecun", "var_over_xavier",
           "var_over_kaiming")


def run(out: pathlib.Path, arch: str, image_size: int, scale: float, seeds: Sequence[int],
        power_iterations: int) -> list[dict[str, Any]]:
    """Measures every setting on the discriminator of `arch` for each seed, writes
    `init-variance.csv` and `.png` to `out`, and returns the rows."""
    rows = variance_rows(arch, image_size, scale, seeds, power_iterations)
    reporting.write_csv(out / "init-variance.csv", rows, COLUMNS)
    plot(rows, out / "init-variance.png",
         f"Weight variance at initialization: {arch.upper()} discriminator, "
         f"{image_size}x{image_size}, seed(s) {', '.join(map(str, seeds))}")
    return rows


def variance_rows(arch: str, image_size: int, scale: float, seeds: Sequence[int],
                  power_iterations: int) -> list[dict[str, Any]]:
    """One row per (seed, setting, layer) of the reference discriminator at initialization."""
    rows = []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        _, reference = build_networks(arch, image_size, norm="none")
        for setting in SETTINGS:
            if setting == "none":
                model = reference
            elif setting == "lecun":
                model = _with_lecun_init(reference)
            else:
                model = _normalized_copy(reference, setting, scale, power_iterations)
            for row in weight_variance_table(model):
                values = row.to_dict()
                values["kernel_shape"] = "x".join(map(str, row.kernel_shape))
                rows.append({"setting": setting, "scale": scale_of(setting, scale),
                             "seed": seed, **values})
    return rows


def _with_lecun_init(reference: keras.Model) -> keras.Model:
    def rebuild(layer):
        config = layer.get_config()
        if "kernel_initializer" in config:
            config["kernel_initializer"] = "lecun_normal"
        return layer.__class__.from_config(config)

    return keras.models.clone_model(reference, clone_function=rebuild)


def _normalized_copy(reference: keras.Model, method: str, scale: float,
                     power_iterations: int) -> keras.Model:
    """`reference` wrapped in `method`, starting from its weights, with converged sigmas."""
    model = spectral_normalize(reference, method=method, scale=scale_of(method, scale),
                               power_iterations=power_iterations)
    # One training call advances every vector `power_iterations` times.
    model(keras.ops.zeros((1, *reference.input_shape[1:])), training=True)
    return model


def plot(rows: list[dict], path: pathlib.Path, title: str) -> None:
    """Grouped bars (log scale) per layer, with LeCun / Xavier / Kaiming marks per group."""
    pyplot = reporting.pyplot()
    layers = list(dict.fromkeys(row["name"] for row in rows))
    settings = [s for s in SETTINGS if any(row["setting"] == s for row in rows)]
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
        axes.bar(x + (index - (len(settings) - 1) / 2) * width, means, width,
                 label=label(setting, scale), color=colors(index))
    for key, style, name in (("lecun", "-", "LeCun 1/fan_in"),
                             ("xavier", "--", "Xavier 2/(fan_in+fan_out)"),
                             ("kaiming", ":", "Kaiming 2/fan_in")):
        for position, layer in zip(x, layers):
            axes.hlines(reference[layer][key], position - 0.45, position + 0.45, colors="black",
                        linestyles=style, linewidth=1.6, label=name if position == 0 else None)
    axes.set_yscale("log")
    axes.set_xticks(x, [f"{layer}\n{reference[layer]['kernel_shape']}" for layer in layers],
                    fontsize=8)
    axes.set_ylabel("per-entry variance of the kernel used (log)")
    axes.set_xlabel("discriminator layer (kernel shape)")
    axes.set_title(title + "\nbars: Var of the kernel the forward pass uses (converged sigmas); "
                   "black lines: the initializations' variances", fontsize=10)
    axes.grid(axis="y", which="major", alpha=0.3)
    axes.legend(ncol=5, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    reporting.save_figure(figure, path)


def summary(rows: list[dict]) -> list[str]:
    """Per setting, the range of the convolutions' variance over LeCun's and Xavier's."""
    lines = ["Convolutions:"]
    for setting in SETTINGS:
        chosen = [row for row in rows
                  if row["setting"] == setting and "Conv" in row["layer_class"]]
        lecun = [row["var_over_lecun"] for row in chosen]
        xavier = [row["var_over_xavier"] for row in chosen]
        lines.append(f"{label(setting):>26}: Var/LeCun {min(lecun):.3g} .. {max(lecun):.3g}, "
                     f"Var/Xavier {min(xavier):.3g} .. {max(xavier):.3g}")
    return lines

