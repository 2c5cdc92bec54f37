//! The HTTP endpoints: health, metrics, and bounded labels for anything else.
mod common;

use common::spawn_app;

#[test]
fn live_and_ready_answer_ok() {
    let app = spawn_app(&[]);
    assert_eq!(app.get("/.well-known/live"), (200, "ok".to_string()));
    assert_eq!(app.get("/.well-known/ready"), (200, "ok".to_string()));
}

#[test]
fn head_is_allowed_and_other_methods_are_not() {
    let app = spawn_app(&[]);
    assert_eq!(app.request("HEAD", "/.well-known/live").0, 200);
    assert_eq!(app.request("POST", "/.well-known/ready").0, 405);
}

#[test]
fn unknown_paths_are_404_and_counted_as_unknown() {
    let app = spawn_app(&[]);
    assert_eq!(app.get("/admin/../etc/passwd").0, 404);
    assert_eq!(app.request("BREW", "/coffee").0, 404);
    let (status, head, body) = app.request("GET", "/metrics");
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let p = common::NAME.replace('-', "_");
    assert!(
        body.contains(&format!(
            "{p}_http_requests_total{{method=\"GET\",route=\"unknown\",status=\"404\"}} 1"
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "{p}_http_requests_total{{method=\"other\",route=\"unknown\",status=\"404\"}} 1"
        )),
        "{body}"
    );
    assert!(!body.contains("passwd"));
}

#[test]
fn metrics_hold_every_contract_name() {
    let app = spawn_app(&[]);
    let (_, body) = app.get("/metrics");
    let p = common::NAME.replace('-', "_");
    for name in [
        format!("{p}_build_info{{"),
        format!("{p}_errors_total{{kind=\"transient\"}} 0"),
        format!("{p}_errors_total{{kind=\"persistent\"}} 0"),
        format!("{p}_retries_total 0"),
        format!("{p}_heartbeat_timestamp_seconds "),
        format!("{p}_ready 1"),
        format!("{p}_degraded 0"),
        "process_cpu_seconds_total ".to_string(),
        "process_resident_memory_bytes ".to_string(),
        "process_open_fds ".to_string(),
        "process_start_time_seconds ".to_string(),
    ] {
        assert!(body.contains(&name), "missing {name:?} in\n{body}");
    }
    assert!(!body.contains("_created"));
}
