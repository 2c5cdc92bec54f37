//! Lifecycle: PID file, heartbeat, signals and exit codes.
mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{spawn_app, spawn_app_in};
use nix::sys::signal::Signal;

#[test]
fn sigterm_stops_cleanly_and_removes_the_pid_file() {
    let mut app = spawn_app(&[]);
    let pid = std::fs::read_to_string(app.pid_file()).unwrap();
    assert_eq!(pid, format!("{}\n", app.child.id()));
    let started = Instant::now();
    app.signal(Signal::SIGTERM);
    let status = app.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{:#?}", app.seen);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    app.wait_for(" INFO shutting down signal=SIGTERM");
    app.wait_for(" INFO stopped");
    assert!(!app.pid_file().exists());
}

#[test]
fn a_held_pid_file_stops_a_second_instance_with_exit_2() {
    let first = spawn_app(&[]);
    let output = common::command(first.dir.path())
        .env(format!("{}HTTP__PORT", common::env_prefix()), "0")
        .args(["run", "--config"])
        .arg(common::test_config(first.dir.path()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "ERROR PID file is held by a live process path={} pid={}",
        first.pid_file().display(),
        first.child.id()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        first.pid_file().exists(),
        "the first instance's PID file must survive"
    );
}

#[test]
fn a_stale_pid_file_is_taken_over_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join(format!("prefix/run/{}.pid", common::NAME));
    std::fs::create_dir_all(pid_file.parent().unwrap()).unwrap();
    std::fs::write(&pid_file, "4194999\n").unwrap();
    let mut app = spawn_app_in(dir, &[]);
    let line = app.wait_for("WARN taking over stale PID file");
    assert!(
        line.ends_with(&format!("path={} old_pid=4194999", pid_file.display())),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", app.child.id())
    );
}

#[test]
fn the_heartbeat_loop_rewrites_the_file_again_and_again() {
    let app = spawn_app(&[]);
    let path = app.path(&format!("tmp/{}.heartbeat", common::NAME));
    let inode =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    // Rewritten atomically (a new file renamed over the old) every 0.2 s: each beat is a new
    // file; held open, the old one keeps its inode number, so each one counts.
    let mut held = Vec::new();
    while seen.len() < 4 && Instant::now() < deadline {
        if let Ok(file) = std::fs::File::open(&path) {
            seen.insert(inode(&path));
            held.push(file);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen.len() >= 4,
        "the file was replaced {} times in 3 s",
        seen.len()
    );
}

#[test]
fn the_heartbeat_file_holds_a_recent_unix_time() {
    let app = spawn_app(&[]);
    std::thread::sleep(Duration::from_millis(500));
    let path = app.path(&format!("tmp/{}.heartbeat", common::NAME));
    let text = std::fs::read_to_string(path).unwrap();
    let beat: u64 = text.strip_suffix('\n').unwrap().parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now - beat <= 1, "beat {beat}, now {now}");
    assert!(app.path("prefix/data").join(common::NAME).is_dir());
}

#[test]
fn sighup_reopens_the_log_file() {
    let mut app = spawn_app(&[]);
    let log = app.path(&format!("log/{}.log", common::NAME));
    std::fs::rename(&log, app.path("log/rotated.log")).unwrap();
    app.signal(Signal::SIGHUP);
    app.wait_for(" INFO log file reopened path=");
    let fresh = std::fs::read_to_string(&log).unwrap();
    assert!(fresh.contains(" INFO log file reopened"), "{fresh}");
    let rotated = std::fs::read_to_string(app.path("log/rotated.log")).unwrap();
    assert!(rotated.contains(" INFO ready"), "{rotated}");
}
