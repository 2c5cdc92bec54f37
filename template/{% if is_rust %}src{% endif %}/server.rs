//! The HTTP server's connections: the accept loop, its cap, and the deadlines of each
//! connection.
//!
//! hyper parses HTTP and axum's router answers; this module owns what happens around them,
//! so that hostile or broken clients cannot take the service down:
//!
//! - at most `http.max_connections` connections are open (lowered at start to the file
//!   descriptor limit minus [`FD_RESERVE`]); when the cap is reached, new connections wait in
//!   the listen backlog, and `exhaustion_total{kind="connections"}` counts each time accept
//!   waits;
//! - running out of file descriptors (EMFILE/ENFILE) or memory on accept is counted and
//!   logged at most once per interval, and accept retries after [`ACCEPT_RETRY`]: never a
//!   crash;
//! - a request head must arrive whole within `http.header_timeout_secs` of its first byte;
//! - a connection with no request in progress is closed after `http.idle_timeout_secs`;
//! - a peer that does not read its answers for `http.write_timeout_secs` is disconnected;
//! - a peer that leaves drops its request's handler and what it had pipelined;
//! - a request the parser refuses is answered (400, 414, 431) with the connection closed,
//!   counted in `http_requests_total{route="unknown"}` and logged at most once per interval
//!   (`WARN request rejected status=431 suppressed=N`).
//!
//! [`serve`] takes an optional TLS acceptor: the handshake then runs on each accepted
//! connection within the header deadline.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::limits;
use crate::metrics;
use crate::shutdown::Listener;

/// At shutdown, requests in flight get this long to be answered once the jobs have stopped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// File descriptors kept free of connections: log file, heartbeat, listener, HTTP client...
pub const FD_RESERVE: u64 = 64;
/// After accept fails for want of file descriptors or memory, the next try waits this long.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// The longest request line and the longest header line (name and value) accepted, as the
/// Python flavour's parser: longer is 414 (the line) or 431 (a header).
pub const MAX_LINE: usize = 8190;
/// The most header lines in a request head; more is 431.
pub const MAX_HEADERS: usize = 128;
/// A deadline is never further away than this (a year): durations stay in range.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Connections the kernel queues while the cap is reached (or accept is slower than they come).
pub const BACKLOG: u32 = 1024;

/// Binds `addr` (`host:port`, port 0 picks a free one) with a listen backlog of [`BACKLOG`]:
/// the standard library's 128 drops connections of a burst before they are accepted.
pub async fn bind(addr: &str) -> io::Result<TcpListener> {
    let mut failure = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to bind");
    for address in tokio::net::lookup_host(addr).await? {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        let listened = socket
            .set_reuseaddr(true)
            .and_then(|()| socket.bind(address))
            .and_then(|()| socket.listen(BACKLOG));
        match listened {
            Ok(listener) => return Ok(listener),
            Err(error) => failure = error,
        }
    }
    Err(failure)
}

/// The limits of `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
}

/// The soft limit on open file descriptors, or `None` when unlimited or unknown.
pub fn fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (read == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// `http.max_connections`, lowered to leave [`FD_RESERVE`] descriptors free (at least 1).
pub fn connection_cap(configured: usize, fds: Option<u64>) -> usize {
    match fds {
        Some(fds) => {
            let room = usize::try_from(fds.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
            configured.min(room).max(1)
        }
        None => configured,
    }
}

/// The phase of a connection, shared by its stream (which applies the deadlines) and its
/// service (which knows when a request is being answered).
#[derive(Default)]
struct Phase {
    state: AtomicU8,
    /// Bumped at every change, so that the stream re-arms its deadline for a new phase.
    changes: AtomicU64,
}

/// No request in progress: the idle deadline applies.
const IDLE: u8 = 0;
/// The first bytes of a request have arrived: the header deadline applies.
const HEAD: u8 = 1;
/// A request is being answered, until its answer's body is written: no read deadline (the
/// write deadline still applies).
const BUSY: u8 = 2;

impl Phase {
    fn get(&self) -> (u8, u64) {
        (
            self.state.load(Ordering::Acquire),
            self.changes.load(Ordering::Acquire),
        )
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.changes.fetch_add(1, Ordering::AcqRel);
    }
}

fn deadline(after: Duration) -> Instant {
    Instant::now() + after.min(FOREVER)
}

/// A connection's stream with its read and write deadlines.
struct Guarded<S> {
    inner: S,
    phase: Arc<Phase>,
    limits: Limits,
    read_timer: Pin<Box<Sleep>>,
    /// The phase change the read timer was armed for.
    read_armed: Option<u64>,
    write_timer: Pin<Box<Sleep>>,
    write_armed: bool,
}

impl<S> Guarded<S> {
    fn new(inner: S, phase: Arc<Phase>, limits: Limits) -> Self {
        Self {
            inner,
            phase,
            limits,
            read_timer: Box::pin(tokio::time::sleep_until(deadline(FOREVER))),
            read_armed: None,
            write_timer: Box::pin(tokio::time::sleep_until(deadline(FOREVER))),
            write_armed: false,
        }
    }

    /// A read that waits: arms the deadline of the phase; an error once it has passed.
    fn read_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (state, change) = self.phase.get();
        let limit = match state {
            IDLE => self.limits.idle_timeout,
            HEAD => self.limits.header_timeout,
            _ => {
                self.read_armed = None;
                return Poll::Pending;
            }
        };
        if self.read_armed != Some(change) {
            self.read_armed = Some(change);
            self.read_timer.as_mut().reset(deadline(limit));
        }
        ready!(self.read_timer.as_mut().poll(cx));
        if state == HEAD {
            limits::closed("header_timeout");
        }
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }

    /// A write that waits: arms the write deadline; an error once it has passed.
    fn write_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.write_armed {
            self.write_armed = true;
            let at = deadline(self.limits.write_timeout);
            self.write_timer.as_mut().reset(at);
        }
        ready!(self.write_timer.as_mut().poll(cx));
        limits::closed("write_timeout");
        Poll::Ready(io::ErrorKind::TimedOut.into())
    }

    fn wrote<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.write_deadline(cx).map(Err),
            done => {
                self.write_armed = false;
                done
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.phase.get().0 == IDLE {
                    // The first bytes of a request: its head has `header_timeout` from now.
                    this.phase.set(HEAD);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.read_deadline(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.wrote(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.wrote(cx, polled)
    }
}

/// The answer to a request refused before routing: counted, logged at most once per
/// interval, the connection closed after it.
pub fn rejected(status: StatusCode) -> Response<Body> {
    metrics::count_request("unknown".to_string(), "other", status);
    limits::rejected(status.as_u16());
    let mut response = Response::new(Body::from(status.canonical_reason().unwrap_or("")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The limits hyper leaves to the service: a request line or a header line longer than
/// [`MAX_LINE`].
fn refused<B>(request: &Request<B>) -> Option<StatusCode> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > MAX_LINE {
        return Some(StatusCode::URI_TOO_LONG);
    }
    request
        .headers()
        .iter()
        .any(|(name, value)| name.as_str().len() + 2 + value.len() > MAX_LINE)
        .then_some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
}

/// The status hyper answered to a request head it could not parse, if it answered one.
fn parse_error_status(error: &hyper::Error) -> Option<StatusCode> {
    if !error.is_parse() || error.is_parse_version_h2() {
        return None;
    }
    if error.is_parse_too_large() {
        return Some(if error.to_string().contains("URI too long") {
            StatusCode::URI_TOO_LONG
        } else {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        });
    }
    Some(StatusCode::BAD_REQUEST)
}

/// An answer's body: once hyper has written it (or given it up), the connection is idle.
struct Answer {
    inner: Body,
    phase: Arc<Phase>,
}

impl hyper::body::Body for Answer {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.phase.set(IDLE);
    }
}

/// Serves one connection until it closes, a deadline passes, or shutdown.
async fn connection<S>(stream: S, peer: SocketAddr, router: Router, limits: Limits, stop: Listener)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phase = Arc::new(Phase::default());
    let io = TokioIo::new(Guarded::new(stream, phase.clone(), limits));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        phase.set(BUSY);
        let router = router.clone();
        let phase = phase.clone();
        async move {
            let response = match refused(&request) {
                Some(status) => rejected(status),
                None => match router
                    .oneshot(with_peer(request.map(Body::new), peer))
                    .await
                {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
            };
            Ok::<_, std::convert::Infallible>(response.map(|inner| Answer { inner, phase }))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The deadlines are the stream's: hyper's own header timeout also runs while idle.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_headers(MAX_HEADERS);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = stop.wait() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = served
        && let Some(status) = parse_error_status(&error)
    {
        metrics::count_request("unknown".to_string(), "other", status);
        limits::rejected(status.as_u16());
    }
}

/// The request with the client's address, for the handlers and the audit lines
/// (`ConnectInfo<Peer>`).
fn with_peer(mut request: Request<Body>, peer: SocketAddr) -> Request<Body> {
    request
        .extensions_mut()
        .insert(ConnectInfo(crate::http::Peer(peer)));
    request
}

/// Accepts connections until `stop`, at most `limits.max_connections` open at once (lowered
/// to fit the file descriptor limit), each served by `router`; with `tls`, over TLS.
///
/// At `stop`, idle connections are closed and requests in flight get [`CLOSE_GRACE`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    stop: Listener,
) {
    let fds = fd_limit();
    let cap = connection_cap(limits.max_connections, fds);
    if cap < limits.max_connections {
        tracing::warn!(
            max_connections = cap,
            configured = limits.max_connections,
            fd_limit = fds.unwrap_or_default(),
            "http.max_connections lowered to fit the file descriptor limit"
        );
    }
    let slots = Arc::new(Semaphore::new(cap));
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                limits::connections_exhausted(cap);
                tokio::select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = stop.clone().wait() => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.clone().wait() => break,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => (stream, peer),
            Err(error) => {
                drop(permit);
                if limits::out_of_fds(&error) {
                    limits::file_descriptors_exhausted();
                } else if limits::out_of_memory(&error) {
                    limits::connections_exhausted(cap);
                } else {
                    limits::accept_failed(&error);
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (router, stop, tls) = (router.clone(), stop.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(stream, peer, router, limits, stop).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(limits.header_timeout, handshake).await
                    {
                        connection(stream, peer, router, limits, stop).await;
                    }
                }
            }
        });
    }
    // Every connection hands its slot back when it ends.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(CLOSE_GRACE, slots.acquire_many(all)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_process_own_files() {
        assert_eq!(connection_cap(1024, Some(1024)), 960);
        assert_eq!(connection_cap(1024, Some(65536)), 1024);
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(10)), 1);
    }

    #[test]
    fn over_long_lines_are_refused_as_the_python_flavour_does() {
        let long = format!("/{}", "a".repeat(MAX_LINE));
        let request = Request::get(long.as_str()).body(()).unwrap();
        assert_eq!(refused(&request), Some(StatusCode::URI_TOO_LONG));
        let request = Request::get("/")
            .header("x", "a".repeat(MAX_LINE))
            .body(())
            .unwrap();
        assert_eq!(
            refused(&request),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let request = Request::get("/").header("x", "a").body(()).unwrap();
        assert_eq!(refused(&request), None);
    }
}
