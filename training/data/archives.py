"""Archives of image folders (.tar.gz, .tgz, .tar, .tar.bz2, .tar.xz), extracted once into a cache.

Each archive is extracted into `$KERAS_BSSN_CACHE/datasets` (default
`~/.cache/keras_bssn/datasets`), in a staging folder renamed into place when complete, so a
reader never sees a half-extracted entry. A process killed mid-extraction leaves its staging
folder behind; the next extraction removes such folders once no live process can be writing
them (`_is_stale`).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import shutil
import socket
import tarfile
import tempfile
import time
import zlib
from pathlib import Path, PurePosixPath

from training.errors import DataError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
_CACHE_ENV = "KERAS_BSSN_CACHE"

# Staging folders are named <entry>.partial-<pid space>-<pid>-<random>, where the entry name
# ends in a 12-digit hex key. Folders of older versions lack the pid space and pid.
_STAGING_NAME = re.compile(
    r"^.+-[0-9a-f]{12}\.partial-(?:(?P<space>[0-9a-f]{8})-(?P<pid>\d+)-)?[a-z0-9_]+$"
)
# A staging folder whose owner cannot be checked is stale once nothing in it has changed for
# this long; a live extraction writes several files a second.
_STALE_AFTER_SECONDS = 3600


def is_archive(path: Path) -> bool:
    """Whether `path` is named like an archive this module extracts."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_once(archive: Path) -> Path:
    """Extracts `archive` into the cache, unless an earlier call already did.

    Extraction goes to a staging folder beside the cache entry, renamed into place when
    complete, so an interrupted extraction never leaves a half-filled entry behind. Stale
    staging folders of killed extractions are removed first.

    Args:
        archive: a tar archive, possibly compressed (see `ARCHIVE_SUFFIXES`).

    Returns:
        The folder holding the archive's contents.

    Raises:
        ValueError: the archive cannot be read, or has a member outside its folder.
    """
    target = cache_entry(archive)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(target.parent)
    prefix = f"{target.name}.partial-{_pid_space()}-{os.getpid()}-"
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        _extract_archive(archive, staging)
        try:
            os.replace(staging, target)
        except OSError:
            # Another process (e.g. another worker) finished the same extraction first.
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def cache_entry(archive: Path) -> Path:
    """The folder `extract_once` extracts `archive` into (it exists once extracted)."""
    return _cache_folder() / f"{_archive_stem(archive)}-{path_key(archive)}"


def path_key(path: Path) -> str:
    """A digest of the resolved path, size and modification time of a file or folder.

    A changed or replaced file gets a new key, and so a new cache entry instead of a stale one.
    """
    stat = path.stat()
    identity = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def _cache_folder() -> Path:
    root = os.environ.get(_CACHE_ENV) or Path.home() / ".cache" / "keras_bssn"
    return Path(root).expanduser() / "datasets"


def _archive_stem(archive: Path) -> str:
    name = archive.name
    suffix = next(suffix for suffix in ARCHIVE_SUFFIXES if name.lower().endswith(suffix))
    return name[: -len(suffix)]


def _pid_space() -> str:
    """Names the set of processes whose pids this process can check: host and pid namespace.

    A cache shared between machines, or between containers of one machine, holds staging
    folders whose pids mean nothing here; the namespace tells containers with one hostname
    apart.
    """
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # No /proc (macOS): no pid namespaces either, so the host suffices.
        namespace = ""
    identity = f"{socket.gethostname()}\0{namespace}"
    return hashlib.sha256(identity.encode()).hexdigest()[:8]


def _remove_stale_staging(cache: Path) -> None:
    for entry in cache.iterdir():
        match = _STAGING_NAME.match(entry.name)
        if match and entry.is_dir() and _is_stale(entry, match["space"], match["pid"]):
            shutil.rmtree(entry, ignore_errors=True)  # Another process may be removing it too.


def _is_stale(staging: Path, space: str | None, pid: str | None) -> bool:
    """Whether no live process can still be writing `staging`.

    A folder made in this pid space is stale exactly when its process has exited (a reused
    pid only delays the clean-up). Any other (made on another machine or in another
    container sharing the cache, or by an older version that did not record its pid) is
    stale once nothing in it has changed for `_STALE_AFTER_SECONDS`.
    """
    # On Windows os.kill(pid, 0) would end the process instead of checking it.
    if os.name == "posix" and space == _pid_space() and pid is not None:
        return not _is_running(int(pid))
    return time.time() - _last_change(staging) > _STALE_AFTER_SECONDS


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # Signal 0 checks the pid without signalling it.
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, but another user's.
        return True
    return True


def _last_change(folder: Path) -> float:
    """The newest modification time of `folder` and everything in it."""
    newest = folder.stat().st_mtime
    for parent, subfolders, files in os.walk(folder):
        for name in (*subfolders, *files):
            with contextlib.suppress(FileNotFoundError):  # Removed while we look.
                newest = max(newest, os.stat(os.path.join(parent, name)).st_mtime)
    return newest


def _extract_archive(archive: Path, destination: Path) -> None:
    """Writes the archive's regular files and folders under `destination`.

    Links and special files are skipped. Much faster than `TarFile.extractall` for many
    small files (CIFAR-10's 60,000), which also restores owners and modes not needed here.
    """
    made_folders = {destination}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                if not (member.isfile() or member.isdir()):
                    continue
                path = destination / _safe_member_path(archive, member.name)
                folder = path if member.isdir() else path.parent
                if folder not in made_folders:
                    folder.mkdir(parents=True, exist_ok=True)
                    made_folders.add(folder)
                if member.isfile():
                    with tar.extractfile(member) as source, open(path, "wb") as copy:
                        shutil.copyfileobj(source, copy)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(f"Could not read archive {archive}: {error}") from error


def _safe_member_path(archive: Path, name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"Archive {archive} has a member outside its folder: {name!r}.")
    return path
