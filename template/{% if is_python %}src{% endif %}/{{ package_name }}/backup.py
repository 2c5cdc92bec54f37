"""Snapshots of `paths.data_dir`: `backup` writes one, `restore` puts one back.

    order-router backup    ->  ${PREFIX}/backup/order-router/order-router-20261208T010203.456Z.tar.gz
    order-router restore ${PREFIX}/backup/order-router/order-router-20261208T010203.456Z.tar.gz

`backup` writes the archive under a temporary name in `backup.dir`, fsyncs it, then renames
it, so that a snapshot either is whole or is not there. A file that changes while it is
copied (its size or modification time differ before and after) makes the whole copy start
again, at most three times; then the backup fails. After a good snapshot, only the newest
`backup.keep` files named like a snapshot are kept.

`restore` refuses while the PID file is held by a live process, and holds it itself so that
the service cannot start half-way. It reads the whole archive first and refuses absolute
paths, `..`, links leading outside and anything but files, directories and links; then it
extracts into a sibling directory and swaps it into place, keeping the data it replaces as
`<data_dir>.before-restore` (the one of an earlier restore is removed).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import about, directories, pidfile
from .config import Settings
from .logging import get_logger

log = get_logger(__name__)

ATTEMPTS = 3
SNAPSHOT = re.compile(rf"^{re.escape(about.NAME)}-[0-9]{{8}}T[0-9]{{6}}\.[0-9]{{3}}Z\.tar\.gz$")
BEFORE_RESTORE = ".before-restore"


class BackupError(Exception):
    """The backup or the restore failed, or was refused; the message says why (exit 2)."""


class _Changed(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


@dataclass(frozen=True)
class Written:
    path: str
    files: int
    removed: int


def _trimmed(path: str) -> str:
    return path.rstrip("/") or "/"


def snapshot_name(now: datetime) -> str:
    """`<svc>-YYYYMMDDTHHMMSS.fffZ.tar.gz`, in UTC: names sort as the snapshots' ages."""
    return f"{about.NAME}-{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z.tar.gz"


def backup(settings: Settings, now: datetime | None = None) -> Written:
    """Write a snapshot of the data dir to the backup dir, then apply the retention."""
    data_dir = _trimmed(settings.paths.data_dir)
    backup_dir = _trimmed(settings.backup.dir)
    if not os.path.isdir(data_dir):
        raise BackupError(f"data dir {data_dir} does not exist; nothing to back up")
    if backup_dir == data_dir or backup_dir.startswith(data_dir + "/"):
        raise BackupError(f"backup dir {backup_dir} is inside data dir {data_dir}; choose another backup.dir")
    try:
        os.makedirs(backup_dir, mode=directories.DATA_DIR_MODE, exist_ok=True)
    except OSError as error:
        raise BackupError(f"cannot create backup dir {backup_dir}: {error.strerror}") from None
    name = snapshot_name(now or datetime.now(UTC))
    final = f"{backup_dir}/{name}"
    temporary = f"{backup_dir}/.{name}.tmp"
    if os.path.lexists(final):
        raise BackupError(f"snapshot {final} already exists")
    try:
        files = _write_consistent(data_dir, temporary)
        os.rename(temporary, final)
        _fsync_dir(backup_dir)
    except OSError as error:
        raise BackupError(f"cannot write snapshot {final}: {error.strerror or error}") from None
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)
    return Written(final, files, _prune(backup_dir, settings.backup.keep))


def _write_consistent(data_dir: str, temporary: str) -> int:
    changed = ""
    for _ in range(ATTEMPTS):
        try:
            return _write(data_dir, temporary)
        except _Changed as error:
            changed = error.path
    raise BackupError(
        f"{changed} changed while it was copied, {ATTEMPTS} times; no snapshot written "
        "(stop what writes it, or try again)"
    )


def _write(data_dir: str, temporary: str) -> int:
    """The archive of the data dir in `temporary`, fsynced; the number of files in it."""
    files = 0
    with open(temporary, "wb") as raw:
        with (
            gzip.GzipFile(fileobj=raw, mode="wb") as packed,
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for root, dirs, names in os.walk(data_dir):
                dirs.sort()
                for name in sorted(dirs + names):
                    path = os.path.join(root, name)
                    member = os.path.relpath(path, data_dir)
                    files += _add(tar, path, member)
        raw.flush()
        os.fsync(raw.fileno())
    return files


def _add(tar: tarfile.TarFile, path: str, member: str) -> int:
    """Add one entry (never followed if a link); 1 for a regular file, else 0."""
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        raise _Changed(path) from None
    info = tarfile.TarInfo(member)
    info.mode = stat.S_IMODE(before.st_mode)
    info.mtime = int(before.st_mtime)
    if stat.S_ISDIR(before.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        return 0
    if stat.S_ISLNK(before.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        tar.addfile(info)
        return 0
    if not stat.S_ISREG(before.st_mode):
        raise BackupError(f"{path} is not a regular file, directory or link; it cannot be backed up")
    try:
        with open(path, "rb", buffering=0) as source:
            info.size = before.st_size
            tar.addfile(info, source)
        after = os.lstat(path)
    except FileNotFoundError:
        raise _Changed(path) from None
    except OSError as error:
        # tarfile reads exactly `size` bytes: a file that shrank meanwhile ends too early.
        if "unexpected end of data" in str(error):
            raise _Changed(path) from None
        raise
    if (after.st_size, after.st_mtime_ns, after.st_ino) != (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    ):
        raise _Changed(path)
    return 1


def _prune(backup_dir: str, keep: int) -> int:
    """Remove all but the newest `keep` snapshots (files named like one); how many went."""
    names = sorted(name for name in os.listdir(backup_dir) if SNAPSHOT.match(name))
    old = names[: max(len(names) - keep, 0)]
    for name in old:
        os.unlink(f"{backup_dir}/{name}")
    if old:
        _fsync_dir(backup_dir)
    return len(old)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def restore(settings: Settings, snapshot: str) -> str:
    """Put the snapshot in place of the data dir; the line to print. Raises BackupError."""
    pid_file = Path(settings.paths.pid_file)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(pidfile.held(pid_file))
        except pidfile.PidFileHeld as held:
            log.error("PID file is held by a live process", path=held.path, pid=held.pid)
            raise BackupError(
                f"the service is running (PID file {held.path} is held by process {held.pid}); stop it first"
            ) from None
        except OSError as error:
            raise BackupError(f"cannot use PID file {pid_file}: {error.strerror or error}") from None
        return _restore(_trimmed(settings.paths.data_dir), snapshot)


def _restore(data_dir: str, snapshot: str) -> str:
    if not os.path.isfile(snapshot):
        raise BackupError(f"snapshot {snapshot} does not exist or is not a file")
    members = _checked_members(snapshot)
    parent, name = os.path.split(data_dir)
    staging = os.path.join(parent, f".{name}.restore-{os.getpid()}")
    previous = data_dir + BEFORE_RESTORE
    try:
        if os.path.lexists(staging):
            shutil.rmtree(staging)
        os.makedirs(staging, mode=0o700)
        with tarfile.open(snapshot, "r:gz") as tar:
            # The members were checked above; the "data" filter refuses the same dangers again.
            tar.extractall(staging, members=members, filter="data")
        os.chmod(staging, directories.DATA_DIR_MODE)
        replaced = os.path.lexists(data_dir)
        if replaced:
            if os.path.lexists(previous):
                shutil.rmtree(previous)
            os.rename(data_dir, previous)
        os.rename(staging, data_dir)
        _fsync_dir(parent or ".")
    except (OSError, tarfile.TarError) as error:
        raise BackupError(
            f"cannot restore {snapshot} into {data_dir}: {getattr(error, 'strerror', None) or error}"
        ) from None
    finally:
        if os.path.lexists(staging):
            shutil.rmtree(staging, ignore_errors=True)
    line = f"restored {snapshot} into {data_dir}"
    return f"{line}; the data it replaced is in {previous}" if replaced else line


def _checked_members(snapshot: str) -> list[tarfile.TarInfo]:
    """Every member of the snapshot, after reading it whole; BackupError on the first bad one."""
    unreadable = BackupError(
        f"{snapshot} is not a readable snapshot (a .tar.gz archive); nothing was changed"
    )
    try:
        # The whole stream first: a truncated or altered archive fails its gzip checksum here.
        with gzip.open(snapshot, "rb") as stream:
            while stream.read(1 << 20):
                pass
        with tarfile.open(snapshot, "r:gz") as tar:
            members = tar.getmembers()
    except (OSError, EOFError, zlib.error, tarfile.TarError):
        raise unreadable from None
    for member in members:
        problem = _problem(member)
        if problem:
            raise BackupError(f"{snapshot} is refused: member {member.name} {problem}; nothing was changed")
    return members


def _problem(member: tarfile.TarInfo) -> str:
    """What is wrong with a member, or "" when it may be extracted."""
    name = member.name
    if name.startswith("/"):
        return "has an absolute path"
    if ".." in name.split("/"):
        return "leads outside the data dir"
    if member.isdir() or member.isfile():
        return ""
    if member.issym():
        target = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            return "links outside the data dir"
        return ""
    return "is not a file, directory or symbolic link"
