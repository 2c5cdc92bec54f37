//! The heartbeat: the main loop proves it is alive.
//!
//! Each beat rewrites the heartbeat file atomically (temporary file in the same directory,
//! then rename) with the Unix time in whole seconds and a newline, so that shell checks can
//! use `$(( $(date +%s) - $(cat file) ))`; it also feeds `/.well-known/live`, the heartbeat
//! gauge and the systemd watchdog.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::health::Health;
use crate::metrics::Handles;
use crate::sd_notify;

/// Writes `contents` to `path` atomically: a temporary file beside it, then a rename.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

pub struct Heartbeat {
    path: PathBuf,
    health: Arc<Health>,
    metrics: Handles,
}

impl Heartbeat {
    pub fn new(path: &Path, health: Arc<Health>, metrics: Handles) -> Self {
        Self {
            path: path.to_path_buf(),
            health,
            metrics,
        }
    }

    /// One beat, now.
    pub fn beat(&self) -> io::Result<()> {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        write_atomically(&self.path, format!("{secs}\n").as_bytes())?;
        self.health.record_beat(now);
        self.metrics.heartbeat.set(secs as f64);
        sd_notify::notify(sd_notify::WATCHDOG);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_beat_writes_unix_seconds_and_makes_the_service_live() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tmp/svc.heartbeat");
        let health = Health::new(Duration::from_secs(10), Handles::noop());
        let heartbeat = Heartbeat::new(&path, health.clone(), Handles::noop());
        heartbeat.beat().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let written: u64 = text.strip_suffix('\n').unwrap().parse().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now - written <= 1);
        assert!(health.live(SystemTime::now()).is_ok());
        let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "the temporary file must be renamed away");
    }
}
