//! Signals and graceful shutdown.
//!
//! SIGTERM or SIGINT start a drain: ready turns 503 at once, no new work starts, in-flight
//! work finishes within `shutdown.timeout_secs`. A second SIGINT exits at once. SIGHUP
//! reopens the log file.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::signal::unix::{Signal as Stream, SignalKind, signal};
use tokio::sync::watch;

/// The signals the service reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Interrupt,
    Hangup,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
            Signal::Hangup => "SIGHUP",
        }
    }
}

/// The signal handlers, installed once at start.
pub struct Signals {
    term: Stream,
    int: Stream,
    hup: Stream,
}

impl Signals {
    pub fn install() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal received.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Terminate,
            _ = self.int.recv() => Signal::Interrupt,
            _ = self.hup.recv() => Signal::Hangup,
        }
    }
}

/// Tells every task that shutdown has started.
#[derive(Clone)]
pub struct Trigger(watch::Sender<bool>);

/// What a task holds to learn that shutdown has started.
#[derive(Clone)]
pub struct Listener(watch::Receiver<bool>);

/// A connected trigger and listener.
pub fn channel() -> (Trigger, Listener) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Listener(rx))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Listener {
    /// Resolves once shutdown has started (at once if it already has).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }

    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }
}

/// The drain did not finish in time.
#[derive(Debug, PartialEq, Eq)]
pub struct Overran;

/// Waits for `drain` at most `timeout`.
pub async fn drain_within<F: Future<Output = ()>>(
    drain: F,
    timeout: Duration,
) -> Result<(), Overran> {
    tokio::time::timeout(timeout, drain)
        .await
        .map_err(|_| Overran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_learn_of_the_trigger() {
        let (trigger, listener) = channel();
        assert!(!listener.is_stopping());
        let waiting = tokio::spawn(listener.clone().wait());
        trigger.fire();
        waiting.await.unwrap();
        assert!(listener.is_stopping());
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_past_its_timeout_overruns() {
        let slow = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(
            drain_within(slow, Duration::from_secs(1)).await,
            Err(Overran)
        );
        assert_eq!(drain_within(async {}, Duration::from_secs(1)).await, Ok(()));
    }
}
