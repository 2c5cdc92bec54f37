//! Snapshots of `paths.data_dir`: `backup` writes one, `restore` puts one back.
//!
//! `order-router backup` writes
//! `${PREFIX}/backup/order-router/order-router-20261208T010203.456Z.tar.gz`;
//! `order-router restore <that file>` puts it back.
//!
//! `backup` writes the archive under a temporary name in `backup.dir`, fsyncs it, then
//! renames it, so that a snapshot either is whole or is not there. A file that changes while
//! it is copied (its size or modification time differ before and after) makes the whole copy
//! start again, at most three times; then the backup fails. After a good snapshot, only the
//! newest `backup.keep` files named like a snapshot are kept.
//!
//! `restore` refuses while the PID file is held by a live process, and holds it itself so
//! that the service cannot start half-way. It reads the whole archive first and refuses
//! absolute paths, `..`, links leading outside and anything but files, directories and
//! links; then it extracts into a sibling directory and swaps it into place, keeping the data
//! it replaces as `<data_dir>.before-restore` (the one of an earlier restore is removed).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use thiserror::Error;
use time::OffsetDateTime;

use crate::config::{SERVICE_NAME, Settings};
use crate::directories::DATA_DIR_MODE;
use crate::pidfile::{PidFile, PidFileError};

const ATTEMPTS: usize = 3;
/// What the data dir that a restore replaced is renamed to: `<data_dir>.before-restore`.
pub const BEFORE_RESTORE: &str = ".before-restore";

/// The backup or the restore failed, or was refused; the message says why (exit 2).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct BackupError(String);

/// A snapshot written: its path, the files in it, the old snapshots removed.
#[derive(Debug)]
pub struct Written {
    pub path: String,
    pub files: usize,
    pub removed: usize,
}

/// Why one attempt at writing the archive stopped.
enum Failure {
    /// This file changed while it was copied: try again.
    Changed(String),
    Io(io::Error),
    Refused(BackupError),
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

/// The system's text for an error (`Permission denied`), without Rust's `(os error 13)`.
fn strerror(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn trimmed(path: &Path) -> String {
    let text = path.to_string_lossy();
    match text.trim_end_matches('/') {
        "" => "/".to_string(),
        trimmed => trimmed.to_string(),
    }
}

/// `<svc>-YYYYMMDDTHHMMSS.fffZ.tar.gz`, in UTC: names sort as the snapshots' ages.
pub fn snapshot_name(now: OffsetDateTime) -> String {
    format!(
        "{SERVICE_NAME}-{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z.tar.gz",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

/// A file name that `snapshot_name` could have written (retention removes only those).
pub fn is_snapshot(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix(SERVICE_NAME)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.strip_suffix("Z.tar.gz"))
    else {
        return false;
    };
    stamp.len() == 19
        && stamp.bytes().enumerate().all(|(i, c)| match i {
            8 => c == b'T',
            15 => c == b'.',
            _ => c.is_ascii_digit(),
        })
}

/// Writes a snapshot of the data dir to the backup dir, then applies the retention.
pub fn backup(settings: &Settings) -> Result<Written, BackupError> {
    let data_dir = trimmed(&settings.paths.data_dir);
    let backup_dir = trimmed(&settings.backup.dir);
    if !Path::new(&data_dir).is_dir() {
        return Err(BackupError(format!(
            "data dir {data_dir} does not exist; nothing to back up"
        )));
    }
    if backup_dir == data_dir || backup_dir.starts_with(&format!("{data_dir}/")) {
        return Err(BackupError(format!(
            "backup dir {backup_dir} is inside data dir {data_dir}; choose another backup.dir"
        )));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DATA_DIR_MODE)
        .create(&backup_dir)
        .map_err(|e| {
            BackupError(format!(
                "cannot create backup dir {backup_dir}: {}",
                strerror(&e)
            ))
        })?;
    let name = snapshot_name(OffsetDateTime::now_utc());
    let last = format!("{backup_dir}/{name}");
    let temporary = format!("{backup_dir}/.{name}.tmp");
    if fs::symlink_metadata(&last).is_ok() {
        return Err(BackupError(format!("snapshot {last} already exists")));
    }
    let written = write_consistent(&data_dir, &temporary).and_then(|files| {
        fs::rename(&temporary, &last)?;
        fsync_dir(Path::new(&backup_dir))?;
        Ok(files)
    });
    if fs::symlink_metadata(&temporary).is_ok() {
        let _ = fs::remove_file(&temporary);
    }
    let files = match written {
        Ok(files) => files,
        Err(Failure::Refused(error)) => return Err(error),
        Err(Failure::Changed(path)) => {
            return Err(BackupError(format!(
                "{path} changed while it was copied, {ATTEMPTS} times; no snapshot written (stop what writes it, or try again)"
            )));
        }
        Err(Failure::Io(e)) => {
            return Err(BackupError(format!(
                "cannot write snapshot {last}: {}",
                strerror(&e)
            )));
        }
    };
    let removed = prune(&backup_dir, settings.backup.keep as usize).map_err(|e| {
        BackupError(format!(
            "cannot remove old snapshots in {backup_dir}: {}",
            strerror(&e)
        ))
    })?;
    Ok(Written {
        path: last,
        files,
        removed,
    })
}

fn write_consistent(data_dir: &str, temporary: &str) -> Result<usize, Failure> {
    let mut result = Err(Failure::Changed(data_dir.to_string()));
    for _ in 0..ATTEMPTS {
        result = write(data_dir, temporary);
        if !matches!(result, Err(Failure::Changed(_))) {
            break;
        }
    }
    result
}

/// The archive of the data dir in `temporary`, fsynced; the number of files in it.
fn write(data_dir: &str, temporary: &str) -> Result<usize, Failure> {
    let file = File::create(temporary)?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    tar.follow_symlinks(false);
    let files = add_dir(&mut tar, data_dir, "")?;
    let file = tar.into_inner()?.finish()?;
    file.sync_all()?;
    Ok(files)
}

type Archive = tar::Builder<GzEncoder<File>>;

/// Adds the entries of `data_dir/relative` (sorted, links never followed); the files added.
fn add_dir(tar: &mut Archive, data_dir: &str, relative: &str) -> Result<usize, Failure> {
    let dir = if relative.is_empty() {
        data_dir.to_string()
    } else {
        format!("{data_dir}/{relative}")
    };
    let mut names: Vec<String> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<_>>()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Failure::Changed(dir)),
        Err(e) => return Err(e.into()),
    };
    names.sort();
    let mut files = 0;
    for name in names {
        let member = if relative.is_empty() {
            name
        } else {
            format!("{relative}/{name}")
        };
        files += add(tar, data_dir, &member)?;
    }
    Ok(files)
}

/// Adds one entry; 1 for a regular file, else 0.
fn add(tar: &mut Archive, data_dir: &str, member: &str) -> Result<usize, Failure> {
    let path = format!("{data_dir}/{member}");
    let changed = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => Failure::Changed(path.clone()),
        _ => Failure::Io(e),
    };
    let before = fs::symlink_metadata(&path).map_err(changed)?;
    let mut header = tar::Header::new_gnu();
    header.set_mode(before.mode() & 0o7777);
    header.set_mtime(u64::try_from(before.mtime()).unwrap_or(0));
    let kind = before.file_type();
    if kind.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        tar.append_data(&mut header, member, io::empty())?;
        return add_dir(tar, data_dir, member);
    }
    if kind.is_symlink() {
        let target = fs::read_link(&path).map_err(changed)?;
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        tar.append_link(&mut header, member, target)?;
        return Ok(0);
    }
    if !kind.is_file() {
        return Err(Failure::Refused(BackupError(format!(
            "{path} is not a regular file, directory or link; it cannot be backed up"
        ))));
    }
    let source = File::open(&path).map_err(changed)?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(before.len());
    let mut counted = Counted {
        inner: source.take(before.len()),
        read: 0,
    };
    tar.append_data(&mut header, member, &mut counted)?;
    let after = fs::symlink_metadata(&path).map_err(changed)?;
    let same = |m: &fs::Metadata| (m.len(), m.mtime(), m.mtime_nsec(), m.ino());
    if counted.read != before.len() || same(&after) != same(&before) {
        return Err(Failure::Changed(path));
    }
    Ok(1)
}

/// A reader that counts what it gives: a file that shrank while it was copied gives less
/// than its size, which `tar` would not notice.
struct Counted<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Removes all but the newest `keep` snapshots (files named like one); how many went.
fn prune(backup_dir: &str, keep: usize) -> io::Result<usize> {
    let mut names: Vec<String> = fs::read_dir(backup_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| is_snapshot(name))
        .collect();
    names.sort();
    let old = names.len().saturating_sub(keep);
    for name in &names[..old] {
        fs::remove_file(format!("{backup_dir}/{name}"))?;
    }
    if old > 0 {
        fsync_dir(Path::new(backup_dir))?;
    }
    Ok(old)
}

fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Puts the snapshot in place of the data dir; the line to print.
pub fn restore(settings: &Settings, snapshot: &Path) -> Result<String, BackupError> {
    // Held for the whole restore: the service cannot start on a half-restored data dir.
    let _pid_file = match PidFile::acquire(&settings.paths.pid_file) {
        Ok(held) => held,
        Err(PidFileError::Held { path, pid }) => {
            return Err(BackupError(format!(
                "the service is running (PID file {} is held by process {pid}); stop it first",
                path.display()
            )));
        }
        Err(PidFileError::Io { path, source }) => {
            return Err(BackupError(format!(
                "cannot use PID file {}: {}",
                path.display(),
                strerror(&source)
            )));
        }
    };
    let data_dir = trimmed(&settings.paths.data_dir);
    let shown = snapshot.display();
    if !snapshot.is_file() {
        return Err(BackupError(format!(
            "snapshot {shown} does not exist or is not a file"
        )));
    }
    check_members(snapshot)?;
    let target = Path::new(&data_dir);
    let parent = target.parent().unwrap_or(Path::new(""));
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let staging = parent.join(format!(".{name}.restore-{}", std::process::id()));
    let previous = format!("{data_dir}{BEFORE_RESTORE}");
    let swapped = swap_in(snapshot, &staging, target, Path::new(&previous));
    if fs::symlink_metadata(&staging).is_ok() {
        let _ = fs::remove_dir_all(&staging);
    }
    let replaced = swapped.map_err(|e| {
        // A refusal of the extractor carries no system error: say what it is about.
        let why = if e.raw_os_error().is_some() {
            strerror(&e)
        } else {
            "the archive could not be extracted".to_string()
        };
        BackupError(format!("cannot restore {shown} into {data_dir}: {why}"))
    })?;
    let line = format!("restored {shown} into {data_dir}");
    Ok(if replaced {
        format!("{line}; the data it replaced is in {previous}")
    } else {
        line
    })
}

/// Extracts into `staging`, then renames: the old data dir to `previous`, `staging` to the
/// data dir. Whether there was a data dir to replace.
fn swap_in(snapshot: &Path, staging: &Path, target: &Path, previous: &Path) -> io::Result<bool> {
    if fs::symlink_metadata(staging).is_ok() {
        fs::remove_dir_all(staging)?;
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(staging)?;
    let mut archive = tar::Archive::new(GzDecoder::new(File::open(snapshot)?));
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    // The members were checked before; `unpack` refuses `..` and writing through links again.
    archive
        .unpack(staging)
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
    fs::set_permissions(staging, fs::Permissions::from_mode(DATA_DIR_MODE))?;
    let replaced = fs::symlink_metadata(target).is_ok();
    if replaced {
        if fs::symlink_metadata(previous).is_ok() {
            fs::remove_dir_all(previous)?;
        }
        fs::rename(target, previous)?;
    }
    fs::rename(staging, target)?;
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty());
    fsync_dir(parent.unwrap_or(Path::new(".")))?;
    Ok(replaced)
}

/// Reads the whole snapshot and checks every member; the first bad one refuses it.
fn check_members(snapshot: &Path) -> Result<(), BackupError> {
    let shown = snapshot.display();
    let unreadable = || {
        BackupError(format!(
            "{shown} is not a readable snapshot (a .tar.gz archive); nothing was changed"
        ))
    };
    // The whole stream first: a truncated or altered archive fails its gzip checksum here.
    let stream = File::open(snapshot).map_err(|_| unreadable())?;
    io::copy(&mut GzDecoder::new(stream), &mut io::sink()).map_err(|_| unreadable())?;
    let stream = File::open(snapshot).map_err(|_| unreadable())?;
    let mut archive = tar::Archive::new(GzDecoder::new(stream));
    for entry in archive.entries().map_err(|_| unreadable())? {
        let entry = entry.map_err(|_| unreadable())?;
        let name = entry.path().map_err(|_| unreadable())?;
        let name = name.to_string_lossy();
        let name = match name.trim_end_matches('/') {
            "" => name.to_string(),
            trimmed => trimmed.to_string(),
        };
        let link = entry.link_name().map_err(|_| unreadable())?;
        let link = link.map(|l| l.to_string_lossy().into_owned());
        if let Some(problem) = problem(&name, entry.header().entry_type(), link.as_deref()) {
            return Err(BackupError(format!(
                "{shown} is refused: member {name} {problem}; nothing was changed"
            )));
        }
    }
    Ok(())
}

/// What is wrong with a member, or `None` when it may be extracted.
fn problem(name: &str, kind: tar::EntryType, link: Option<&str>) -> Option<&'static str> {
    if name.starts_with('/') {
        return Some("has an absolute path");
    }
    if name.split('/').any(|part| part == "..") {
        return Some("leads outside the data dir");
    }
    match kind {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => None,
        tar::EntryType::Symlink => {
            let target = link.unwrap_or("");
            let base = name.rsplit_once('/').map_or("", |(dir, _)| dir);
            if target.starts_with('/') || escapes(&format!("{base}/{target}")) {
                Some("links outside the data dir")
            } else {
                None
            }
        }
        _ => Some("is not a file, directory or symbolic link"),
    }
}

/// Whether a relative path climbs above its start (`a/../../b`).
fn escapes(path: &str) -> bool {
    let mut depth = 0usize;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if depth == 0 => return true,
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn snapshot_names_sort_by_time_and_are_recognised() {
        let name = snapshot_name(datetime!(2026-12-08 01:02:03.456 UTC));
        assert_eq!(name, format!("{SERVICE_NAME}-20261208T010203.456Z.tar.gz"));
        assert!(is_snapshot(&name));
        assert!(!is_snapshot(&format!(
            "{SERVICE_NAME}-20261208T010203Z.tar.gz"
        )));
        assert!(!is_snapshot(&format!(".{name}.tmp")));
        assert!(!is_snapshot("notes.txt"));
    }

    #[test]
    fn hostile_members_are_named() {
        use tar::EntryType::{Block, Link, Regular, Symlink};
        assert_eq!(problem("a/b", Regular, None), None);
        assert_eq!(
            problem("/etc/passwd", Regular, None),
            Some("has an absolute path")
        );
        assert_eq!(
            problem("a/../../x", Regular, None),
            Some("leads outside the data dir")
        );
        assert_eq!(problem("a/l", Symlink, Some("../b")), None);
        assert_eq!(
            problem("a/l", Symlink, Some("../../b")),
            Some("links outside the data dir")
        );
        assert_eq!(
            problem("l", Symlink, Some("/etc")),
            Some("links outside the data dir")
        );
        assert_eq!(
            problem("h", Link, Some("a")),
            Some("is not a file, directory or symbolic link")
        );
        assert_eq!(
            problem("dev", Block, None),
            Some("is not a file, directory or symbolic link")
        );
    }
}
