//! The command line and the configuration layers, seen from outside.
mod common;

use std::os::unix::fs::PermissionsExt;

use common::{base_config, command, env_prefix};

fn check_config(dir: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = command(dir);
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.args(["check-config", "--config"])
        .arg(base_config())
        .output()
        .unwrap()
}

#[test]
fn check_config_prints_each_value_with_its_layer() {
    let dir = tempfile::tempdir().unwrap();
    let port = format!("{}HTTP__PORT", env_prefix());
    let token = format!("{}WORK__UPSTREAM_TOKEN", env_prefix());
    let output = check_config(dir.path(), &[(&port, "9000"), (&token, "s3cret-value")]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 16, "{stdout}");
    assert_eq!(lines[0], "http.host = \"127.0.0.1\" (base)");
    assert_eq!(lines[1], "http.port = 9000 (env)");
    assert!(
        lines.contains(&"work.upstream_token = \"[redacted]\" (env)"),
        "{stdout}"
    );
    assert_eq!(lines[15], "configuration OK");
    assert!(!stdout.contains("s3cret-value"));
}

#[test]
fn every_bad_value_is_reported_then_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let port = format!("{}HTTP__PORT", env_prefix());
    let workers = format!("{}WORK__MAX_CONCURRENCY", env_prefix());
    let output = check_config(dir.path(), &[(&port, "70000"), (&workers, "many")]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "config error: http.port (env {port}): 70000 is out of range; allowed 1-65535 (0 picks a free port)"
        )),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("config error: work.max_concurrency (env {workers}): \"many\" is not a whole number; allowed 1-1024")), "{stderr}");
}

#[test]
fn a_secrets_file_open_to_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("prefix/key/env.toml");
    std::fs::create_dir_all(secrets.parent().unwrap()).unwrap();
    std::fs::write(&secrets, "[work]\nupstream_token = \"t\"\n").unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o640)).unwrap();
    let output = check_config(dir.path(), &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("secrets file {} has mode 0640", secrets.display())),
        "{stderr}"
    );
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = check_config(dir.path(), &[]);
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("work.upstream_token = \"[redacted]\" (secrets)")
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
    for args in [
        &["frobnicate"][..],
        &["run", "--nope"],
        &["run", "--config"],
        &[],
    ] {
        let output = command(dir.path()).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(!output.stderr.is_empty());
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
    assert!(
        stderr.starts_with("config error: cannot read absent.toml: "),
        "{stderr}"
    );
}
