"""`python -m training.analyze`: each experiment end to end at a tiny size; sweep resumption."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training import analyze, train
from training.experiments import artifacts, gradients, init_variance, sweep, training_runs

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LAYERS = [f"conv{index}" for index in range(1, 8)] + ["logits"]


@pytest.fixture(scope="module")
def images_npz(tmp_path_factory) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (96, 8, 8, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("data") / "images.npz"
    np.savez(path, x=images)
    return path


def _read(path: Path) -> tuple[list[str], list[dict]]:
    with open(path) as file:
        reader = csv.DictReader(file)
        return reader.fieldnames, list(reader)


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_init_variance_compares_normalizations_with_the_initializations(tmp_path):
    assert analyze.main(["init-variance", "--image-size", "8", "--power-iterations", "50",
                         "--scale", "1.2", "--out", str(tmp_path)]) == 0
    columns, rows = _read(tmp_path / "init-variance.csv")
    assert tuple(columns) == init_variance.COLUMNS
    assert len(rows) == len(init_variance.SETTINGS) * len(LAYERS)
    _assert_png(tmp_path / "init-variance.png")

    def ratio(setting, layer, column="var_over_lecun"):
        return next(float(row[column]) for row in rows
                    if row["setting"] == setting and row["name"] == layer)

    for layer in LAYERS[:-1]:
        assert 0.9 < ratio("lecun", layer) < 1.1
        assert 0.1 < ratio("sn", layer) < 1.0
        # BSSN is c * BSN: c^2 times the variance (up to the sigmas' power-iteration error).
        assert ratio("bssn", layer) / ratio("bsn", layer) == pytest.approx(1.44, rel=0.05)
    # On the 8x8 grid of the first layer the operator norm exceeds the fan-in view's sigma.
    assert ratio("strict", "conv1") < 0.5 * ratio("sn", "conv1")


@pytest.mark.slow
def test_gradients_records_every_layer_from_initialization_on(images_npz, tmp_path):
    assert analyze.main(["gradients", "--dataset", "npz", "--data-dir", str(images_npz),
                         "--image-size", "8", "--batch-size", "4", "--num-images", "4",
                         "--norms", "none", "strict", "--steps", "1", "--seeds", "0",
                         "--warm-up", "2", "--out", str(tmp_path)]) == 0
    columns, rows = _read(tmp_path / "gradients.csv")
    assert tuple(columns) == gradients.COLUMNS
    keys = [(row["norm"], row["step"], row["layer"]) for row in rows]
    assert keys == [(norm, step, layer) for norm in ("none", "strict") for step in ("0", "1")
                    for layer in LAYERS]
    assert all(np.isfinite(float(row["grad_norm"])) and float(row["grad_norm"]) > 0
               for row in rows)
    _assert_png(tmp_path / "gradients.png")


@pytest.mark.slow
# Six images are too few for FID's covariances and KID's subsets; that is the point here.
@pytest.mark.filterwarnings("ignore::training.metrics.SingularCovarianceWarning")
@pytest.mark.filterwarnings("ignore:KID subset_size")
def test_sweep_gathers_runs_in_one_csv_and_skips_finished_ones(images_npz, tmp_path,
                                                                monkeypatch):
    def run_sweep(*scales):
        return analyze.main(["sweep", "--dataset", "npz", "--data-dir", str(images_npz),
                             "--image-size", "8", "--batch-size", "4", "--norms", "sn",
                             "--scales", *scales, "--seeds", "0", "--steps", "2",
                             "--eval-every", "2", "--kid-samples", "6", "--kid-real", "6",
                             "--pixel-size", "4", "--extractor", "pixels",
                             "--out", str(tmp_path)])

    assert run_sweep("1.0") == 0
    trained = []
    real_train = training_runs.train
    monkeypatch.setattr(training_runs, "train",
                        lambda config, run_dir, **kwargs: trained.append(run_dir.name)
                        or real_train(config, run_dir, **kwargs))
    assert run_sweep("1.0", "1.5") == 0
    assert trained == ["sn-c1.5-s0"]  # the finished run is not trained again

    columns, rows = _read(tmp_path / "sweep.csv")
    assert tuple(columns) == sweep.COLUMNS
    assert [(row["norm"], float(row["scale"]), row["step"], row["status"]) for row in rows] == [
        ("sn", 1.0, "2", "finished"), ("sn", 1.5, "2", "finished")]
    assert all(np.isfinite(float(row["kid"])) and "pixels" in row["extractor"] for row in rows)
    _assert_png(tmp_path / "sweep.png")


@pytest.mark.parametrize("argv", [
    ["sweep", "--eval-every", "0"],
    ["gradients", "--steps", "0"],
    ["collapse", "--log-every", "-1"],
])
def test_zero_counts_and_intervals_are_refused_without_a_traceback(argv, tmp_path):
    result = subprocess.run([sys.executable, "-m", "training.analyze", *argv, "--out",
                             str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert "expected a whole number >= 1" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_shared_pattern_share_tells_a_repeated_pattern_from_independent_images():
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((64, 8, 8, 3))
    pattern = rng.standard_normal((1, 8, 8, 3))
    assert artifacts.shared_pattern_share(np.repeat(pattern, 64, axis=0)) == pytest.approx(1.0)
    assert artifacts.shared_pattern_share(noise) == pytest.approx(1 / 64, rel=0.2)
    # The same pattern under independent detail of equal energy: about half is shared.
    assert artifacts.shared_pattern_share(noise + pattern) == pytest.approx(0.5, abs=0.1)
    # Smooth images have no fine detail to share: constant images give 0, not NaN.
    assert artifacts.shared_pattern_share(np.ones((4, 8, 8, 3))) == 0.0


def test_lattice_power_share_finds_a_pattern_on_the_upsampling_grid():
    rng = np.random.default_rng(4)
    noise = rng.standard_normal((64, 32, 32, 3))
    tile = rng.standard_normal((1, 8, 8, 3))
    lattice = np.tile(tile, (1, 4, 4, 1))  # repeats every 8 pixels
    # Its fine detail repeats too (but at the edges, which the blur repeats): on the lattice.
    assert artifacts.lattice_power_share(noise + lattice, 8) > 0.8
    # A pattern without the period spreads its power: about 1/8^2 on the lattice.
    assert artifacts.lattice_power_share(noise + rng.standard_normal((1, 32, 32, 3)), 8) < 0.15
    assert artifacts.lattice_power_share(np.ones((4, 32, 32, 3)), 8) == 0.0


@pytest.mark.slow
def test_artifacts_measures_a_runs_checkpoints_in_both_batchnorm_modes(images_npz, tmp_path,
                                                                       capsys):
    run = tmp_path / "run"
    assert train.main(["--dataset", "npz", "--data-dir", str(images_npz), "--image-size", "8",
                       "--batch-size", "8", "--steps", "2", "--log-every", "2",
                       "--checkpoint-every", "2", "--fid-every", "0", "--no-export",
                       "--out", str(run)]) == 0
    out = tmp_path / "artifacts"
    # 64 latents and the data's first 64 images: what the training's diversity statistic draws.
    assert analyze.main(["artifacts", str(run), "--steps", "0", "2", "--lattice-period", "4",
                         "--out", str(out)]) == 0
    columns, rows = _read(out / "artifacts.csv")
    assert tuple(columns) == artifacts.COLUMNS
    assert [(row["step"], row["mode"]) for row in rows] == [
        ("", "real"), ("0", "inference"), ("0", "training"), ("2", "inference"),
        ("2", "training")]
    assert all(0 <= float(row[column]) <= 1 for row in rows
               for column in ("shared_share", "lattice_share"))
    # The real row is the other 32 images, measured against the first 64: noise images are
    # as varied as each other, but not the reference batch itself.
    assert float(rows[0]["num_images"]) == 32
    assert float(rows[0]["diversity"]) == pytest.approx(1.0, abs=0.05)
    assert float(rows[0]["diversity"]) != 1.0
    # The inference-mode diversity is the statistic the training logged at that step.
    logged = {int(float(row["step"])): float(row["diversity"])
              for row in _read(run / "metrics.csv")[1]}
    assert float(rows[3]["diversity"]) == pytest.approx(logged[2], rel=1e-5)
    assert float(rows[4]["diversity"]) != pytest.approx(logged[2], rel=1e-3)
    for step in (0, 2):
        for mode in artifacts.MODES:
            _assert_png(out / f"step_{step:07d}_{mode}.png")
    _assert_png(out / "artifacts.png")
    assert "step 2: shared share" in capsys.readouterr().out

    assert analyze.main(["artifacts", str(run), "--steps", "7", "--out", str(out)]) == 2
    assert "has no checkpoint of step 7; it keeps steps [2]" in capsys.readouterr().err
    assert analyze.main(["artifacts", str(run), "--num-images", "95", "--out", str(out)]) == 2
    assert "has 96 training images" in capsys.readouterr().err


@pytest.mark.parametrize("vector_updates", ["explicit", "in_call"])
def test_converge_sigmas_reaches_the_largest_singular_value(vector_updates):
    import keras

    from keras_bssn import SpectralNormalization
    from keras_bssn.convert import collect_sigmas

    keras.utils.set_random_seed(0)
    layers = [SpectralNormalization(keras.layers.Dense(units), vector_updates=vector_updates,
                                    name=f"dense{units}") for units in (12, 1)]
    model = keras.Sequential([keras.Input((20,)), *layers])
    gradients.converge_sigmas(model, 100)
    for layer in layers:
        kernel = keras.ops.convert_to_numpy(layer.layer.kernel)
        expected = np.linalg.svd(kernel, compute_uv=False)[0]
        estimate = float(collect_sigmas(model)[f"sigma/{layer.name}"])
        assert estimate == pytest.approx(expected, rel=1e-3), layer.name


@pytest.mark.slow
def test_input_gradient_sampling_forms_the_rows_a_sampling_run_logs(images_npz, tmp_path,
                                                                   capsys):
    flags = ["--dataset", "npz", "--data-dir", str(images_npz), "--image-size", "8",
             "--batch-size", "8", "--steps", "6", "--checkpoint-every", "6",
             "--sample-every", "6", "--fid-every", "0", "--no-export"]
    every_step, sampling = tmp_path / "every-step", tmp_path / "every-3rd"
    assert train.main([*flags, "--log-every", "1", "--input-gradient-every", "1",
                       "--out", str(every_step)]) == 0
    assert train.main([*flags, "--log-every", "6", "--input-gradient-every", "3",
                       "--out", str(sampling)]) == 0
    out = tmp_path / "sampling"
    assert analyze.main(["input-gradient-sampling", str(every_step), "--every", "3",
                         "--row-steps", "6", "--out", str(out)]) == 0

    columns, rows = _read(out / "input-gradient-sampling.csv")
    assert [(row["step"], row["column"]) for row in rows] == [
        ("6", "grad_norm_real"), ("6", "grad_norm_fake")]
    per_step = _read(every_step / "metrics.csv")[1]
    logged = _read(sampling / "metrics.csv")[1][-1]
    for row in rows:
        values = np.array([float(step[row["column"]]) for step in per_step])
        # The run that measured every 3rd step logged the mean of steps 1 and 4.
        assert float(row["sampled"]) == pytest.approx(float(logged[row["column"]]), rel=1e-5)
        assert float(row["sampled"]) == pytest.approx(values[[0, 3]].mean(), rel=1e-6)
        assert float(row["every_step"]) == pytest.approx(values.mean(), rel=1e-6)
        error = values.std(ddof=1) / np.sqrt(2) * np.sqrt(1 - 2 / 6)
        assert float(row["standard_error"]) == pytest.approx(error, rel=1e-6)
        assert float(row["z"]) == pytest.approx(
            (values[[0, 3]].mean() - values.mean()) / error, rel=1e-5)
    _assert_png(out / "input-gradient-sampling.png")
    assert "grad_norm_real: 1 rows; |z| below 2 in" in capsys.readouterr().out

    assert analyze.main(["input-gradient-sampling", str(sampling), "--out", str(out)]) == 2
    assert "this needs every step's value: train it with --log-every 1" in (
        capsys.readouterr().err)
    assert analyze.main(["input-gradient-sampling", str(every_step), "--every", "7",
                         "--row-steps", "6", "--out", str(out)]) == 2
    assert "--every 7 is above --row-steps 6" in capsys.readouterr().err
    assert analyze.main(["input-gradient-sampling", str(every_step), "--out", str(out)]) == 2
    assert "has no 100 logged steps yet" in capsys.readouterr().err
