//! The PID file: `<pid>\n`, locked with `flock` for the life of the process.
//!
//! A file whose lock is free is stale (its process died): it is taken over with a warning.
//! A file locked by a live process is an error naming that process. [`PidFile`] is the
//! guard: dropping it removes the file, then closing it releases the lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PidFileError {
    #[error("PID file {path} is held by a live process (pid {pid})")]
    Held { path: PathBuf, pid: String },
    #[error("cannot use PID file {path}: {}", crate::errors::os_reason(source))]
    Io { path: PathBuf, source: io::Error },
}

/// The held PID file; removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: File,
}

fn read_pid(file: &mut File) -> io::Result<String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_string(&mut text)?;
    Ok(text.trim().to_string())
}

impl PidFile {
    /// Creates (or takes over) the PID file, locks it and writes our PID.
    pub fn acquire(path: &Path) -> Result<Self, PidFileError> {
        let io_error = |source| PidFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_error)?;
        }
        // A file that exists with its lock free is stale, whatever it holds (even nothing).
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = read_pid(&mut file).unwrap_or_default();
                let pid = if pid.is_empty() {
                    "unknown".to_string()
                } else {
                    pid
                };
                tracing::error!(path = %path.display(), pid = %pid, "PID file is held by a live process");
                return Err(PidFileError::Held {
                    path: path.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(e)),
        }
        let old_pid = read_pid(&mut file).map_err(io_error)?;
        if existed {
            tracing::warn!(path = %path.display(), old_pid = %old_pid, "taking over stale PID file");
        }
        file.set_len(0).map_err(io_error)?;
        file.seek(SeekFrom::Start(0)).map_err(io_error)?;
        writeln!(file, "{}", std::process::id()).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Remove while still locked, so that no other process can take a file we then delete.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_our_pid_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/svc.pid");
        let guard = PidFile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(guard);
        assert!(!path.exists());
    }

    #[test]
    fn a_held_file_is_refused_with_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.pid");
        let _guard = PidFile::acquire(&path).unwrap();
        // flock locks belong to the open file description: a second open conflicts.
        match PidFile::acquire(&path) {
            Err(PidFileError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Held, got {other:?}"),
        }
    }

    #[test]
    fn a_stale_file_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.pid");
        std::fs::write(&path, "999999999\n").unwrap();
        let _guard = PidFile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
    }
}
