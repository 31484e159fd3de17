"""The command-line layer: a user's mistake in any of the five commands is one `error:` line
and exit code 2, never a traceback; a bug keeps its traceback; start-up noise stays off."""

import itertools
import os
import shutil
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
from training.export import export_generator
from training.presets import TrainConfig

REPO = Path(__file__).resolve().parents[2]
_EMPTY_KERAS_HOME = tempfile.mkdtemp(prefix="keras-home-")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A .keras generator and an export without its variables, 4-d and 6-d statistics, a
    junk .npz, an image array, a plain file to write under, and a run folder with only its
    configuration."""
    folder = tmp_path_factory.mktemp("cli")
    tiny_generator().save(folder / "generator.keras")
    export_generator(tiny_generator(), folder / "export", {"dataset": "toy"})
    shutil.copytree(folder / "export", folder / "export-without-variables")
    shutil.rmtree(folder / "export-without-variables" / "variables")
    tiny_feature_model().save(folder / "features.keras")
    (folder / "junk.keras").write_bytes(b"not a keras file")
    metrics.save_statistics(folder / "stats.npz", np.zeros(4), np.eye(4))
    (folder / "junk.npz").write_bytes(b"not a zip file")
    (folder / "file.txt").write_text("a file, not a folder")
    np.save(folder / "images.npy", random_images(8))
    (folder / "empty").mkdir()
    (folder / "config-only-run").mkdir()
    (folder / "config-only-run" / "config.json").write_text(TrainConfig().to_json())
    return folder


def _run(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # An empty Keras cache, and no network (a proxy on a closed port): no extractor can be
    # fetched, on any machine.
    env = env or {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_HOME": _EMPTY_KERAS_HOME,
                  "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    env.pop("KERAS_BSSN_INCEPTION_GRAPH", None)
    return subprocess.run([sys.executable, "-m", f"training.{module}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)


# Flags of one kind in every command, each with the arguments around it and its message.
_SEED_FLAGS = [("train", ["--out", "{f}/seeded-run", "--seed"]),
               ("generate", ["{f}/export", "--out", "{f}/seeded.png", "--seed"]),
               ("evaluate", ["{f}/generator.keras", "--stats", "{f}/stats.npz", "--seed"]),
               ("analyze", ["collapse", "--out", "{f}/seeded-study", "--seeds"]),
               ("analyze", ["gradients", "--out", "{f}/seeded-gradients", "--seeds"])]
_BAD_SEEDS = ["-3", "-1", "2147483648", "1e23"]
_SCALE_FLAGS = [("analyze", ["sweep", "--out", "{f}/scaled-sweep", "--scales", "1"]),
                ("analyze", ["gradients", "--out", "{f}/scaled-gradients", "--scale"]),
                ("analyze", ["init-variance", "--out", "{f}/scaled-variance", "--scale"])]
_BAD_SCALES = ["0", "-1", "nan", "inf"]
# Counts of images that a covariance (FID) or a pairwise statistic (KID, diversity) is made of.
_SAMPLE_COUNT_FLAGS = [
    ("analyze", ["sweep", "--out", "{f}/counted-sweep", "--kid-samples"]),
    ("analyze", ["sweep", "--out", "{f}/counted-sweep", "--kid-real"]),
    ("analyze", ["artifacts", "{f}/config-only-run", "--out", "{f}/counted-artifacts",
                 "--num-images"]),
    ("evaluate", ["{f}/generator.keras", "--stats", "{f}/stats.npz", "--num"]),
    ("evaluate", ["{f}/generator.keras", "--stats", "{f}/stats.npz", "--num-real"]),
    ("evaluate", ["{f}/generator.keras", "--stats", "{f}/stats.npz", "--kid-subset-size"]),
    ("fid_stats", ["--dataset", "npz", "--data-dir", "{f}/images.npy", "--out",
                   "{f}/counted.npz", "--num"])]


def _flag_cases():
    """Every flag of a kind with each bad value of that kind."""
    def flag(arguments):
        return next(argument for argument in reversed(arguments) if argument.startswith("--"))

    seeds = [(command, [*arguments, value],
              f"argument {flag(arguments)}: expected a whole number from 0 to 2147483647")
             for (command, arguments), value in itertools.product(_SEED_FLAGS, _BAD_SEEDS)]
    scales = [(command, [*arguments, value],
               f"argument {flag(arguments)}: expected a finite number > 0, got '{value}'")
              for (command, arguments), value in itertools.product(_SCALE_FLAGS, _BAD_SCALES)]
    counts = [(command, [*arguments, "1"],
               f"argument {flag(arguments)}: expected a whole number >= 2, got '1'")
              for command, arguments in _SAMPLE_COUNT_FLAGS]
    return seeds + scales + counts


def _bad_input_cases():
    # (command, arguments, what the message says); {f} is the `files` fixture's folder.
    return _flag_cases() + [
        ("train", ["--preset", "nope"], "Unknown preset 'nope'"),
        ("train", ["--norm", "bogus", "--out", "{f}/run"], "--norm 'bogus' is invalid"),
        ("train", ["--out", "{f}/file.txt/run", "--steps", "2"],
         "is a file, not a folder"),
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
        ("analyze", ["gradients", "--norms", "bsnn", "--out", "{f}/bsnn"],
         "--norm 'bsnn' is invalid"),
        ("analyze", ["sweep", "--norms", "sn", "snn", "--out", "{f}/snn"],
         "--norm 'snn' is invalid"),
        ("analyze", ["init-variance", "--arch", "vit", "--out", "{f}/vit"],
         "--arch 'vit' is invalid"),
        ("analyze", ["init-variance", "--image-size", "7", "--out", "{f}/size7"],
         "--image-size 7 is invalid: give a multiple of 8"),
        ("analyze", ["gradients", "--warm-up", "-1", "--out", "{f}/warm-up"],
         "argument --warm-up: expected a whole number >= 0"),
        ("analyze", ["gradients", "--dataset", "folder", "--data-dir", "{f}/typo",
                     "--out", "{f}/typo-gradients"], "typo does not exist"),
        ("analyze", ["sweep", "--dataset", "folder", "--data-dir", "{f}/empty",
                     "--out", "{f}/empty-sweep"], "No image files"),
        ("analyze", ["collapse", "--out", "{f}/file.txt/study"], "is a file, not a folder"),
        ("analyze", ["collapse", "--cells", "sn:1:keras+steps=100", "--out", "{f}/owned"],
         "the study sets steps for every run"),
        ("analyze", ["artifacts", "{f}/config-only-run", "--lattice-period", "1000",
                     "--out", "{f}/lattice"], "--lattice-period 1000 does not fit"),
        ("analyze", ["artifacts", "{f}/config-only-run", "--steps", "0", "5",
                     "--out", "{f}/no-step"], "has no checkpoint of step 5"),
        ("evaluate", ["{f}/generator.keras", "--stats", "{f}/stats.npz", "--extractor",
                      "{f}/features.keras"], "holds 4-d statistics"),
        ("evaluate", ["{f}/generator.keras", "--stats", "{f}/stats.npz", "--num", "8",
                      "--splits", "10"], "--splits 10"),
        ("evaluate", ["{f}/export-without-variables", "--stats", "{f}/stats.npz"],
         "variables"),
        ("generate", ["{f}/export-without-variables", "--out", "{f}/unvaried.png"],
         "variables"),
        ("fid_stats", ["--dataset", "npz", "--data-dir", "{f}/images.npy", "--extractor",
                       "keras-inceptionv3", "--out", "{f}/keras-inception.npz"],
         "Offline, copy inception_v3_weights_tf_dim_ordering_tf_kernels.h5 into"),
    ]


@pytest.fixture(scope="module")
def bad_input_results(files) -> dict[tuple, tuple[subprocess.CompletedProcess, list[Path]]]:
    """Every bad-input case, run as its own subprocess (several at a time), with the paths
    it names that it wrote (those that did not exist before)."""
    def paths(case):
        return [Path(argument.format(f=files)) for argument in case[1] if "{f}" in argument]

    def run_case(case):
        command, arguments, _ = case
        return _run(command, *(argument.format(f=files) for argument in arguments))

    cases = _bad_input_cases()
    absent = [[path for path in paths(case) if not path.exists()] for case in cases]
    results = run_concurrently(run_case, cases)
    return {_case_key(case): (result, [path for path in new if path.exists()])
            for case, result, new in zip(cases, results, absent)}


def _case_key(case) -> tuple:
    command, arguments, message = case
    return command, tuple(arguments), message


@pytest.mark.parametrize("command, arguments, message", _bad_input_cases(),
                         ids=lambda value: value if isinstance(value, str) else None)
def test_a_users_mistake_is_one_error_line_and_exit_code_2(bad_input_results, command,
                                                           arguments, message):
    result, written = bad_input_results[_case_key((command, arguments, message))]

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("error: ") == 1 and message in result.stderr, result.stderr
    assert written == []


@pytest.mark.parametrize("command, arguments", [
    ("train", ["--no-such-flag"]),
    ("generate", ["--no-such-flag"]),
    ("evaluate", ["--no-such-flag"]),
    ("fid_stats", ["--no-such-flag"]),
    ("fid_stats", ["--dataset", "npz", "--out", "stats.txt"]),
    ("analyze", ["collapse", "--no-such-flag"]),
    ("analyze", ["sweep", "--steps", "7", "--eval-every", "5"]),
    ("analyze", ["collapse", "--cells", "bssn:1.2"]),
    ("analyze", ["collapse", "--cells", "sn:1:keras+steps=100"]),
    ("analyze", ["sweep", "--scales", "nan"]),
    ("analyze", ["collapse", "--out", "README.md/study"]),
    ("train", ["--seed", "-3"]),
    ("train", ["--precision", "bf16"]),
    ("train", ["--steps", "100000000000000000000"]),
    ("train", ["--input-gradient-every", "200"]),
    ("train", ["--mixed-precision", "--precision", "bfloat16"]),
    ("generate", ["export", "--out", "grid.png", "--seed", "1e23"]),
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
    assert "--no-reuse-latents" in text and "--no-jit-compile" in text
    assert "mixed-precision" not in text  # the old name of --precision still works, unlisted
    assert "the constant c of SSN/BSSN (main preset: 1.2)" in text


def test_every_commands_help_is_plain_text():
    # The descriptions are the command modules' docstrings, written in Markdown.
    results = run_concurrently(lambda command: _run(command, "--help"),
                               ["train", "evaluate", "generate", "fid_stats", "analyze",
                                "feature_classifier"])
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
