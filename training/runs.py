"""Run folders: the configuration a run was started with, the lock that keeps two processes
apart, and the marker a study leaves on a run it has finished.

A run folder (`runs/<preset>` by default) holds `config.json`, `metrics.csv`, `logs/`,
`samples/` and `checkpoints/`. Everything here checks before it writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
from typing import Any

from training.errors import OutputPathError, RunFolderError
from training.images import atomic_writer
from training.presets import RESUMABLE_CHANGES, TrainConfig, upgrade_saved

# Named when the sweep was the only study; kept so that finished runs stay finished.
STATUS_FILE = "sweep_status.json"


def config_changes(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """`setting: old -> new` for every setting that differs and cannot change on a resume."""
    saved = upgrade_saved(saved)  # settings added or renamed since the run began
    current = dataclasses.asdict(config)
    return [f"{key}: {saved.get(key)!r} -> {current[key]!r}" for key in sorted(current)
            if key not in RESUMABLE_CHANGES and saved.get(key) != current[key]]


def check_run_folder(run_dir: pathlib.Path, config: TrainConfig, force: bool) -> None:
    """Checks that a resumed run trains the same thing (`force` allows a change).

    Raises:
        RunFolderError: the folder holds a run with another configuration and not `force`.
    """
    config_path = run_dir / "config.json"
    if config_path.exists():
        changes = config_changes(_read_config_file(config_path), config)
        if changes and not force:
            raise RunFolderError(
                f"{run_dir} holds a run with a different configuration:\n  "
                + "\n  ".join(changes)
                + "\nUse another --out for a new run, or --force to resume with the new "
                "settings.")


def write_config(run_dir: pathlib.Path, config: TrainConfig) -> None:
    """Records the configuration the run's checkpoints are trained with (`config.json`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_writer(run_dir / "config.json") as file:
        file.write(config.to_json().encode())


def saved_config(run_dir: pathlib.Path) -> TrainConfig:
    """The configuration the run in `run_dir` was trained with.

    Raises:
        RunFolderError: `run_dir` holds no run.
    """
    path = run_dir / "config.json"
    if not path.exists():
        raise RunFolderError(f"{run_dir} holds no run (no config.json); give the --out of a "
                             "run that has trained.")
    return TrainConfig.from_dict(_read_config_file(path))


def _read_config_file(path: pathlib.Path) -> dict[str, Any]:
    """The settings in a run's `config.json`.

    Raises:
        RunFolderError: the file is damaged (not a JSON object).
    """
    try:
        values = json.loads(path.read_text())
        problem = None if isinstance(values, dict) else "not a JSON object"
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        problem = str(error)
    if problem:
        raise RunFolderError(
            f"{path} is damaged ({problem}). Delete it to resume the run's checkpoints with "
            "the command's settings (they must be the ones the run was trained with), or give "
            "another --out for a new run.")
    return values


def check_writable_folder(folder: str | os.PathLike, flag: str) -> None:
    """Checks, before any work, that `folder` is a folder this process can write in, or can
    be made one; writes nothing there.

    Raises:
        OutputPathError: it is a file, lies under one, or cannot be written (read-only).
    """
    existing = pathlib.Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{flag} {folder}: {existing} is a file, not a folder; give "
                              f"another {flag}.")
    try:
        # Trying is the sure test: `os.access` can be wrong (root squash, ACLs).
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise OutputPathError(f"{flag} {folder}: cannot write in {existing} "
                              f"({error.strerror}); give another {flag}, or make it "
                              "writable.") from None


class RunFolderLock:
    """An exclusive lock on a run folder (`.lock`, `flock`), held while a run writes to it.

    The kernel drops the lock when its process ends, however it ends (kill -9 included), so a
    stale lock never blocks a resume.

    Raises:
        RunFolderError: another process holds the lock.
    """

    def __init__(self, run_dir: pathlib.Path):
        import fcntl

        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.file = open(run_dir / ".lock", "a+")
        except OSError as error:
            raise RunFolderError(f"cannot write the run folder {run_dir} ({error.strerror}); "
                                 "give an --out in a writable place.") from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise RunFolderError(
                f"{run_dir} is in use by another training run ({holder}). Wait for it to end, "
                "or give another --out.") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}")
        self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()  # closing releases the lock


def finished_status(run_dir: pathlib.Path, steps: int) -> str:
    """"finished" / "diverged" once a study's run was trained to `steps`, else "incomplete"."""
    path = run_dir / STATUS_FILE
    if not path.exists():
        return "incomplete"
    status = json.loads(path.read_text())
    return status["status"] if status["steps"] >= steps else "incomplete"


def mark_finished(run_dir: pathlib.Path, status: str, steps: int) -> None:
    """Records that a study's run ended ("finished" or "diverged") after `steps` steps."""
    with atomic_writer(run_dir / STATUS_FILE) as file:
        file.write(json.dumps({"status": status, "steps": steps}).encode())
