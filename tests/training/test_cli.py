"""The command-line layer: a user's mistake in any of the five commands is one `error:` line
and exit code 2, never a traceback; a bug keeps its traceback; start-up noise stays off."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.training.concurrently import run_concurrently
from tests.training.fid_testing import random_images, tiny_feature_model, tiny_generator
from training import cli, metrics
from training.errors import UserError

REPO = Path(__file__).resolve().parents[2]
_EMPTY_KERAS_HOME = tempfile.mkdtemp(prefix="keras-home-")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A .keras generator, a junk .npz, an image array, and a plain file to write under."""
    folder = tmp_path_factory.mktemp("cli")
    tiny_generator().save(folder / "generator.keras")
    tiny_feature_model().save(folder / "features.keras")
    (folder / "junk.keras").write_bytes(b"not a keras file")
    metrics.save_statistics(folder / "stats.npz", np.zeros(4), np.eye(4))
    (folder / "junk.npz").write_bytes(b"not a zip file")
    (folder / "file.txt").write_text("a file, not a folder")
    np.save(folder / "images.npy", random_images(8))
    (folder / "empty").mkdir()
    return folder


def _run(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # No network here, and an empty Keras cache: the Inception graph cannot be fetched.
    env = env or {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_HOME": _EMPTY_KERAS_HOME}
    env.pop("KERAS_BSSN_INCEPTION_GRAPH", None)
    return subprocess.run([sys.executable, "-m", f"training.{module}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)


def _bad_input_cases():
    # (command, arguments, what the message says); {f} is the `files` fixture's folder.
    return [
        ("train", ["--preset", "nope"], "Unknown preset 'nope'"),
        ("train", ["--norm", "bogus", "--out", "{f}/run"], "--norm 'bogus' is invalid"),
        ("train", ["--out", "{f}/file.txt/run", "--steps", "2"],
         "cannot write the run folder"),
        ("train", ["--export-only", "--out", "{f}/no-run"], "holds no run"),
        ("train", ["--dataset", "folder", "--data-dir", "{f}/no-images", "--out", "{f}/run2",
                   "--steps", "2"], "does not exist"),
        ("train", ["--dataset", "folder", "--data-dir", "{f}/empty", "--out", "{f}/run3",
                   "--steps", "2"], "No image files"),
        ("generate", ["{f}/no-export", "--out", "{f}/grid.png"], "no-export"),
        ("generate", ["{f}/no-export", "--out", "{f}/grid.jpg"], "give a name ending in .png"),
        ("generate", ["{f}/no-export"], "nothing to write"),
        ("generate", ["{f}/no-export", "--out", "{f}/grid.png", "--num", "3000000000"],
         "at most 1,000,000 images per call"),
        ("evaluate", ["{f}/missing.keras", "--stats", "{f}/junk.npz"], "No generator file"),
        ("evaluate", ["{f}/generator.keras", "--stats", "{f}/junk.npz"],
         "cannot be used as real statistics"),
        ("evaluate", ["{f}/generator.keras", "--stats", "{f}/none.npz"],
         "cannot be used as real statistics"),
        ("evaluate", ["{f}/generator.keras", "--stats", "{f}/stats.npz", "--extractor",
                      "{f}/junk.keras"], "cannot be read as a feature extractor"),
        ("evaluate", ["{f}/generator.keras", "--stats", "{f}/stats.npz", "--extractor",
                      "inception-v4"], "Unknown extractor 'inception-v4'"),
        ("evaluate", ["{f}/generator.keras", "--stats", "{f}/stats.npz"],
         "Offline, give a copy of inception-2015-12-05.tgz"),
        ("fid_stats", ["--dataset", "npz", "--data-dir", "{f}/images.npy", "--num", "100",
                       "--extractor", "{f}/features.keras", "--out", "{f}/s.npz"],
         "only 8 images; 100 were asked for"),
        ("fid_stats", ["--dataset", "npz", "--data-dir", "{f}/images.npy", "--out",
                       "{f}/stats.txt"], "give a name ending in .npz"),
        ("fid_stats", ["--dataset", "npz", "--data-dir", "{f}/images.npy", "--out",
                       "{f}/missing-folder/stats.npz"], "does not exist; create it first"),
        ("fid_stats", ["--dataset", "folder", "--data-dir", "{f}/typo", "--out",
                       "{f}/stats.npz"], "typo does not exist"),
        ("analyze", ["collapse", "--cells", "bssn:1.2"], "A cell is NORM:SCALE:SEMANTICS"),
        ("analyze", ["collapse", "--cells", "nope:1:official", "--out", "{f}/study"],
         "--norm 'nope' is invalid"),
        ("analyze", ["sweep", "--steps", "7", "--eval-every", "5", "--out", "{f}/sweep"],
         "--steps 7 must be a multiple of --eval-every 5"),
    ]


@pytest.fixture(scope="module")
def bad_input_results(files) -> dict[tuple, subprocess.CompletedProcess]:
    """Every bad-input case, run as its own subprocess (several at a time)."""
    def run_case(case):
        command, arguments, _ = case
        return _run(command, *(argument.format(f=files) for argument in arguments))

    cases = _bad_input_cases()
    results = run_concurrently(run_case, cases)
    return {_case_key(case): result for case, result in zip(cases, results)}


def _case_key(case) -> tuple:
    command, arguments, message = case
    return command, tuple(arguments), message


@pytest.mark.parametrize("command, arguments, message", _bad_input_cases(),
                         ids=lambda value: value if isinstance(value, str) else None)
def test_a_users_mistake_is_one_error_line_and_exit_code_2(bad_input_results, command,
                                                           arguments, message):
    result = bad_input_results[_case_key((command, arguments, message))]

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "error: " in result.stderr and message in result.stderr, result.stderr


@pytest.mark.parametrize("command, arguments", [
    ("train", ["--no-such-flag"]),
    ("generate", ["--no-such-flag"]),
    ("evaluate", ["--no-such-flag"]),
    ("fid_stats", ["--no-such-flag"]),
    ("fid_stats", ["--dataset", "npz", "--out", "stats.txt"]),
    ("analyze", ["collapse", "--no-such-flag"]),
    ("analyze", ["sweep", "--steps", "7", "--eval-every", "5"]),
    ("analyze", ["collapse", "--cells", "bssn:1.2"]),
])
def test_a_mistyped_command_line_is_answered_before_tensorflow_starts(command, arguments):
    # TensorFlow's start takes 5-10 s: a typo must not wait for it (nor --help).
    code = (f"import sys\nfrom training import {command}\n"
            f"try:\n    status = {command}.main(sys.argv[1:])\n"
            "except SystemExit as stop:\n    status = stop.code\n"
            "print(status, 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, *arguments], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert "error: " in result.stderr and "Traceback" not in result.stderr


def test_tensorflows_start_up_lines_are_silenced_unless_asked_for(files):
    quiet_env = {key: value for key, value in os.environ.items()
                 if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = _run("generate", str(files / "no-export"), "--out", str(files / "grid.png"),
                  env=quiet_env)

    assert result.returncode == 2
    assert result.stderr.startswith("error: "), result.stderr
    assert "cuda" not in result.stderr.lower() and "absl" not in result.stderr


def test_a_bug_keeps_its_traceback_and_a_user_error_does_not():
    parser = cli.parser("training.example", None)

    def buggy(args):
        raise ZeroDivisionError("a bug")

    def mistaken(args):
        raise UserError("--flag x is wrong. Give y.")

    with pytest.raises(ZeroDivisionError):
        cli.run(buggy, parser, [])
    assert cli.run(mistaken, parser, []) == cli.EXIT_USER_ERROR


def test_help_shows_the_defaults_and_boolean_flags_have_no_forms():
    result = _run("train", "--help")
    text = " ".join(result.stdout.split())  # as wrapped to any terminal width

    assert result.returncode == 0
    assert "(default: cifar10-cnn-bssn)" in text
    assert "--no-reuse-latents" in text and "--no-mixed-precision" in text
    assert "the constant c of SSN/BSSN (main preset: 1.2)" in text


def test_every_commands_help_is_plain_text():
    # The descriptions are the command modules' docstrings, written in Markdown.
    results = run_concurrently(lambda command: _run(command, "--help"),
                               ["train", "evaluate", "generate", "fid_stats", "analyze"])
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "`" not in result.stdout, result.stdout
    fid_stats_help = results[3].stdout
    assert ("\n    python -m training.fid_stats --dataset cifar10 --data-dir PATH --split train "
            "--num 50000 \\\n        --extractor inception-2015" in fid_stats_help)


@pytest.mark.parametrize("argument, value", [("--reuse-latents", True),
                                             ("--reuse-latents=false", False),
                                             ("--no-reuse-latents", False)])
def test_a_boolean_flag_takes_a_value_or_none(argument, value):
    from training.train import build_parser

    assert build_parser().parse_args([argument]).reuse_latents is value
