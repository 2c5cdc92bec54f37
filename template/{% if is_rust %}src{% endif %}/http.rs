//! HTTP serving: the platform's routes and the service's, wrapped by the same layers, and the
//! JSON helpers for the service's handlers.
//!
//! Every request is counted under its route *template* (`/v1/orders/{id}`, axum's
//! `MatchedPath`), or `unknown`. A handler that panics or answers 500 gets a 500 with
//! `{"error": "internal error"}`, one `ERROR request failed` line and
//! `errors_total{kind="persistent"}`; the service keeps serving.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde::de::DeserializeOwned;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use crate::audit;
use crate::health::{self, Health};
use crate::metrics::{self, Exporter, Handles};

/// The content type of every JSON answer.
pub const JSON: &str = "application/json; charset=utf-8";

thread_local! {
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Whether this thread is polling a request handler (the panic hook asks).
pub fn in_handler() -> bool {
    IN_HANDLER.with(Cell::get)
}

/// Keeps a handler's panic message for the `request failed` line.
pub fn record_panic(message: String) {
    PANIC.with(|p| *p.borrow_mut() = Some(message));
}

/// A handler's future, polled with [`in_handler`] set and its panics caught.
///
/// Hand-written rather than tower-http's `CatchPanic`: the process-wide panic hook (which
/// exits 2 on any other panic) must know that this one is a handler's.
struct Guarded<'a, F> {
    inner: Pin<&'a mut F>,
}

impl<F: Future> Future for Guarded<'_, F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let was = IN_HANDLER.with(|f| f.replace(true));
        let polled = catch_unwind(AssertUnwindSafe(|| self.inner.as_mut().poll(cx)));
        IN_HANDLER.with(|f| f.set(was));
        match polled {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => {
                let message = PANIC.with(|p| p.borrow_mut().take());
                Poll::Ready(Err(message.unwrap_or_else(|| "panic".to_string())))
            }
        }
    }
}

/// A JSON answer: `application/json; charset=utf-8`, written as Python's `json.dumps` does
/// (`", "` and `": "` separators), so that both flavours answer the same bytes.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response {
    let Ok(body) = json_text(value) else {
        return internal_error();
    };
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// `value` as Python's `json.dumps` writes it (`", "` and `": "` separators): for answers and
/// for files an operator reads, the same bytes in both flavours.
pub fn json_text(value: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(64);
    let mut serializer = serde_json::Serializer::with_formatter(&mut body, Spaced);
    value.serialize(&mut serializer)?;
    Ok(body)
}

/// `{"error": "<message>"}` with `status`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

fn internal_error() -> Response {
    let mut response = (
        StatusCode::INTERNAL_SERVER_ERROR,
        r#"{"error": "internal error"}"#,
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// serde_json's compact format with Python's default separators.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// A request body read as JSON into `T` and validated: malformed JSON is a 400
/// `{"error": "body is not valid JSON"}`, a value the model refuses a 422
/// `{"error": "invalid value", "field": "<dotted.path>"}`.
pub struct Json<T>(pub T);

/// Why a body was refused; answers as the module's doc says.
#[derive(Debug)]
pub enum JsonRejection {
    Malformed,
    Invalid {
        field: String,
    },
    /// The body could not be read (too large, cut short): axum's own answer.
    Unreadable(axum::extract::rejection::BytesRejection),
}

impl IntoResponse for JsonRejection {
    fn into_response(self) -> Response {
        match self {
            JsonRejection::Malformed => {
                json_error(StatusCode::BAD_REQUEST, "body is not valid JSON")
            }
            JsonRejection::Invalid { field } => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({ "error": "invalid value", "field": field }),
            ),
            JsonRejection::Unreadable(rejection) => rejection.into_response(),
        }
    }
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = JsonRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(JsonRejection::Unreadable)?;
        parse_body(&bytes).map(Json)
    }
}

/// Parses and validates a body (the extractor's work, testable without a request).
pub fn parse_body<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, JsonRejection> {
    // Syntax first: a body that is not JSON at all is a 400, whatever the model.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| JsonRejection::Malformed)?;
    let parsed: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let mut field = dotted(&e.path().to_string());
        if field.is_empty() || field == "." {
            // A missing field: serde names it in the message only.
            field = missing_field(&e.inner().to_string()).unwrap_or_default();
        }
        JsonRejection::Invalid { field }
    })?;
    parsed.validate().map_err(|errors| JsonRejection::Invalid {
        field: first_field(&errors),
    })?;
    Ok(parsed)
}

/// `items[0].qty` -> `items.0.qty`.
fn dotted(path: &str) -> String {
    path.replace('[', ".")
        .replace(']', "")
        .trim_start_matches('.')
        .to_string()
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.split("missing field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// The dotted path of the first failing field (sorted, so that the answer is stable).
fn first_field(errors: &ValidationErrors) -> String {
    let mut paths = Vec::new();
    collect(errors, String::new(), &mut paths);
    paths.sort();
    paths.into_iter().next().unwrap_or_default()
}

fn collect(errors: &ValidationErrors, prefix: String, out: &mut Vec<String>) {
    for (field, kind) in errors.errors() {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(_) => out.push(path),
            ValidationErrorsKind::Struct(inner) => collect(inner, path, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    collect(inner, format!("{path}.{index}"), out);
                }
            }
        }
    }
}

/// The layer on every route: turns a handler's panic or 500 into the contract's 500 (logged
/// once, counted as a persistent error), then counts the request under bounded labels: the
/// route template or `unknown`, a method of the fixed set or `other`, the status code.
///
/// One middleware rather than two: each `from_fn` layer costs a boxed service per request.
pub async fn wrap(State(handles): State<Handles>, request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let method = metrics::method_label(request.method());
    let raw_method = request.method().clone();
    let peer = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|info| info.0.0.ip());
    let outcome = Guarded {
        inner: std::pin::pin!(next.run(request)),
    }
    .await;
    let route = metrics::route_label(matched.as_ref());
    let response = match outcome {
        Ok(response) if response.status() != StatusCode::INTERNAL_SERVER_ERROR => response,
        failed => {
            let error = match failed {
                Ok(_) => "the handler answered 500".to_string(),
                Err(panic) => panic,
            };
            handles.persistent_errors.increment(1);
            tracing::error!(route = %route, method = %method, error = %error, "request failed");
            internal_error()
        }
    };
    audit_refusal(matched.as_ref(), &raw_method, response.status(), peer);
    metrics::count_request(route, method, response.status());
    with_text_body(response)
}

/// axum's own 405 has no body: give it the same text as the Python flavour's, keeping `Allow`.
fn with_text_body(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let mut answer = (StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        answer.headers_mut().insert(header::ALLOW, allow.clone());
    }
    answer
}

/// The address of the client of a request: the server adds it as a `ConnectInfo<Peer>` extension.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The platform's own routes; every other matched route is the service's.
pub const PLATFORM_ROUTES: &[&str] = &["/.well-known/live", "/.well-known/ready", "/metrics"];

/// An audit line for a 401 or 403 answered by one of the service's routes.
fn audit_refusal(
    matched: Option<&MatchedPath>,
    method: &axum::http::Method,
    status: StatusCode,
    peer: Option<std::net::IpAddr>,
) {
    let refused = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
    let Some(route) = matched.map(MatchedPath::as_str) else {
        return;
    };
    if !refused || PLATFORM_ROUTES.contains(&route) {
        return;
    }
    let peer = peer.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    audit::record(
        "access refused",
        &[
            ("method", &method.as_str()),
            ("route", &route),
            ("status", &status.as_u16()),
            ("peer", &peer),
        ],
    );
}

/// The platform's routes, the service's, and 404 for anything else, all guarded and counted.
pub fn router(
    health: Arc<Health>,
    exporter: Exporter,
    handles: Handles,
    service: Router,
) -> Router {
    let health_routes = Router::new()
        .route("/.well-known/live", get(health::live))
        .route("/.well-known/ready", get(health::ready))
        .with_state(health);
    let metrics_route = Router::new()
        .route("/metrics", get(metrics::serve))
        .with_state(exporter);
    health_routes
        .merge(metrics_route)
        .merge(service)
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(from_fn_with_state(handles, wrap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Validate)]
    struct Line {
        #[validate(range(min = 1))]
        qty: u32,
    }

    #[derive(Debug, Deserialize, Validate)]
    struct Order {
        #[validate(length(min = 1))]
        desk: String,
        #[validate(nested)]
        lines: Vec<Line>,
    }

    fn field(body: &str) -> Result<Order, String> {
        parse_body::<Order>(body.as_bytes()).map_err(|e| match e {
            JsonRejection::Invalid { field } => field,
            other => format!("{other:?}"),
        })
    }

    #[test]
    fn bodies_are_refused_naming_the_field() {
        assert_eq!(field("{nope").unwrap_err(), "Malformed");
        assert_eq!(field(r#"{"lines": []}"#).unwrap_err(), "desk");
        assert_eq!(field(r#"{"desk": 7, "lines": []}"#).unwrap_err(), "desk");
        assert_eq!(
            field(r#"{"desk": "a", "lines": [{"qty": 1}, {"qty": "x"}]}"#).unwrap_err(),
            "lines.1.qty"
        );
        assert_eq!(field(r#"{"desk": "", "lines": []}"#).unwrap_err(), "desk");
        assert_eq!(
            field(r#"{"desk": "a", "lines": [{"qty": 0}]}"#).unwrap_err(),
            "lines.0.qty"
        );
        assert_eq!(
            field(r#"{"desk": "a", "lines": [{"qty": 2}]}"#)
                .unwrap()
                .lines[0]
                .qty,
            2
        );
    }

    #[tokio::test]
    async fn refused_access_on_the_service_routes_is_audited() {
        use metrics_exporter_prometheus::PrometheusBuilder;

        let dir = tempfile::tempdir().unwrap();
        let audit_file = dir.path().join("audit.log");
        crate::audit::open(&audit_file).unwrap();
        let prometheus = PrometheusBuilder::new().build_recorder().handle();
        let exporter = Exporter::with_handle(prometheus, "0.0.0", "test");
        let health = Health::new(std::time::Duration::from_secs(1), Handles::noop());
        let service = Router::new()
            .route(
                "/v1/locked/{id}",
                get(|| async { (StatusCode::UNAUTHORIZED, "no token") }),
            )
            .route(
                "/v1/admin",
                axum::routing::post(|| async { (StatusCode::FORBIDDEN, "forbidden") }),
            );
        // What the server adds to each request (`crate::server`).
        let peer = Peer("127.0.0.1:40000".parse().unwrap());
        let app = router(health, exporter, Handles::noop(), service)
            .layer(axum::Extension(ConnectInfo(peer)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();

        let status = |r: reqwest::Response| r.status().as_u16();
        let locked = client.get(format!("{base}/v1/locked/7")).send().await;
        assert_eq!(locked.map(status).unwrap(), 401);
        let admin = client.post(format!("{base}/v1/admin")).send().await;
        assert_eq!(admin.map(status).unwrap(), 403);
        let nowhere = client.get(format!("{base}/nowhere")).send().await;
        assert_eq!(nowhere.map(status).unwrap(), 404);
        let metrics = client.post(format!("{base}/metrics")).send().await;
        assert_eq!(metrics.map(status).unwrap(), 405);

        let text = std::fs::read_to_string(&audit_file).unwrap();
        let messages: Vec<&str> = text
            .lines()
            .filter_map(|line| line.split_once(" AUDIT ").map(|(_, m)| m))
            .collect();
        assert_eq!(
            messages,
            [
                "access refused method=GET route=/v1/locked/{id} status=401 peer=127.0.0.1",
                "access refused method=POST route=/v1/admin status=403 peer=127.0.0.1",
            ]
        );
    }

    #[tokio::test]
    async fn a_handler_panic_or_500_is_a_json_500_and_the_service_keeps_serving() {
        use axum::extract::Path;
        use metrics_exporter_prometheus::PrometheusBuilder;

        let recorder = PrometheusBuilder::new().build_recorder();
        let prometheus = recorder.handle();
        let handles = ::metrics::with_local_recorder(&recorder, Handles::new);
        let exporter = Exporter::with_handle(prometheus.clone(), "0.0.0", "test");
        let health = Health::new(std::time::Duration::from_secs(1), Handles::noop());
        let service = Router::new()
            .route(
                "/boom/{id}",
                get(|Path(id): Path<u32>| async move {
                    if id > 0 {
                        panic!("boom {id}");
                    }
                    "never"
                }),
            )
            .route(
                "/fail",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "secret detail") }),
            )
            .route("/ok", get(|| async { "fine" }));
        let app = router(health, exporter, handles, service);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();

        for path in ["/boom/7", "/fail"] {
            let response = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(response.status(), 500, "{path}");
            assert_eq!(response.headers()["content-type"], JSON);
            assert_eq!(
                response.text().await.unwrap(),
                r#"{"error": "internal error"}"#
            );
        }
        let response = client.get(format!("{base}/ok")).send().await.unwrap();
        assert_eq!(response.text().await.unwrap(), "fine");
        let text = prometheus.render();
        let persistent = format!("{}{{kind=\"persistent\"}} 2", metrics::names().errors_total);
        assert!(text.contains(&persistent), "{text}");
    }

    #[test]
    fn json_answers_use_python_separators() {
        let response = json(
            StatusCode::OK,
            &serde_json::json!({"value": 42.0, "list": [1, 2]}),
        );
        assert_eq!(response.headers()[header::CONTENT_TYPE], JSON);
        let (value, list) = (42.0_f64, [1, 2]);
        let mut body = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut body, Spaced);
        #[derive(Serialize)]
        struct Both {
            value: f64,
            list: [i32; 2],
        }
        Both { value, list }.serialize(&mut ser).unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"value": 42.0, "list": [1, 2]}"#
        );
    }
}
