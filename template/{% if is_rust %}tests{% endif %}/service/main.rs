//! The example service against a fake upstream: good values, persistent and transient
//! errors, `GET /v1/value`, and shutdown with work in flight.
#[path = "../common/mod.rs"]
mod common;

use std::time::Duration;

use common::{TestApp, fake_upstream, silent_upstream};
use nix::sys::signal::Signal;

/// The service with runs every 0.2 s, plus `env` (`("WORK__UPSTREAM_URL", url)` style).
fn spawn_app(env: &[(&str, &str)]) -> TestApp {
    let mut all = vec![("WORK__INTERVAL_SECS", "0.2")];
    all.extend_from_slice(env);
    common::spawn_app(&all)
}

fn metric(body: &str, name: &str) -> f64 {
    let p = common::NAME.replace('-', "_");
    let wanted = format!("{p}_{name} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .map_or(f64::NAN, |v| v.parse().unwrap())
}

fn wait_until(app: &common::TestApp, what: impl Fn(&str) -> bool) -> String {
    for _ in 0..100 {
        let (_, body) = app.get("/metrics");
        if what(&body) {
            return body;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!(
        "condition never met; last metrics:\n{}",
        app.get("/metrics").1
    );
}

#[test]
fn a_good_answer_is_stored_as_the_last_value() {
    let upstream = fake_upstream(200, r#"{"value": 42.5}"#);
    let app = spawn_app(&[("WORK__UPSTREAM_URL", &upstream)]);
    let stored = app.path(&format!("prefix/data/{}/last_value.json", common::NAME));
    wait_until(&app, |body| {
        metric(body, "work_latency_ewma_seconds") > 0.0 && stored.exists()
    });
    let text = std::fs::read_to_string(&stored).unwrap();
    assert!(
        text.starts_with(r#"{"value": 42.5, "fetched_at": "#),
        "{text}"
    );
    assert_eq!(app.get("/.well-known/ready").0, 200);
}

#[test]
fn a_persistent_error_degrades_without_retrying() {
    let upstream = fake_upstream(404, "{}");
    let mut app = spawn_app(&[
        ("WORK__UPSTREAM_URL", &upstream),
        ("WORK__INTERVAL_SECS", "30"),
    ]);
    let p = common::NAME.replace('-', "_");
    let body = wait_until(&app, |body| {
        body.contains(&format!("{p}_errors_total{{kind=\"persistent\"}} 1"))
    });
    assert_eq!(metric(&body, "retries_total"), 0.0);
    assert_eq!(metric(&body, "degraded"), 1.0);
    app.wait_for("WARN work failed, using last good value kind=persistent error=");
    // Degraded with no good value ever: not ready.
    assert_eq!(app.get("/.well-known/ready"), (503, "degraded".to_string()));
}

#[test]
fn a_transient_error_is_retried_five_times() {
    let upstream = fake_upstream(503, "{}");
    let mut app = spawn_app(&[
        ("WORK__UPSTREAM_URL", &upstream),
        ("WORK__INTERVAL_SECS", "30"),
    ]);
    let p = common::NAME.replace('-', "_");
    let body = wait_until(&app, |body| {
        body.contains(&format!("{p}_errors_total{{kind=\"transient\"}} 1"))
    });
    assert_eq!(metric(&body, "retries_total"), 5.0);
    app.wait_for("kind=transient");
}

#[test]
fn a_malformed_body_is_persistent() {
    let upstream = fake_upstream(200, "not json");
    let app = spawn_app(&[
        ("WORK__UPSTREAM_URL", &upstream),
        ("WORK__INTERVAL_SECS", "30"),
    ]);
    let p = common::NAME.replace('-', "_");
    wait_until(&app, |body| {
        body.contains(&format!("{p}_errors_total{{kind=\"persistent\"}} 1"))
    });
}

#[test]
fn the_value_is_served_as_json_once_fetched() {
    let app = spawn_app(&[]);
    let (status, head, body) = app.request("GET", "/v1/value");
    assert_eq!(status, 503);
    assert!(
        head.contains("content-type: application/json; charset=utf-8"),
        "{head}"
    );
    assert_eq!(body, r#"{"error": "no value yet"}"#);

    let upstream = fake_upstream(200, r#"{"value": 42}"#);
    let app = spawn_app(&[("WORK__UPSTREAM_URL", &upstream)]);
    let stored = app.path(&format!("prefix/data/{}/last_value.json", common::NAME));
    wait_until(&app, |_| stored.exists());
    let (status, head, body) = app.request("GET", "/v1/value");
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/json; charset=utf-8"),
        "{head}"
    );
    let fetched_at = body
        .strip_prefix(r#"{"value": 42.0, "fetched_at": "#)
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("{body}"));
    assert!(fetched_at.parse::<u64>().is_ok(), "{body}");
    assert_eq!(app.request("POST", "/v1/value").0, 405);
}

#[test]
fn the_latency_gauge_is_exported() {
    let app = spawn_app(&[]);
    let (_, body) = app.get("/metrics");
    let p = common::NAME.replace('-', "_");
    assert!(
        body.contains(&format!("# TYPE {p}_work_latency_ewma_seconds gauge")),
        "{body}"
    );
    assert!(
        body.contains(&format!("{p}_work_latency_ewma_seconds 0")),
        "{body}"
    );
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
