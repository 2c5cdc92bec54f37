//! The example work against a fake upstream: good values, persistent and transient errors.
#[path = "../common/mod.rs"]
mod common;

use common::{fake_upstream, spawn_app};

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
    assert!(text.starts_with(r#"{"value":42.5,"fetched_at":"#), "{text}");
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
