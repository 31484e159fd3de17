"""Every code block of the README runs as written, in the README's order, on a checkout with
`../shared` beside it: the Python blocks verbatim, the `python -m training.*` commands shortened
only by the flags the README names for trying them quickly. The install and test commands are
what CI itself runs (.ci/run)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.fid_testing import tiny_feature_model

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# Commands the README shows that CI runs itself (.ci/run) or that would run the suite again.
_RUN_BY_CI = ("pip install", "bash tests/run.sh")


def readme_blocks(text: str | None = None) -> list[tuple[str, str]]:
    """The README's ```bash and ```python blocks, in order, as (language, code)."""
    text = (REPO / "README.md").read_text() if text is None else text
    return re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S)


def block_commands(code: str) -> list[list[str]]:
    """The commands of a bash block, continuation lines joined and `&&` chains split."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words:
                commands.append(words)
    return commands


def readme_commands() -> list[list[str]]:
    """The `python -m training.*` commands of the README's bash blocks, in order."""
    return [words for language, code in readme_blocks() if language == "bash"
            for words in block_commands(code)
            if words[:2] == ["python", "-m"] and words[2].startswith("training.")]


def shortened(words: list[str], extractor: Path) -> list[str]:
    """A README command with the flags the README names for trying it quickly."""
    module, rest = words[2], words[3:]
    if module == "training.train" and "--steps" in rest:
        return words + ["--steps", "2"]
    if module in ("training.fid_stats", "training.evaluate"):
        return words + ["--num", "32", "--extractor", str(extractor)]
    if module == "training.analyze" and rest[0] != "init-variance":
        return words + ["--steps", "2"]
    return words


def test_the_readme_names_every_command():
    modules = {words[2] for words in readme_commands()}
    assert modules == {"training.train", "training.generate", "training.evaluate",
                       "training.fid_stats", "training.analyze"}


def test_every_bash_command_is_run_here_or_by_ci():
    for language, code in readme_blocks():
        for words in block_commands(code) if language == "bash" else []:
            command = shlex.join(words)
            assert command.startswith(("python -m training.", *_RUN_BY_CI)), command


def test_the_readme_is_a_guide_that_shows_the_library_first():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 285
    python_blocks = [code for language, code in readme_blocks(text) if language == "python"]
    assert "from keras_bssn" in python_blocks[0] and "from training" not in python_blocks[0]
    assert text.index("## The library in your own model") < text.index("## The main job")


def test_readme_blocks_are_found_in_order():
    text = "```bash\npython -m training.train --a \\\n  --b && echo x\n```\n```python\nprint(1)\n```"
    assert readme_blocks(text) == [("bash", "python -m training.train --a \\\n  --b && echo x\n"),
                                   ("python", "print(1)\n")]
    assert block_commands(readme_blocks(text)[0][1]) == [
        ["python", "-m", "training.train", "--a", "--b"], ["echo", "x"]]


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared beside the checkout")
def test_every_readme_block_runs_as_written(tmp_path):
    # A checkout of our own: the blocks write runs/, saved_models/ and files into it.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("training", "keras_bssn", "tests", "examples"):
        (checkout / name).symlink_to(REPO / name)
    (tmp_path / "shared").symlink_to(SHARED)
    extractor = tmp_path / "features.keras"
    tiny_feature_model().save(extractor)
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras-home"),
           "PYTHONPATH": str(checkout)}
    env.pop("KERAS_BSSN_INCEPTION_GRAPH", None)
    ran = 0
    for index, (language, code) in enumerate(readme_blocks()):
        if language == "python":
            script = tmp_path / f"block{index}.py"
            script.write_text(code)
            runs = [[sys.executable, str(script)]]
        else:
            runs = [[sys.executable, *shortened(words, extractor)[1:]]
                    for words in block_commands(code)
                    if words[:2] == ["python", "-m"] and words[2].startswith("training.")]
        for command in runs:
            result = subprocess.run(command, cwd=checkout, env=env, capture_output=True,
                                    text=True, timeout=900)
            shown = code if language == "python" else shlex.join(command)
            assert result.returncode == 0, f"{shown}\n{result.stderr[-3000:]}"
            assert "Traceback" not in result.stderr, shown
            ran += 1
    assert ran >= 12
    assert (checkout / "saved_models" / "cifar10-cnn-bssn" / "saved_model.pb").exists()
    assert (checkout / "grid.png").exists() and (checkout / "cifar10_train.npz").exists()
    assert (checkout / "discriminator.keras").exists()
