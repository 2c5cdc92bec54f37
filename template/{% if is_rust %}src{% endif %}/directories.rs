//! The service's directories: created at start with their mode; old temporary files removed.
//!
//! `paths.tmp_dir` holds files that nothing needs across a restart (the heartbeat, partial
//! writes); those older than `paths.tmp_max_age_secs` are removed at start, so that a crash
//! loop cannot fill the disk with them:
//!
//! `Dec 08 01:02:03.456 INFO removed old temporary files dir=./tmp count=3 max_age_secs=86400`

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// 0750: the service's group may read its data, others may not.
pub const DATA_DIR_MODE: u32 = 0o750;

/// Creates the directory (and its parents) if missing, with `mode` when given.
pub fn make_dir(path: &Path, mode: Option<u32>) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    if let Some(mode) = mode {
        builder.mode(mode);
    }
    builder.create(path)
}

/// Removes the regular files (and links, never followed) below `tmp_dir` last modified more
/// than `max_age_secs` ago; directories are kept. Logs one line with the count, returns it.
pub fn clean_tmp(tmp_dir: &Path, max_age_secs: f64) -> usize {
    let cutoff = SystemTime::now()
        .checked_sub(Duration::from_secs_f64(max_age_secs))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let count = remove_older(tmp_dir, cutoff);
    tracing::info!(
        dir = %tmp_dir.display(),
        count,
        max_age_secs = %max_age_secs,
        "removed old temporary files"
    );
    count
}

fn remove_older(dir: &Path, cutoff: SystemTime) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut count = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        // symlink_metadata: a link is looked at itself, never followed.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            count += remove_older(&path, cutoff);
        } else if (meta.is_file() || meta.is_symlink())
            && meta.modified().is_ok_and(|at| at < cutoff)
            && fs::remove_file(&path).is_ok()
        {
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_older_than_the_age_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("sub/old.part");
        let fresh = dir.path().join("fresh.part");
        fs::create_dir_all(old.parent().unwrap()).unwrap();
        fs::write(&old, "x").unwrap();
        fs::write(&fresh, "x").unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(7200);
        fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();

        assert_eq!(clean_tmp(dir.path(), 3600.0), 1);

        assert!(!old.exists());
        assert!(fresh.exists());
        assert!(old.parent().unwrap().is_dir());
    }
}
