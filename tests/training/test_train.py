"""The training command end to end: run folder, resume, refusals, NaN stop, export."""

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.training.concurrently import run_concurrently
from tests.training.run_files import (
    assert_same_checkpoints,
    assert_trained_alike,
    checkpoint_values,
)
from training import callbacks, cli, data, losses, train
from training.callbacks.metrics_csv import read_metrics
from training.runs import RunFolderLock

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images_npz(tmp_path_factory) -> Path:
    """A tiny data set of 8x8 images: smooth blobs, so the networks have something to learn."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1)
    centres = rng.uniform(1, 7, (64, 1, 1, 2))
    blobs = np.exp(-np.sum((grid[None] - centres) ** 2, -1) / 4.0)
    colours = rng.uniform(0, 1, (64, 1, 1, 3))
    images = (255 * blobs[..., None] * colours).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "blobs.npz"
    np.savez(path, x=images)
    return path


@pytest.fixture(scope="module")
def four_step_run(images_npz, tmp_path_factory) -> Path:
    """A run trained to step 4 (checkpoints at 2 and 4), for the tests that start from one:
    copy it with `_copy_of` rather than train it again."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert train.main(_args(images_npz, out, 4, "--no-export")) == 0
    return out


def _copy_of(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


def _args(images_npz, out, steps, *extra):
    return ["--preset", "cifar10-cnn-bssn", "--dataset", "npz", "--data-dir", str(images_npz),
            "--image-size", "8", "--batch-size", "8", "--steps", str(steps), "--log-every", "2",
            "--sample-every", "2", "--checkpoint-every", "2", "--fid-every", "0",
            "--out", str(out), *extra]


def test_train_writes_the_run_folder_and_resumes(images_npz, tmp_path):
    out, saved = tmp_path / "run", tmp_path / "saved_models"
    assert train.main(_args(images_npz, out, 4, "--saved-models", str(saved))) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["norm"], config["scale"], config["steps"]) == ("bssn", 1.2, 4)
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2
    for column in ("d_loss", "g_loss", "d_real", "d_fake", "grad_norm_real", "sigma/logits",
                   "sigma/conv1_view1", "sigma/conv1_view2"):
        assert np.isfinite(float(rows[-1][column])), column
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == [
        "step_0000000.png", "step_0000002.png", "step_0000004.png"]  # step 0: untrained
    assert (out / "checkpoints" / "checkpoint").exists()
    assert list((out / "logs").glob("events.out.tfevents.*"))
    assert (saved / "run" / "saved_model.pb").exists()

    # The same command with more steps continues from step 4.
    assert train.main(_args(images_npz, out, 6, "--saved-models", str(saved))) == 0
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3
    metadata = json.loads((saved / "run" / "assets" / "keras_bssn_export.json").read_text())
    assert metadata["step"] == 6

    # Export on request from the latest checkpoint, under another name.
    assert train.main(_args(images_npz, out, 6, "--saved-models", str(saved), "--export-only",
                            "--export-name", "again")) == 0
    again = json.loads((saved / "again" / "assets" / "keras_bssn_export.json").read_text())
    assert (again["step"], again["normalization"], again["scale"]) == (6, "bssn", 1.2)


def test_a_fresh_start_says_each_phase_before_its_first_progress_line(images_npz, tmp_path,
                                                                     monkeypatch):
    # The images as a .tar.gz of PNGs, as the shared CIFAR-10 comes: a new cache extracts it.
    folder = tmp_path / "blobs"
    folder.mkdir()
    for index, image in enumerate(np.load(images_npz)["x"][:16]):
        Image.fromarray(image).save(folder / f"{index:02d}.png")
    archive = tmp_path / "blobs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="blobs")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "KERAS_BSSN_CACHE": str(tmp_path / "cache")}
    args = _args(images_npz, tmp_path / "run", 2, "--no-export", "--dataset", "folder",
                 "--data-dir", str(archive))
    result = subprocess.run([sys.executable, "-m", "training.train", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    first_progress = next(index for index, line in enumerate(lines) if line.startswith("step "))
    # The data before the GAN: they are checked before anything is written.
    phases = ["starting TensorFlow...",
              f"data: extracting {archive} to {tmp_path / 'cache'}",
              f"data: 16 images in {archive} (cache: extracted to {tmp_path / 'cache'}",
              "building the GAN (cnn, bssn c=1.2) under DefaultDistributionStrategy (1 replica)",
              "compiling the training step (first step)...",
              "compiled in "]
    indices = [next(index for index, line in enumerate(lines) if line.startswith(phase))
               for phase in phases]
    assert indices == sorted(indices) and indices[-1] < first_progress, result.stdout
    assert lines[first_progress].startswith("step 1/2 (50%) | - steps/s | elapsed "), lines
    assert [line.split(" | ")[0] for line in lines[first_progress:]] == ["step 1/2 (50%)",
                                                                          "step 2/2 (100%)"]
    # A second start reuses the extracted images.
    monkeypatch.setenv("KERAS_BSSN_CACHE", str(tmp_path / "cache"))
    said = []
    data.report_source("folder", str(archive), say=said.append)
    assert said == [f"data: 16 images in {archive} (cache: reusing "
                    f"{next((tmp_path / 'cache' / 'datasets').iterdir())})"]


def test_changed_config_is_refused_unless_forced(images_npz, four_step_run, tmp_path, capsys):
    out = _copy_of(four_step_run, tmp_path)
    assert train.main(_args(images_npz, out, 6, "--no-export", "--scale", "1.6")) == 2
    assert "scale: 1.2 -> 1.6" in capsys.readouterr().err
    assert train.main(_args(images_npz, out, 6, "--no-export", "--scale", "1.6",
                            "--force")) == 0


def test_a_run_folder_of_release_0_2_resumes_with_its_precision(images_npz, four_step_run,
                                                                 tmp_path):
    out = _copy_of(four_step_run, tmp_path)
    config = json.loads((out / "config.json").read_text())
    for added in ("precision", "input_gradient_every"):
        del config[added]
    (out / "config.json").write_text(json.dumps({**config, "mixed_precision": False}))
    assert train.main(_args(images_npz, out, 6, "--no-export")) == 0
    assert [row["step"] for row in read_metrics(out / "metrics.csv")][-1] == 6
    assert train.main(_args(images_npz, out, 8, "--no-export", "--precision", "float16")) == 2


def test_a_bfloat16_run_trains_and_exports_float32_images(images_npz, tmp_path, capsys):
    out, saved = tmp_path / "run", tmp_path / "saved_models"
    assert train.main(_args(images_npz, out, 2, "--precision", "bfloat16",
                            "--saved-models", str(saved))) == 0
    assert json.loads((out / "config.json").read_text())["precision"] == "bfloat16"
    rows = read_metrics(out / "metrics.csv")
    assert all(np.isfinite(value) for row in rows for value in row.values())
    images = tf.saved_model.load(str(saved / "run")).signatures["serving_default"](
        latents=tf.zeros((2, 128)))["images"]
    assert images.dtype == tf.float32


def test_a_forced_change_the_checkpoints_cannot_take_leaves_the_run_as_it_was(
        images_npz, four_step_run, tmp_path, capsys):
    out = _copy_of(four_step_run, tmp_path)
    config = (out / "config.json").read_text()
    # Another latent size: the generator's first kernel no longer fits the checkpoints.
    assert train.main(_args(images_npz, out, 6, "--no-export", "--force",
                            "--latent-dim", "16")) == cli.EXIT_USER_ERROR
    assert "none of the checkpoints" in capsys.readouterr().err
    assert (out / "config.json").read_text() == config
    assert train.main(_args(images_npz, out, 6, "--no-export")) == 0  # the original command


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(images_npz, four_step_run,
                                                                   tmp_path, capsys,
                                                                   monkeypatch):
    out = _copy_of(four_step_run, tmp_path)
    # Adam's normalized steps and SN keep this small GAN finite at any learning rate, so the
    # divergence is injected: the discriminator loss turns NaN from here on.
    hinge = losses.discriminator_loss
    monkeypatch.setattr(losses, "discriminator_loss",
                        lambda *args: tuple(term * float("nan") for term in hinge(*args)))
    code = train.main(_args(images_npz, out, 8, "--no-export"))
    assert code == cli.EXIT_NON_FINITE
    stderr = capsys.readouterr().err
    assert "The last good checkpoint is" in stderr
    assert _checkpoint_names(out) == ["ckpt-2.index", "ckpt-4.index"]
    # Nor a grid drawn from the diverged generator.
    assert "no sample grid at step 5" in stderr
    assert sorted(path.name for path in (out / "samples").glob("*.png")) == [
        "step_0000000.png", "step_0000002.png", "step_0000004.png"]


def test_a_resumed_run_counts_its_logged_diversity_up_to_the_checkpoint(images_npz,
                                                                        four_step_run,
                                                                        tmp_path, monkeypatch):
    out = _copy_of(four_step_run, tmp_path)
    with open(out / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["step"] for row in rows] == ["2", "4"]
    with open(out / "metrics.csv", "a", newline="") as file:  # logged after the checkpoint
        csv.DictWriter(file, fieldnames=list(rows[0])).writerow({**rows[-1], "step": "6"})
    received = []

    class RecordingMonitor(callbacks.SampleDiversityMonitor):
        def __init__(self, *args, logged_rows=(), **kwargs):
            received.append([(row["step"], row["diversity"]) for row in logged_rows])
            super().__init__(*args, logged_rows=logged_rows, **kwargs)

    monkeypatch.setattr(callbacks, "SampleDiversityMonitor", RecordingMonitor)
    assert train.main(_args(images_npz, out, 6, "--no-export")) == 0
    assert received == [[(int(row["step"]), float(row["diversity"])) for row in rows]]


def _newest_checkpoint_step(run_dir: Path) -> int:
    return max((int(path.stem.split("-")[1])
                for path in (run_dir / "checkpoints").glob("ckpt-*.index")), default=0)


def test_a_run_killed_five_times_ends_bit_identical_to_an_uninterrupted_one(images_npz,
                                                                            tmp_path):
    # A checkpoint every step: each kill can land in a save, or just after one.
    steps, flags = 40, ("--no-export", "--checkpoint-every", "1", "--sample-every", "20")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert train.main(_args(images_npz, straight, steps, *flags)) == 0
    command = [sys.executable, "-m", "training.train", *_args(images_npz, killed, steps, *flags)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    rng = np.random.default_rng(0)
    kills = 0
    while kills < 5:
        before = _newest_checkpoint_step(killed)
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        # Kill once training has saved something new, at a random moment (mid-save included).
        while (time.time() < deadline and process.poll() is None
               and _newest_checkpoint_step(killed) <= before):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is not None:
            break  # it reached the end before the kill
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        kills += 1
    assert kills == 5, "training finished before the fifth kill: give it more steps"
    assert subprocess.run(command, cwd=REPO, env=env, capture_output=True,
                          timeout=300).returncode == 0

    # Weights, both optimizers' moments, u vectors, step, latents and the data order all
    # have to come back at every resume for the two runs to agree to the bit.
    expected = checkpoint_values(straight)
    assert any("u_view2" in name for name in expected)
    assert_same_checkpoints(expected, checkpoint_values(killed))
    assert not list((killed / "checkpoints").glob("*_temp*"))
    # A resume at an odd step trains to the next row first: the rows stay on even steps.
    rows = read_metrics(straight / "metrics.csv")
    assert [row["step"] for row in rows] == list(range(2, steps + 1, 2))
    # And each row averages the steps of the uninterrupted run's, those before a resume
    # too (the checkpoint keeps the interval's running means): every column, to the bit.
    assert read_metrics(killed / "metrics.csv") == rows


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_a_run_resumed_between_two_log_rows_logs_on_the_uninterrupted_runs_steps(
        images_npz, tmp_path, strategy):
    # Stopped at step 3 (as a Ctrl-C saves, between the rows of steps 2 and 4), then resumed.
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    flags = ("--no-export", "--strategy", strategy)
    assert train.main(_args(images_npz, straight, 8, *flags)) == 0
    assert train.main(_args(images_npz, resumed, 3, *flags)) == 0
    assert train.main(_args(images_npz, resumed, 8, *flags)) == 0

    def rows(run):
        with open(run / "metrics.csv", newline="") as file:
            return {int(row["step"]): row for row in csv.DictReader(file)}

    def grids(run):
        return sorted(path.name for path in (run / "samples").glob("*.png"))

    assert sorted(rows(straight)) == [2, 4, 6, 8]
    assert sorted(rows(resumed)) == [2, 3, 4, 6, 8]  # 3: where the first command stopped
    # The same steps, trained the same.
    for step in (2, 6, 8):
        assert rows(resumed)[step] == rows(straight)[step], step
    # The row of step 4 averages steps 3 and 4, step 3's losses from the running means saved
    # at the stop: to the bit on one device; on two, the restored sums are split evenly
    # across the replicas, not as each summed its share, so they agree to rounding.
    expected, actual = ({key: float(value) for key, value in rows(run)[4].items()}
                        for run in (straight, resumed))
    assert actual == pytest.approx(expected, rel=0 if strategy == "default" else 1e-6, abs=0)
    assert grids(resumed) == sorted([*grids(straight), "step_0000003.png"])
    assert_same_checkpoints(checkpoint_values(straight), checkpoint_values(resumed))


def test_a_run_that_ends_before_its_next_log_row_after_a_resume_still_saves_its_end(
        images_npz, tmp_path):
    out = tmp_path / "run"
    flags = ("--no-export", "--log-every", "4", "--checkpoint-every", "4")
    assert train.main(_args(images_npz, out, 1, *flags)) == 0
    assert train.main(_args(images_npz, out, 3, *flags)) == 0  # ends short of the row at 4
    assert _newest_checkpoint_step(out) == 3
    assert (out / "samples" / "step_0000003.png").exists()


def test_ctrl_c_before_the_first_step_of_a_resume_keeps_its_checkpoint_as_it_is(
        images_npz, four_step_run, tmp_path, capsys, monkeypatch):
    from training import trainer

    out = _copy_of(four_step_run, tmp_path)
    files = {path.name: (path.stat().st_mtime_ns, path.read_bytes())
             for path in (out / "checkpoints").iterdir()}
    build_callbacks = trainer._callbacks

    def ctrl_c_while_building(*args):  # e.g. while the Inception graph loads
        os.kill(os.getpid(), signal.SIGINT)
        return build_callbacks(*args)

    monkeypatch.setattr(trainer, "_callbacks", ctrl_c_while_building)
    assert train.main(_args(images_npz, out, 8, "--no-export")) == 130
    stderr = capsys.readouterr().err
    assert f"Saved {out / 'checkpoints' / 'ckpt-4'}. Run the same command" in stderr
    # The step was saved already: its files are not written again.
    assert {path.name: (path.stat().st_mtime_ns, path.read_bytes())
            for path in (out / "checkpoints").iterdir()} == files


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("stop_signal, inherit_ignored_sigint, exit_code", [
    (signal.SIGINT, False, 130), (signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)],
    ids=["ctrl-c", "ctrl-c-sigint-ignored-by-parent", "term"])
def test_interrupt_saves_a_checkpoint_and_exits(images_npz, tmp_path, stop_signal,
                                                inherit_ignored_sigint, exit_code):
    out = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # A shell without job control starts its background children with SIGINT ignored.
    process = subprocess.Popen(
        [sys.executable, "-m", "training.train", *_args(images_npz, out, 10_000, "--no-export",
                                                        "--checkpoint-every", "1000",
                                                        "--log-every", "1000")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_ignore_sigint if inherit_ignored_sigint else None)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "samples").glob("step_0000004.png")):
        time.sleep(0.5)
    process.send_signal(stop_signal)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == exit_code, stderr[-3000:]
    assert "Run the same command to resume" in stderr and "Traceback" not in stderr
    [checkpoint] = (out / "checkpoints").glob("ckpt-*.index")
    # The interval was cut short before its log row: its running means are written anyway.
    with open(out / "metrics.csv") as file:
        [row] = list(csv.DictReader(file))
    assert int(row["step"]) == int(checkpoint.stem.split("-")[1]) >= 4
    assert np.isfinite(float(row["d_loss"]))


_BAD_SETTINGS = [
    (["--steps", "0"], "--steps 0 is invalid"),
    (["--g-lr", "-1"], "--g-lr -1.0 is invalid"),
    (["--beta1", "2"], "--beta1 2.0 is invalid"),
    (["--log-every", "0"], "--log-every 0 is invalid"),
    (["--latent-dim", "0"], "--latent-dim 0 is invalid"),
    (["--scale", "inf"], "--scale inf is invalid"),
    (["--export-name", "../../x"], "--export-name '../../x' is invalid"),
    (["--dataset", "mnist"], "--dataset 'mnist' is invalid"),
    (["--image-size", "30"], "--image-size 30 is invalid"),
    # Infinite in float32: Adam would never move a weight.
    (["--adam-epsilon", "1e308"],
     "--adam-epsilon 1e+308 is invalid: give a finite number in (0, 3.4e+38]."),
    # The data, checked before the run folder is made (a corrected command is not refused).
    (["--data-dir", "{folder}"], "--dataset npz expects a .npz or .npy file; got {folder}"),
    (["--crop-size", "10"], "--crop-size 10 is larger than the images in {data} (8x8 pixels)"),
    (["--batch-size", "100000"], "--batch-size 100000: 100,000 images per generator step, "
     "more than the 64 the data has; give --batch-size at most 64."),
    (["--batch-size", "16", "--n-dis", "5"], "--batch-size 16 x --n-dis 5: 80 images per "
     "generator step, more than the 64 the data has; give --batch-size at most 12."),
    # Where the export goes, checked before training.
    (["--saved-models", "{data}"], "--saved-models {data}: {data} is a file, not a folder"),
    (["--saved-models", "{data}/models"],
     "--saved-models {data}/models: {data} is a file, not a folder"),
]


def _with_paths(text: str, images_npz: Path) -> str:
    """A bad setting's flag or message with the data's paths in."""
    return text.format(data=images_npz, folder=images_npz.parent)


@pytest.fixture(scope="module")
def bad_setting_runs(images_npz, tmp_path_factory) -> dict[str, tuple]:
    """Each bad setting given to the command (a subprocess each, several at a time): the
    result, and the run folder it was told to write."""
    folder = tmp_path_factory.mktemp("bad-settings")

    def run_case(case):
        flags, message = case
        out = folder / str(_BAD_SETTINGS.index(case))
        flags = [_with_paths(flag, images_npz) for flag in flags]
        return out, subprocess.run(
            [sys.executable, "-m", "training.train", *_args(images_npz, out, 4), *flags],
            cwd=REPO, capture_output=True, text=True, timeout=300)

    return {message: result for (_, message), result
            in zip(_BAD_SETTINGS, run_concurrently(run_case, _BAD_SETTINGS))}


@pytest.mark.parametrize("message", [message for _, message in _BAD_SETTINGS])
def test_bad_settings_are_refused_before_anything_is_written(bad_setting_runs, images_npz,
                                                             message):
    out, result = bad_setting_runs[message]
    assert result.returncode == 2, result.stderr
    assert f"error: {_with_paths(message, images_npz)}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_a_mistyped_number_is_answered_before_tensorflow_starts(images_npz, tmp_path):
    # TensorFlow's start takes 5-10 s; the names of norms, losses etc. need it, numbers do not.
    code = ("import sys; from training import train; status = train.main(sys.argv[1:]); "
            "print(status, 'tensorflow' in sys.modules)")
    result = subprocess.run(
        [sys.executable, "-c", code, *_args(images_npz, tmp_path / "run", 4), "--beta1", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert "error: --beta1 2.0 is invalid" in result.stderr


def _checkpoint_names(out):
    return sorted(path.name for path in (out / "checkpoints").glob("ckpt-*.index"))


def test_fewer_steps_than_a_run_has_trained_are_refused_and_change_nothing(
        images_npz, four_step_run, tmp_path, capsys):
    # As the README's quick `--steps 2` appended to the command of a longer run.
    out, saved = _copy_of(four_step_run, tmp_path), tmp_path / "saved_models"
    config = (out / "config.json").read_text()
    code = train.main(_args(images_npz, out, 2, "--saved-models", str(saved)))
    assert code == cli.EXIT_USER_ERROR
    assert (f"error: {out} is already at step 4, past --steps 2. Give --steps above 4 to train "
            "further, --out for a new run, or --export-only to export it.") in \
        capsys.readouterr().err
    assert (out / "config.json").read_text() == config
    assert _checkpoint_names(out) == ["ckpt-2.index", "ckpt-4.index"]
    assert not saved.exists()
    # As many steps as it has: nothing to train, and it says so (then exports).
    assert train.main(_args(images_npz, out, 4, "--saved-models", str(saved))) == 0
    assert "The run is at --steps 4 already: nothing to train." in capsys.readouterr().out
    metadata = json.loads((saved / "run" / "assets" / "keras_bssn_export.json").read_text())
    assert metadata["step"] == 4


def test_a_damaged_config_file_is_named_with_the_fix(images_npz, four_step_run, tmp_path,
                                                     capsys):
    out = _copy_of(four_step_run, tmp_path)
    (out / "config.json").write_text('{"dataset": "npz", ')  # cut short
    assert train.main(_args(images_npz, out, 6, "--no-export")) == cli.EXIT_USER_ERROR
    assert train.main(["--export-only", "--out", str(out)]) == cli.EXIT_USER_ERROR
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(
        line.startswith(f"error: {out / 'config.json'} is damaged (") and
        "Delete it to resume the run's checkpoints with the command's settings" in line
        for line in errors), errors
    (out / "config.json").unlink()  # the fix it names
    assert train.main(_args(images_npz, out, 6, "--no-export")) == 0
    assert "from step 4" in capsys.readouterr().out


@pytest.mark.parametrize("full_disk", [
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    # What TensorFlow's own file writes raise (a checkpoint's) when the disk is full.
    tf.errors.ResourceExhaustedError(None, None, f"{os.strerror(errno.ENOSPC)}; ckpt-6_temp"),
], ids=["python", "tensorflow"])
def test_a_full_disk_ends_the_run_with_the_last_good_checkpoint(images_npz, four_step_run,
                                                                tmp_path, capsys, monkeypatch,
                                                                full_disk):
    out = _copy_of(four_step_run, tmp_path)

    def save_on_a_full_disk(*args, **kwargs):
        raise full_disk

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save_on_a_full_disk)
    assert train.main(_args(images_npz, out, 6, "--no-export")) == cli.EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert f"error: the disk of {out} is full (" in error and "Traceback" not in error
    assert (f"The last good checkpoint is {out / 'checkpoints' / 'ckpt-4'}; free some space "
            "and run the same command to resume.") in error
    monkeypatch.undo()  # space freed
    assert train.main(_args(images_npz, out, 6, "--no-export")) == 0
    assert _checkpoint_names(out) == ["ckpt-2.index", "ckpt-4.index", "ckpt-6.index"]


def test_a_full_disk_at_the_export_keeps_the_run_and_names_the_export_command(
        images_npz, four_step_run, tmp_path, capsys, monkeypatch):
    from training import run_export

    out, saved = _copy_of(four_step_run, tmp_path), tmp_path / "saved_models"

    def export_on_a_full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(run_export, "export_generator", export_on_a_full_disk)
    assert train.main(_args(images_npz, out, 4, "--saved-models", str(saved))) == 2
    error = capsys.readouterr().err
    assert f"error: the disk of {saved / 'run'} is full (" in error and "Traceback" not in error
    assert f"python -m training.train --export-only --out {out} ." in error
    monkeypatch.undo()  # space freed
    assert train.main(["--export-only", "--out", str(out), "--saved-models", str(saved)]) == 0


def test_a_damaged_state_file_resumes_from_the_newest_checkpoint(images_npz, four_step_run,
                                                                  tmp_path, capsys):
    out = _copy_of(four_step_run, tmp_path)
    (out / "checkpoints" / "checkpoint").write_text("garbage {{{")
    (out / "checkpoints" / "ckpt-6_temp").mkdir()  # a save killed midway
    capsys.readouterr()
    assert train.main(_args(images_npz, out, 6, "--no-export")) == 0
    output = capsys.readouterr()
    assert "Resuming" in output.out and "from step 4" in output.out
    assert "state file was damaged" in output.err
    assert _checkpoint_names(out) == ["ckpt-2.index", "ckpt-4.index", "ckpt-6.index"]
    assert not (out / "checkpoints" / "ckpt-6_temp").exists()
    with open(out / "metrics.csv") as file:
        assert [row["step"] for row in csv.DictReader(file)] == ["2", "4", "6"]


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(images_npz, four_step_run,
                                                                      tmp_path, capsys):
    out = _copy_of(four_step_run, tmp_path)
    for data_file in (out / "checkpoints").glob("ckpt-4.data-*"):
        data_file.write_bytes(data_file.read_bytes()[:100])
    capsys.readouterr()
    assert train.main(_args(images_npz, out, 6, "--no-export")) == 0
    output = capsys.readouterr()
    assert "from step 2" in output.out
    assert "skipped ckpt-4" in output.err
    assert (out / "checkpoints" / "ckpt-2.index").exists()


def test_no_restorable_checkpoint_stops_with_an_error_and_keeps_the_files(images_npz,
                                                                          four_step_run,
                                                                          tmp_path, capsys):
    out = _copy_of(four_step_run, tmp_path)
    damaged = {}
    for data_file in (out / "checkpoints").glob("ckpt-*.data-*"):
        data_file.write_bytes(b"x" * 10)
        damaged[data_file] = data_file.read_bytes()
    capsys.readouterr()
    assert train.main(_args(images_npz, out, 6, "--no-export")) == cli.EXIT_USER_ERROR
    assert "none of the checkpoints" in capsys.readouterr().err
    assert all(path.read_bytes() == content for path, content in damaged.items())


def test_export_only_reads_the_runs_own_configuration(images_npz, tmp_path, capsys):
    out, saved = tmp_path / "run", tmp_path / "saved_models"
    assert train.main(_args(images_npz, out, 2, "--no-export", "--scale", "1.6")) == 0
    # As the README gives it: the preset's flags differ from the run's (scale, data).
    assert train.main(["--preset", "cifar10-cnn-bssn", "--export-only", "--out", str(out),
                       "--saved-models", str(saved)]) == 0
    metadata = json.loads((saved / "run" / "assets" / "keras_bssn_export.json").read_text())
    assert (metadata["scale"], metadata["step"]) == (1.6, 2)
    assert train.main(["--export-only", "--out", str(tmp_path / "nothing")]) == 2
    assert "holds no run (no config.json)" in capsys.readouterr().err


def test_the_command_trains_under_mirrored_strategy(images_npz, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "training.train",
         *_args(images_npz, out, 2, "--no-export", "--strategy", "mirrored")],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["step"] for row in rows] == ["2"]
    assert np.isfinite(float(rows[0]["diversity"]))
    assert (out / "checkpoints" / "ckpt-2.index").exists()


def test_the_command_on_two_replicas_trains_as_on_one_device(images_npz, tmp_path):
    # In this process the tests configured two logical CPUs, which `mirrored` spreads over.
    import tensorflow as tf

    assert len(tf.config.list_logical_devices("CPU")) == 2
    one, two = tmp_path / "one", tmp_path / "two"
    assert train.main(_args(images_npz, one, 4, "--no-export")) == 0
    assert train.main(_args(images_npz, two, 4, "--no-export", "--strategy", "mirrored")) == 0
    assert_trained_alike(checkpoint_values(one), checkpoint_values(two), steps=4)
    rows = {}
    for run in (one, two):
        with open(run / "metrics.csv") as file:
            rows[run] = list(csv.DictReader(file))
    assert [row["step"] for row in rows[two]] == ["2", "4"]
    for row_one, row_two in zip(rows[one], rows[two]):
        for column in ("d_loss", "g_loss", "d_real", "d_fake", "diversity"):  # within 1%
            np.testing.assert_allclose(float(row_two[column]), float(row_one[column]),
                                       rtol=1e-2, atol=1e-5, err_msg=column)


def test_a_second_run_on_a_busy_run_folder_is_refused(images_npz, four_step_run, tmp_path,
                                                      capsys):
    out = _copy_of(four_step_run, tmp_path)
    metrics = (out / "metrics.csv").read_text()
    with RunFolderLock(out):  # as if another process were training there
        assert train.main(_args(images_npz, out, 6, "--no-export")) == cli.EXIT_USER_ERROR
    assert "is in use by another training run (pid " in capsys.readouterr().err
    assert (out / "metrics.csv").read_text() == metrics and _checkpoint_names(out)[-1] == \
        "ckpt-4.index"
    assert train.main(_args(images_npz, out, 6, "--no-export")) == 0  # free again
