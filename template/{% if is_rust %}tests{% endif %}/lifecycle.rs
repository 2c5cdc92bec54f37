//! Lifecycle: PID file, heartbeat, signals and exit codes.
mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{silent_upstream, spawn_app, spawn_app_in};
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
        .arg(common::base_config())
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

#[test]
fn a_shutdown_past_its_timeout_exits_2() {
    let upstream = silent_upstream();
    let mut app = spawn_app(&[
        ("WORK__UPSTREAM_URL", &upstream),
        ("WORK__INTERVAL_SECS", "5"),
        ("SHUTDOWN__TIMEOUT_SECS", "0.3"),
    ]);
    std::thread::sleep(Duration::from_millis(200)); // the first run is in flight, waiting
    app.signal(Signal::SIGTERM);
    assert_eq!(app.wait_exit(Duration::from_secs(5)).code(), Some(2));
    app.wait_for("ERROR CRITICAL shutdown overran its timeout timeout_secs=0.3");
}

#[test]
fn a_second_sigint_exits_at_once_with_2() {
    let upstream = silent_upstream();
    let mut app = spawn_app(&[
        ("WORK__UPSTREAM_URL", &upstream),
        ("WORK__INTERVAL_SECS", "5"),
        ("SHUTDOWN__TIMEOUT_SECS", "30"),
    ]);
    std::thread::sleep(Duration::from_millis(200));
    app.signal(Signal::SIGINT);
    app.wait_for(" INFO shutting down signal=SIGINT");
    assert_eq!(
        app.get("/.well-known/ready"),
        (503, "shutting down".to_string())
    );
    app.signal(Signal::SIGINT);
    assert_eq!(app.wait_exit(Duration::from_secs(2)).code(), Some(2));
}
