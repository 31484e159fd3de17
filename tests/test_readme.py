"""Every command the README shows runs as written, in the README's order, on a checkout with
`../shared` beside it: shortened only by the flags the README names for trying them quickly."""

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

pytestmark = pytest.mark.slow


def readme_commands() -> list[list[str]]:
    """The `python -m training.*` commands of the README's bash blocks, in order."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:2] == ["python", "-m"] and words[2].startswith("training."):
                    commands.append(words)
    return commands


def shortened(words: list[str], extractor: Path) -> list[str]:
    """A README command with the flags the README names for trying it quickly."""
    module, rest = words[2], words[3:]
    if module == "training.train" and "--steps" in rest:
        return words + ["--steps", "2"]
    if module in ("training.fid_stats", "training.evaluate"):
        return words + ["--num", "32", "--extractor", str(extractor)]
    if module == "training.analyze":
        extra = {"gradients": ["--steps", "2", "--seeds", "0", "--norms", "sn"],
                 "sweep": ["--steps", "2", "--eval-every", "2", "--kid-samples", "64",
                           "--kid-real", "64", "--seeds", "0", "--norms", "sn", "--scales", "1.0"],
                 "collapse": ["--steps", "2", "--seeds", "0", "--cells", "bssn:1.2:official"],
                 "artifacts": ["--steps", "0", "2"]}
        return words + extra.get(rest[0], [])
    return words


def test_the_readme_names_every_command():
    modules = {words[2] for words in readme_commands()}
    assert modules == {"training.train", "training.generate", "training.evaluate",
                       "training.fid_stats", "training.analyze"}


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared beside the checkout")
def test_every_readme_command_runs_as_written(tmp_path):
    # A checkout of our own: the commands write runs/, saved_models/ and files into it.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("training", "keras_bssn", "tests"):
        (checkout / name).symlink_to(REPO / name)
    (tmp_path / "shared").symlink_to(SHARED)
    extractor = tmp_path / "features.keras"
    tiny_feature_model().save(extractor)
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras-home"),
           "PYTHONPATH": str(checkout)}
    env.pop("KERAS_BSSN_INCEPTION_GRAPH", None)
    for words in readme_commands():
        command = shortened(words, extractor)
        result = subprocess.run([sys.executable, *command[1:]], cwd=checkout, env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{shlex.join(command)}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, shlex.join(command)
    assert (checkout / "saved_models" / "cifar10-cnn-bssn" / "saved_model.pb").exists()
    assert (checkout / "grid.png").exists() and (checkout / "cifar10_train.npz").exists()
