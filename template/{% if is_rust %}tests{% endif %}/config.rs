//! The command line and the configuration layers, seen from outside. Every test writes its
//! own configuration: the values the team commits in cfg/config.toml are theirs to change.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{base_config, command, env_prefix};

fn check_config(dir: &Path, config: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = command(dir);
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.args(["check-config", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("test.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn write_secrets(dir: &Path, text: &str, mode: u32) -> std::path::PathBuf {
    let secrets = dir.join("prefix/key/env.toml");
    std::fs::create_dir_all(secrets.parent().unwrap()).unwrap();
    std::fs::write(&secrets, text).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(mode)).unwrap();
    secrets
}

#[test]
fn the_committed_configuration_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let output = check_config(dir.path(), &base_config(), &[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().last(), Some("configuration OK"));
}

#[test]
fn check_config_prints_each_value_with_its_layer() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[http]\nhost = \"127.0.0.2\"\n");
    write_secrets(dir.path(), "[log]\nfilter = \"warn\"\n", 0o600);
    let port = format!("{}HTTP__PORT", env_prefix());
    let output = check_config(dir.path(), &config, &[(&port, "9000")]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "http.host = \"127.0.0.2\" (base)");
    assert_eq!(lines[1], "http.port = 9000 (env)");
    assert_eq!(lines[2], "http.header_timeout_secs = 10.0 (default)");
    assert_eq!(lines[5], "http.max_connections = 1024 (default)");
    assert_eq!(lines[6], "http.tls_cert_file = \"\" (default)");
    assert!(
        lines.contains(&"log.filter = \"warn\" (secrets)"),
        "{stdout}"
    );
    assert!(
        lines.contains(&"heartbeat.interval_secs = 10.0 (default)"),
        "{stdout}"
    );
    assert!(
        lines.contains(&"runtime.worker_threads = 0 (default)"),
        "{stdout}"
    );
    assert_eq!(lines.last(), Some(&"configuration OK"));
}

#[test]
fn a_key_in_secrets_and_env_takes_env_and_secrets_beat_base() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[http]\nport = 1111\nhost = \"127.0.0.3\"\n");
    write_secrets(
        dir.path(),
        "[http]\nport = 2222\nhost = \"127.0.0.4\"\n",
        0o600,
    );
    let port = format!("{}HTTP__PORT", env_prefix());
    let output = check_config(dir.path(), &config, &[(&port, "3333")]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("http.port = 3333 (env)\n"), "{stdout}");
    assert!(
        stdout.contains("http.host = \"127.0.0.4\" (secrets)\n"),
        "{stdout}"
    );
}

#[test]
fn every_bad_value_is_reported_then_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[http]\nport = \"9000\"\n");
    let port = format!("{}SHUTDOWN__TIMEOUT_SECS", env_prefix());
    let threads = format!("{}RUNTIME__WORKER_THREADS", env_prefix());
    let output = check_config(dir.path(), &config, &[(&port, "0"), (&threads, "many")]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    for line in [
        "config error: http.port (base): \"9000\" is not a whole number; allowed 1-65535 (0 picks a free port)".to_string(),
        format!("config error: shutdown.timeout_secs (env {port}): 0.0 is out of range; allowed a number of seconds > 0 (fractions allowed)"),
        format!("config error: runtime.worker_threads (env {threads}): \"many\" is not a whole number; allowed 0-1024 (0 = the available cores)"),
    ] {
        assert!(stderr.lines().any(|l| l == line), "missing {line:?} in {stderr}");
    }
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
}

#[test]
fn a_secrets_file_open_to_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let secrets = write_secrets(dir.path(), "[http]\nport = 1\n", 0o640);
    let output = check_config(dir.path(), &config, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("secrets file {} has mode 0640", secrets.display())),
        "{stderr}"
    );
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = check_config(dir.path(), &config, &[]);
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("http.port = 1 (secrets)")
    );
}

#[test]
fn version_and_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path()).arg("--version").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with(&format!("{} {}", common::NAME, env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    let usage = format!(
        "usage: {} [--version] {{run,check-config,backup,restore}} [--config PATH]",
        common::NAME
    );
    for (args, what) in [
        (
            &["frobnicate"][..],
            "unknown command \"frobnicate\"; allowed run, check-config, backup, restore",
        ),
        (&["run", "--nope"], "unknown argument \"--nope\""),
        (&["run", "--config"], "--config needs a value"),
        (
            &[],
            "missing command; allowed run, check-config, backup, restore",
        ),
    ] {
        let output = command(dir.path()).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(
            stderr,
            format!("{}: error: {what}\n{usage}\n", common::NAME),
            "{args:?}"
        );
    }
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .args(["run", "--config", "absent.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr,
        "config error: cannot read absent.toml: No such file or directory\n"
    );
}
