"""The benchmark scripts, each run as its docstring says (`python -m benchmarks.NAME` from the
repository root) with the smallest settings: the lines they print are there and parse (no
timing is asserted: these runs share the cores with everything else)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
NUMBER = r"[-+]?\d+(?:\.\d+)?"
SMALLEST = ("--rounds", "1", "--warmup", "1", "--batch-size", "8")


def _run(script: str, *flags: str) -> str:
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{script}", *map(str, flags)],
                            cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _table_rows(output: str, title: str) -> dict[str, list[float]]:
    """The rows of the first table under a `== <title>` line: label -> its numbers."""
    lines = output[output.index(f"== {title}"):].splitlines()[3:]  # title, header, rule
    rows = {}
    for line in lines:
        match = re.match(rf"^(.*?)\s+({NUMBER}(?:\s+{NUMBER}){{2}})\s+({NUMBER})-({NUMBER})"
                         rf"(?:\s+({NUMBER}))?$", line)
        if not match:
            break
        numbers = match.group(2).split() + [group for group in match.groups()[2:] if group]
        rows[match.group(1)] = [float(number) for number in numbers]
    return rows


def _section(output: str, heading: str, next_heading: str = "\n####") -> str:
    """The text from `heading` to the next heading (or the end)."""
    start = output.index(heading)
    end = output.find(next_heading, start + len(heading))
    return output[start:end if end >= 0 else None]


def _assert_clock_tables(section: str, labels: list[str]) -> None:
    """A wall table with steps/s and a CPU table, each with a positive ms/step per label."""
    wall = _table_rows(section, "wall-clock time")
    cpu = _table_rows(section, "process CPU time")
    assert list(wall) == labels and list(cpu) == labels
    for row in wall.values():
        assert len(row) == 6 and row[0] > 0 and row[5] > 0  # ms, IQR, ratio, CI, steps/s
    for row in cpu.values():
        assert len(row) == 5 and row[0] > 0


@pytest.mark.slow
def test_bench_gan_step_times_each_precision_and_states_it_against_float32():
    output = _run("bench_gan_step", *SMALLEST, "--norms", "none", "sn", "--input-gradients",
                  "both", "--precision", "bfloat16", "--main-job-steps", "0")
    assert "precisions float32, bfloat16;" in output
    for precision, policy in (("float32", "float32"), ("bfloat16", "mixed_bfloat16")):
        for setting, tracked in (("on", True), ("off", False)):
            heading = (f"#### {precision} ({policy}), ||grad_x D|| logging {setting} "
                       f"(track_input_gradients={tracked})")
            _assert_clock_tables(_section(output, heading), ["none", "ours SN"])
    costs = re.findall(rf"^ *(wall|cpu): (float32|bfloat16) (none|ours SN): ({NUMBER})% "
                       rf"\(95% CI ({NUMBER})% to ({NUMBER})%\)$", output, re.MULTILINE)
    assert len(costs) == 8
    ratios = re.findall(rf"^ *(wall|cpu): bfloat16/float32 (none|ours SN), grad-(on|off): "
                        rf"({NUMBER})x \(95% CI ({NUMBER}) to ({NUMBER})\)$", output,
                        re.MULTILINE)
    assert len(ratios) == 8 and all(float(ratio[3]) > 0 for ratio in ratios)
    assert "main job" not in output


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Seventy small smooth colour images: enough for one batch of 64 and its diversity
    reference."""
    folder = tmp_path_factory.mktemp("images")
    rows, cols = np.mgrid[0:32, 0:32] / 32.0
    for index in range(70):
        image = np.stack([rows, cols, np.full_like(rows, index / 70)], axis=-1)
        Image.fromarray(np.uint8(image * 255)).save(folder / f"{index:02d}.png")
    return folder


@pytest.mark.slow
def test_bench_gan_step_runs_the_main_job_and_compares_it_with_its_bare_step(image_folder):
    output = _run("bench_gan_step", *SMALLEST, "--norms", "sn", "--input-gradients", "off",
                  "--precision", "float32", "--main-job-steps", "3", "--data-dir",
                  image_folder)
    _assert_clock_tables(_section(output, "#### the main job's step"), ["float32"])
    command = re.search(r"^running: (.*)$", output, re.MULTILINE).group(1)
    assert (" -m training.train --preset cifar10-cnn-bssn --semantics keras --dataset folder "
            f"--data-dir {image_folder} --steps 3 --batch-size 8 ") in command
    assert "--precision float32 " in command and command.endswith(" --no-export")
    job = re.search(rf"^main job float32: ({NUMBER}) steps/s \(({NUMBER}) ms/step\) over "
                    r"steps 2-3$", output, re.MULTILINE)
    assert job and float(job.group(1)) > 0
    assert re.search(rf"^main job float32: step 1 done ({NUMBER}) s after the process started "
                     rf"\(start-up and compilation\); exited after ({NUMBER}) s$", output,
                     re.MULTILINE)
    bare = re.search(rf"^bare step float32: ({NUMBER}) steps/s \(({NUMBER}) ms/step\)$",
                     output, re.MULTILINE)
    assert bare and float(bare.group(2)) > 0
    ratio = re.search(rf"^main job / bare step float32: ({NUMBER}) over steps 2-3$", output,
                      re.MULTILINE)
    assert ratio and float(ratio.group(1)) > 0


def test_bench_gan_step_refuses_a_main_job_of_one_step_and_a_missing_data_dir(tmp_path):
    for flags, message in ((("--main-job-steps", "1"), "--main-job-steps must be 0"),
                           (("--data-dir", tmp_path / "absent.tar.gz"), "does not exist")):
        result = subprocess.run([sys.executable, "-m", "benchmarks.bench_gan_step",
                                 *map(str, flags)], cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 2 and message in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_op_profile_says_where_each_precisions_step_goes_and_in_which_dtype():
    output = _run("op_profile", "--precision", "float32", "bfloat16", "--steps", "1",
                  "--warmup", "1", "--batch-size", "8", "--top", "3")
    by_precision = {}
    for precision, policy in (("float32", "float32"), ("bfloat16", "mixed_bfloat16")):
        section = _section(output, f"== the main job's step, {precision} ({policy}): 1 "
                                   "steps profiled", "\n== ")
        total = float(re.search(rf"^ops' self time: ({NUMBER}) ms/step$", section,
                                re.MULTILINE).group(1))
        dtypes = dict(re.findall(rf"(\S+) ({NUMBER}) \({NUMBER}%\)",
                                 re.search(r"^by dtype \(ms/step, share\): (.*)$", section,
                                           re.MULTILINE).group(1)))
        parts = dict(re.findall(rf"^(\S.*?)\s+({NUMBER})\s+{NUMBER}%  ", section,
                                re.MULTILINE))
        assert total > 0
        assert sum(map(float, dtypes.values())) == pytest.approx(total, rel=0.01, abs=0.2)
        assert sum(map(float, parts.values())) == pytest.approx(total, rel=0.01, abs=0.2)
        assert {"transposed convolutions", "convolutions", "BatchNorm"} <= set(parts)
        assert len(re.search(r"^largest ops \(ms/step\): (.*)$", section,
                             re.MULTILINE).group(1).split("; ")) == 3
        by_precision[precision] = dtypes
    # The networks compute in float32 under float32, and mostly in bfloat16 under
    # mixed_bfloat16, casting between the two.
    assert "bfloat16" not in by_precision["float32"]
    assert "bfloat16" in by_precision["bfloat16"]
    assert any("->" in dtype for dtype in by_precision["bfloat16"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="PyTorch is not installed (not a dependency of this project)")
def test_bench_torch_sngan_times_float32_and_bfloat16():
    output = _run("bench_torch_sngan", *SMALLEST, "--bf16")
    assert re.search(r"^PyTorch \S+, Python \S+; \d+ threads, \d+ CPU cores visible$", output,
                     re.MULTILINE)
    _assert_clock_tables(output, ["PyTorch SNGAN-CNN, float32",
                                  "PyTorch SNGAN-CNN, autocast bfloat16"])


def test_every_benchmark_command_of_the_readme_takes_its_flags():
    # Run whole by the person who measured (minutes each); here, their flags as written.
    import importlib
    import shlex

    # An environment setting may come first (`TF_ENABLE_ONEDNN_OPTS=0 python -m ...`).
    commands = re.findall(r"`(?:\w+=\S+ )*python -m benchmarks\.(\w+)([^`]*)`",
                          (REPO / "README.md").read_text())
    assert {script for script, _ in commands} >= {"bench_gan_step", "bench_torch_sngan"}
    for script, flags in commands:
        module = importlib.import_module(f"benchmarks.{script}")
        module.build_parser().parse_args(shlex.split(flags))
