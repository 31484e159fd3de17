"""The collapse study's pieces: the diversity statistic, the collapse rule, cells, logs."""

import csv
import math

import keras
import numpy as np
import pytest

from training import analyze
from training.callbacks import SampleDiversityMonitor
from training.callbacks.diversity import mean_pairwise_distance
from training.callbacks.metrics_csv import read_metrics
from training.experiments import cells, collapse
from training.errors import RunFolderError
from training.presets import ConfigError
from training.runs import mark_finished, write_config


def test_mean_pairwise_distance_matches_a_direct_loop():
    images = np.random.default_rng(0).uniform(-1, 1, (7, 4, 4, 3))
    direct = [np.linalg.norm(images[i] - images[j]) for i in range(7) for j in range(i + 1, 7)]
    np.testing.assert_allclose(mean_pairwise_distance(images), np.mean(direct), rtol=1e-10)
    assert mean_pairwise_distance(np.repeat(images[:1], 5, axis=0)) == pytest.approx(0, abs=1e-6)


class _FixedGenerator:
    """Stands in for a GAN: its samples are whatever `images` holds."""

    latent_dim = 4

    def __init__(self):
        self.images = None
        self.step = keras.Variable(0, dtype="int64")

    def prepare_sampling_generator(self):
        return self

    def predict(self, latents, verbose=0, batch_size=None):
        return self.images[: len(latents)]


def test_diversity_is_relative_to_the_real_batch_and_warns_once_after_the_warm_up(capsys):
    rng = np.random.default_rng(1)
    real = rng.uniform(-1, 1, (16, 4, 4, 3))
    monitor = SampleDiversityMonitor(real, num_samples=16, threshold=0.25, patience=2,
                                     warm_up_steps=10)
    gan = _FixedGenerator()
    monitor.set_model(gan)
    gan.images = real
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert logs["diversity"] == pytest.approx(1.0)
    collapsed = real[:1].repeat(16, axis=0) + rng.normal(0, 1e-3, real.shape)
    gan.images = collapsed
    monitor.on_epoch_end(1, logs)  # step 0 < warm-up: no count
    gan.step.assign(20)
    for epoch in (2, 3, 4):
        monitor.on_epoch_end(epoch, logs)
    assert logs["diversity"] < 0.01
    warnings = capsys.readouterr().err.count("warning: step 20: sample diversity")
    assert warnings == 1


def test_a_resumed_monitor_continues_the_streak_its_logged_rows_began(capsys):
    rng = np.random.default_rng(2)
    real = rng.uniform(-1, 1, (16, 4, 4, 3))
    gan = _FixedGenerator()
    gan.images = real[:1].repeat(16, axis=0)
    gan.step.assign(30)
    # Two low rows after the warm-up, one before it and the diversity-less row an interrupted
    # interval writes: with a patience of 3, the first new low row completes the streak.
    logged = [{"step": 5, "diversity": 0.0}, {"step": 10, "diversity": 0.9},
              {"step": 15, "diversity": 0.1}, {"step": 17, "diversity": math.nan},
              {"step": 20, "diversity": 0.1}]
    resumed = SampleDiversityMonitor(real, num_samples=16, patience=3, warm_up_steps=10,
                                     logged_rows=logged)
    resumed.set_model(gan)
    resumed.on_epoch_end(6, {})
    assert "warning: step 30: sample diversity 0.000 of a real batch's, below 0.25 for 3 log " \
        "rows in a row" in capsys.readouterr().err
    # Without the logged rows, the same row starts a streak and warns of nothing.
    fresh = SampleDiversityMonitor(real, num_samples=16, patience=3, warm_up_steps=10)
    fresh.set_model(gan)
    fresh.on_epoch_end(6, {})
    assert fresh.low_rows == 1 and capsys.readouterr().err == ""
    # A recovery logged before the interruption ends the streak.
    recovered = SampleDiversityMonitor(real, num_samples=16, patience=3, warm_up_steps=10,
                                       logged_rows=[*logged, {"step": 25, "diversity": 0.8}])
    assert recovered.low_rows == 0


def test_collapse_step_needs_patience_rows_after_the_warm_up():
    def rows(values, start=400, every=50):
        return [{"step": start + every * index, "diversity": value}
                for index, value in enumerate(values)]

    assert collapse.collapse_step(rows([0.1, 0.1, 0.1, 0.9, 0.9])) is None  # before step 500
    # Two low rows, a recovery, then three low rows from step 650.
    assert collapse.collapse_step(rows([0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1])) == 650
    # Low from step 450, but only the rows from step 500 on count: 500, 550, 600.
    assert collapse.collapse_step(rows([0.9, 0.2, 0.2, 0.2])) is None
    assert collapse.collapse_step(rows([0.9, 0.2, 0.2, 0.2, 0.2])) == 500


def test_cells_parse_semantics_and_overrides():
    cell = cells.Cell.parse("bssn:1.2:keras+differentiable_power_iteration=true+bn_momentum=0.9")
    config = cell.config(seed=3, steps=20, log_every=5, dataset="folder", data_dir="x")
    assert (config.norm, config.scale, config.seed, config.steps) == ("bssn", 1.2, 3, 20)
    assert config.differentiable_power_iteration and config.bn_momentum == 0.9
    assert config.vector_updates == "in_call"  # the rest of the keras semantics
    assert cell.name == "bssn:1.2:keras+differentiable_power_iteration=true+bn_momentum=0.9"
    for bad in ("bssn:1.2", "bssn:1.2:pytorch", "bssn:1.2:official+colour=red",
                "bssn:x:official", "bssn:1.2:official+reuse_latents=maybe",
                "bssn:1.2:official+seed=1.5"):
        with pytest.raises(ConfigError):
            cells.Cell.parse(bad)


def test_a_run_log_is_read_by_step_and_summarized(tmp_path):
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", "d_real", "diversity", "grad_norm_fake", "step"])
        for epoch, (d_real, diversity) in enumerate([(1, .8), (2, .7), (50, .1), (90, .1),
                                                     (120, .05), (150, .04)]):
            writer.writerow([epoch, d_real, diversity, 0.01, 300 + 100 * epoch])
        writer.writerow([5, 160, 0.03, 0.01, 800])  # logged again after a resume: last wins
    rows = read_metrics(path)
    assert [row["step"] for row in rows] == [300, 400, 500, 600, 700, 800]
    summary = collapse.summarize_run(cells.Cell.parse("sn:1:official"), 0, rows, 1500)
    assert summary["collapsed"] and summary["collapse_step"] == 500
    assert summary["max_d_real"] == 160 and summary["steps"] == 800
    verdict = collapse.cell_verdicts([summary], steps=1500)
    assert verdict == ["sn:1:official: collapsed in 1 of 1 finished runs (seed 0 at 500)"]


def test_a_collapse_counts_and_its_recovery_is_reported():
    # The study's first run: below the threshold from step 500, back above it from 756.
    diversities = [(500, .1), (550, .12), (600, .1), (650, .13), (706, .15), (756, .53),
                   (806, .8), (856, .74), (906, .2), (956, .7)]
    rows = [{"step": step, "diversity": value, "d_real": 1.0} for step, value in diversities]
    summary = collapse.summarize_run(cells.Cell.parse("bssn:1.2:official"), 0, rows, 956)
    assert summary["collapse_step"] == 500 and summary["recovery_step"] == 756
    assert summary["collapsed"] and not summary["collapsed_at_end"]
    assert collapse.cell_verdicts([summary], steps=956) == [
        "bssn:1.2:official: collapsed in 1 of 1 finished runs (seed 0 at 500, recovered at 756)"]
    never = collapse.summarize_run(cells.Cell.parse("sn:1:official"), 1, rows[:5], 706)
    assert never["recovery_step"] is None and never["collapsed_at_end"]


def test_an_early_low_phase_is_reported_but_not_counted_as_a_collapse():
    # The study's XLA run of seed 0: low from the first row, varied again from step 450.
    diversities = [(50, .16), (100, .09), (150, .09), (200, .08), (250, .07), (300, .06),
                   (350, .07), (400, .22), (450, .81), (500, .92), (550, .82), (600, .85)]
    rows = [{"step": step, "diversity": value, "d_real": 1.0} for step, value in diversities]
    summary = collapse.summarize_run(cells.Cell.parse("bssn:1.2:official"), 0, rows, 600)
    assert summary["collapsed"] is False and summary["collapse_step"] is None
    assert summary["diverse_from_step"] == 450 and summary["min_diversity"] == 0.06


def test_the_row_an_interrupted_run_writes_without_a_diversity_breaks_no_streak():
    # A run stopped at step 390 logs that row without a diversity, then resumes.
    diversities = [(250, math.nan), (300, .58), (350, .64), (390, math.nan), (440, .91), (500, .1),
                   (550, .1), (576, math.nan), (626, .1), (676, .8)]
    rows = [{"step": step, "diversity": value, "d_real": 1.0} for step, value in diversities]
    summary = collapse.summarize_run(cells.Cell.parse("bssn:1.2:keras"), 0, rows, 676)
    assert summary["diverse_from_step"] == 300
    assert summary["collapse_step"] == 500 and summary["min_diversity"] == 0.1
    stopped = collapse.summarize_run(cells.Cell.parse("bssn:1.2:keras"), 0, rows[:-2], 676)
    assert stopped["steps"] == 576 and stopped["final_diversity"] == 0.1  # the step-550 row's


def test_an_unfinished_run_is_undecided_until_it_collapses():
    cell = cells.Cell.parse("sn:1:official")
    healthy = [{"step": step, "diversity": 0.9, "d_real": 1.0} for step in range(50, 801, 50)]
    running = collapse.summarize_run(cell, 0, healthy, steps=1500)
    assert running["collapsed"] is None and running["collapsed_at_end"] is None
    assert collapse.summarize_run(cell, 0, healthy, steps=800)["collapsed"] is False
    low = [{**row, "diversity": 0.1} if row["step"] >= 600 else row for row in healthy]
    assert collapse.summarize_run(cell, 0, low, steps=1500)["collapse_step"] == 600
    assert collapse.cell_verdicts([running], steps=1500) == [
        "sn:1:official: collapsed in 0 of 0 finished runs; 1 unfinished"]


def test_the_study_trains_without_xla_unless_told_to(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(collapse, "train_to_end",
                        lambda config, folder: trained.append((config, folder)))
    for flag, expected in (([], False), (["--jit-compile"], True)):
        args = analyze.build_parser().parse_args(
            ["collapse", "--out", str(tmp_path), "--seeds", "0", "1", "--cells",
             "sn:1:official", "--steps", "4", *flag])
        trained.clear()
        analyze._collapse(args)
        assert [config.jit_compile for config, _ in trained] == [expected, expected]
        assert [config.seed for config, _ in trained] == [0, 1]
    assert (tmp_path / "collapse.csv").exists()


def test_the_curves_pass_over_the_row_an_interrupted_run_writes():
    rows = [{"step": 50, "diversity": 0.1, "d_real": 2.0},
            {"step": 64, "diversity": math.nan, "d_real": 3.0},  # Ctrl-C: losses only
            {"step": 114, "diversity": 0.2, "d_real": 4.0}]
    figure = collapse.plot_study({("sn:1:official", 0): rows}, "study")
    diversity_line = figure.axes[0].lines[0]
    assert list(diversity_line.get_xdata()) == [50, 114]
    assert list(diversity_line.get_ydata()) == [0.1, 0.2]


def test_a_cell_cannot_override_what_the_study_sets():
    for setting in cells.STUDY_SETTINGS:
        with pytest.raises(ConfigError, match=f"the study sets {setting} for every run"):
            cells.Cell.parse(f"sn:1:keras+{setting}=1")
    # What the study sets is what its runs get, whatever the cell's semantics would give.
    config = cells.Cell.parse("sn:1:keras").config(seed=2, steps=30, log_every=5,
                                                   dataset="npz", data_dir="x", batch_size=16,
                                                   jit_compile=True)
    assert (config.seed, config.steps, config.log_every, config.batch_size,
            config.jit_compile) == (2, 30, 5, 16, True)


def test_a_cell_or_seed_given_twice_is_one_run(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(collapse, "train_to_end",
                        lambda config, folder: trained.append(folder.name))
    rows = collapse.run(tmp_path, ["sn:1:official", "sn:1.0:official"], [0, 0], steps=4,
                        log_every=2, dataset="npz", data_dir="x", batch_size=8)
    assert trained == ["sn-1-official-s0"]
    assert [(row["cell"], row["seed"]) for row in rows] == [("sn:1:official", 0)]


def test_a_rerun_with_other_settings_is_refused_not_counted_as_done(tmp_path, monkeypatch):
    monkeypatch.setattr(collapse, "train_to_end", lambda config, folder: None)
    cell = cells.Cell.parse("sn:1:official")
    earlier = cell.config(0, 4, 2, "npz", "x", batch_size=8)
    folder = cell.folder(tmp_path, 0)
    write_config(folder, earlier)
    mark_finished(folder, "finished", 4)

    with pytest.raises(RunFolderError, match="batch_size: 8 -> 16"):
        collapse.run(tmp_path, ["sn:1:official"], [0], steps=4, log_every=2, dataset="npz",
                     data_dir="x", batch_size=16)
    # The same settings continue the study; a longer one resumes its runs.
    collapse.run(tmp_path, ["sn:1:official"], [0], steps=8, log_every=2, dataset="npz",
                 data_dir="x", batch_size=8)
