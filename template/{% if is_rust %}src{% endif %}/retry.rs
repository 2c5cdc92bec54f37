//! Retries of transient errors: 100, 200, 400, 800, 1600 ms (base 100 ms, doubling, at most
//! five retries, no jitter), each retry counted; persistent errors are returned at once.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use metrics::Counter;

use crate::errors::{Classify, ErrorKind};

pub const BASE_DELAY: Duration = Duration::from_millis(100);
pub const MAX_RETRIES: usize = 5;

/// The contract's backoff: deterministic, so that operators can predict it.
pub fn policy() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(BASE_DELAY)
        .with_factor(2.0)
        .with_max_times(MAX_RETRIES)
        .with_max_delay(BASE_DELAY * 2u32.pow(MAX_RETRIES as u32))
}

/// Runs `operation`, retrying it while it fails transiently; counts each retry in `retries`.
pub async fn with_retries<T, E, F, Fut>(operation: F, retries: &Counter) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Classify + std::fmt::Display,
{
    operation
        .retry(policy())
        .sleep(tokio::time::sleep)
        .when(|e: &E| e.kind() == ErrorKind::Transient)
        .notify(|e: &E, delay: Duration| {
            retries.increment(1);
            tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "retrying");
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::InfrastructureError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn delays_double_from_100ms_five_times() {
        let delays: Vec<u128> = backon::BackoffBuilder::build(policy())
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600]);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_five_times() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), InfrastructureError> = with_retries(
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(InfrastructureError::Status(503))
            },
            &Counter::noop(),
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1 + MAX_RETRIES);
    }

    #[tokio::test(start_paused = true)]
    async fn persistent_errors_are_not_retried() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), InfrastructureError> = with_retries(
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(InfrastructureError::Status(404))
            },
            &Counter::noop(),
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
