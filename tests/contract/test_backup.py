"""Contract §1 and §3: `backup` writes a whole snapshot of the data dir and keeps `backup.keep`;
`restore` puts one back, refusing while the service runs and refusing a hostile archive."""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
from pathlib import Path

import pytest

from services import Service

pytestmark = pytest.mark.slow

WRITTEN = re.compile(r"^backup written: (?P<path>\S+) \((?P<files>\d+) files, (?P<removed>\d+) old snapshots removed\)$")


def snapshot_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(name)}-[0-9]{{8}}T[0-9]{{6}}\.[0-9]{{3}}Z\.tar\.gz$")


def tree(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry below root: relative path -> (kind, content or link target)."""
    out: dict[str, tuple[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path).encode())
            elif path.is_dir():
                out[rel] = ("dir", b"")
            else:
                out[rel] = ("file", path.read_bytes())
    return out


def fill(data_dir: Path) -> None:
    """A data dir with what services keep: nested dirs, binary, empty and long-named files, a link."""
    (data_dir / "state" / "deep" / "er").mkdir(parents=True)
    (data_dir / "last_value.json").write_text('{"value": 42.0}\n')
    (data_dir / "state" / "blob.bin").write_bytes(bytes(range(256)) * 300)
    (data_dir / "state" / "empty").write_bytes(b"")
    (data_dir / "state" / "deep" / "er" / ("long-name-" * 12 + ".txt")).write_text("long\n")
    (data_dir / "state" / "current").symlink_to("blob.bin")
    (data_dir / "empty-dir").mkdir()


def backup(svc: Service, env: dict[str, str] | None = None) -> re.Match[str]:
    proc = svc.cli("backup", env=env)
    assert proc.returncode == 0, f"backup failed with {proc.returncode}: {proc.stderr}"
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"backup must print one line: {proc.stdout!r}"
    match = WRITTEN.match(lines[0])
    assert match, f"unexpected backup line {lines[0]!r}"
    return match


def test_backup_then_restore_gives_back_the_same_tree_byte_for_byte(spawn):
    svc = spawn()
    fill(svc.data_dir)
    original = tree(svc.data_dir)

    written = backup(svc)

    snapshot = Path(written["path"])
    assert snapshot.parent == svc.prefix / "backup" / svc.name
    assert snapshot_pattern(svc.name).match(snapshot.name), snapshot.name
    assert written["files"] == "4" and written["removed"] == "0"
    assert [p.name for p in snapshot.parent.iterdir()] == [snapshot.name], "no temporary file may be left"

    # the data changes after the backup, then the snapshot is restored
    (svc.data_dir / "last_value.json").write_text('{"value": 7.0}\n')
    (svc.data_dir / "state" / "blob.bin").unlink()
    (svc.data_dir / "new-file").write_text("written after the backup\n")
    changed = tree(svc.data_dir)

    proc = svc.cli("restore", str(snapshot))

    assert proc.returncode == 0, proc.stderr
    previous = Path(f"{svc.data_dir}.before-restore")
    assert proc.stdout == (
        f"restored {snapshot} into {svc.data_dir}; the data it replaced is in {previous}\n"
    )
    assert tree(svc.data_dir) == original
    assert tree(previous) == changed, "the replaced data is kept beside the data dir"
    assert oct(svc.data_dir.stat().st_mode & 0o777) == oct(0o750)
    assert sorted(p.name for p in svc.data_dir.parent.iterdir()) == sorted(
        [svc.data_dir.name, previous.name]
    ), "no staging directory may be left"
    assert not svc.pid_file.exists(), "restore holds the PID file while it works, then removes it"


def test_the_service_starts_on_restored_data(spawn):
    svc = spawn()
    fill(svc.data_dir)
    snapshot = backup(svc)["path"]
    assert svc.cli("restore", snapshot).returncode == 0

    svc.start()

    assert svc.stop() == 0
    assert (svc.data_dir / "state" / "blob.bin").read_bytes() == bytes(range(256)) * 300


def test_retention_keeps_the_newest_snapshots_and_nothing_else_is_touched(spawn):
    svc = spawn(settings={"BACKUP__KEEP": "2"})
    fill(svc.data_dir)
    backup_dir = svc.prefix / "backup" / svc.name
    backup_dir.mkdir(parents=True)
    # files that are not snapshots stay, whatever their age
    others = ["notes.txt", f"{svc.name}-manual.tar.gz", "other-service-20200101T000000.000Z.tar.gz"]
    for name in others:
        (backup_dir / name).write_text("keep me\n")

    made = [Path(backup(svc)["path"]).name for _ in range(4)]
    last = backup(svc)

    assert len(set(made)) == 4
    assert last["removed"] == "1"
    snapshots = sorted(p.name for p in backup_dir.iterdir() if snapshot_pattern(svc.name).match(p.name))
    assert snapshots == sorted([made[-1], Path(last["path"]).name])
    assert all((backup_dir / name).exists() for name in others)


def test_backup_dir_is_a_key_and_prefix_is_expanded(spawn):
    svc = spawn(settings={"BACKUP__DIR": "${PREFIX}/elsewhere"})
    fill(svc.data_dir)

    written = backup(svc)

    assert Path(written["path"]).parent == svc.prefix / "elsewhere"


def test_backup_without_a_data_dir_fails_with_exit_2(spawn):
    svc = spawn()

    proc = svc.cli("backup")

    assert proc.returncode == 2
    assert proc.stderr == f"backup error: data dir {svc.data_dir} does not exist; nothing to back up\n"
    assert proc.stdout == ""


def test_backup_dir_inside_the_data_dir_is_refused(spawn):
    svc = spawn()
    svc.settings["BACKUP__DIR"] = f"{svc.data_dir}/backups"
    fill(svc.data_dir)

    proc = svc.cli("backup")

    assert proc.returncode == 2
    assert proc.stderr == (
        f"backup error: backup dir {svc.data_dir}/backups is inside data dir {svc.data_dir}; choose another backup.dir\n"
    )
    assert not (svc.data_dir / "backups").exists()


def test_restore_is_refused_while_the_service_runs(spawn):
    svc = spawn()
    fill(svc.data_dir)
    snapshot = backup(svc)["path"]
    svc.start()
    before = tree(svc.data_dir)

    proc = svc.cli("restore", snapshot)

    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"restore error: the service is running (PID file {svc.pid_file} is held by process {svc.pid}); "
        "stop it first"
    )
    assert proc.stdout == ""
    assert tree(svc.data_dir) == before
    assert not Path(f"{svc.data_dir}.before-restore").exists()
    assert svc.pid_file.read_text() == f"{svc.pid}\n", "the running service keeps its PID file"
    assert svc.get("/.well-known/live").status == 200
    assert svc.stop() == 0


def test_restore_takes_over_a_stale_pid_file(spawn):
    svc = spawn()
    fill(svc.data_dir)
    snapshot = backup(svc)["path"]
    svc.pid_file.parent.mkdir(parents=True)
    svc.pid_file.write_text("999999\n")

    proc = svc.cli("restore", snapshot)

    assert proc.returncode == 0, proc.stderr
    assert "taking over stale PID file" in proc.stderr
    assert not svc.pid_file.exists()


def _tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


HOSTILE = {
    "dot-dot": ("../escaped.txt", _member("../escaped.txt"), "leads outside the data dir"),
    "dot-dot-inside": ("a/../../escaped.txt", _member("a/../../escaped.txt"), "leads outside the data dir"),
    "absolute": ("{tmp}/absolute.txt", None, "has an absolute path"),
    "absolute-link": ("etc", _member("etc", tarfile.SYMTYPE, link="/etc"), "links outside the data dir"),
    "escaping-link": (
        "sub/up",
        _member("sub/up", tarfile.SYMTYPE, link="../../outside"),
        "links outside the data dir",
    ),
    "hard-link": ("hard", _member("hard", tarfile.LNKTYPE, link="ok.txt"), "is not a file, directory or symbolic link"),
    "fifo": ("pipe", _member("pipe", tarfile.FIFOTYPE), "is not a file, directory or symbolic link"),
    "device": ("disk", _member("disk", tarfile.BLKTYPE), "is not a file, directory or symbolic link"),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_archive_is_refused_and_nothing_changes(spawn, tmp_path, case):
    svc = spawn()
    fill(svc.data_dir)
    before = tree(svc.data_dir)
    name, member, problem = HOSTILE[case]
    if member is None:
        name = name.format(tmp=tmp_path)
        member = _member(name)
    # a harmless member first: a refusal must come before anything is extracted
    snapshot = tmp_path / f"{svc.name}-hostile.tar.gz"
    snapshot.write_bytes(_tar_gz([_member("ok.txt"), member]))

    proc = svc.cli("restore", str(snapshot))

    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.splitlines()[-1] == (
        f"restore error: {snapshot} is refused: member {name} {problem}; nothing was changed"
    )
    assert tree(svc.data_dir) == before
    assert sorted(p.name for p in svc.data_dir.parent.iterdir()) == [svc.data_dir.name]
    assert not (svc.prefix / "escaped.txt").exists() and not (svc.prefix / "data" / "escaped.txt").exists()
    assert not (tmp_path / "absolute.txt").exists()


def _corrupt(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "flipped":
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
    if how == "not-gzip":
        return b"this is not an archive\n" * 10
    if how == "gzip-not-tar":
        return gzip.compress(b"plain text, not a tar archive\n" * 40)
    raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "flipped", "not-gzip", "gzip-not-tar"])
def test_corrupted_snapshot_is_refused_and_nothing_changes(spawn, tmp_path, how):
    svc = spawn()
    fill(svc.data_dir)
    good = Path(backup(svc)["path"]).read_bytes()
    before = tree(svc.data_dir)
    snapshot = tmp_path / f"{svc.name}-{how}.tar.gz"
    snapshot.write_bytes(_corrupt(good, how))

    proc = svc.cli("restore", str(snapshot))

    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.splitlines()[-1] == (
        f"restore error: {snapshot} is not a readable snapshot (a .tar.gz archive); nothing was changed"
    )
    assert tree(svc.data_dir) == before
    assert sorted(p.name for p in svc.data_dir.parent.iterdir()) == [svc.data_dir.name]


def test_restore_of_a_missing_snapshot_fails_with_exit_2(spawn, tmp_path):
    svc = spawn()
    missing = tmp_path / "nope.tar.gz"

    proc = svc.cli("restore", str(missing))

    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == f"restore error: snapshot {missing} does not exist or is not a file"


@pytest.mark.parametrize("args", [["restore"], ["restore", "a", "b"], ["backup", "extra"]])
def test_bad_usage_of_backup_and_restore_exits_1(spawn, args):
    proc = spawn().cli(*args)

    assert proc.returncode == 1, proc.stderr
    assert "usage" in proc.stderr.lower()
