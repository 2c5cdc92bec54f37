//! The three kinds of error, each classified transient (retried) or persistent (counted and
//! alerted on, never retried).

use thiserror::Error;

/// An OS error in the C library's words (`No such file or directory`), without the
/// ` (os error 2)` that Rust adds: every error line says it the same way in both flavours.
pub fn os_reason(error: &std::io::Error) -> String {
    let text = error.to_string();
    match error.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map_or_else(|| text.clone(), str::to_string),
        None => text,
    }
}

/// A number as log lines, error lines and the metrics page write it in both flavours: an
/// integral value without `.0` (`30`), others in the shortest form that reads back the same,
/// never with an exponent (`0.5`, `0.0000001`); `+Inf`, `-Inf`, `NaN` as Prometheus does.
pub fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        value.to_string()
    }
}

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection, timeout, rate limit, unavailable: retried.
    Transient,
    /// Validation, auth, not found: counted, not retried.
    Persistent,
}

impl ErrorKind {
    /// The `kind` label and log value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Persistent => "persistent",
        }
    }
}

/// Something that knows whether retrying it can help.
pub trait Classify {
    fn kind(&self) -> ErrorKind;
}

/// Model validation failed.
#[derive(Debug, Error)]
pub enum DomainError {
    #[error("the upstream's answer is not JSON")]
    MalformedBody,
}

/// Business logic refused to go on.
#[derive(Debug, Error)]
pub enum ApplicationError {
    #[error("{0}")]
    Unprepared(String),
}

/// Network, RPC or storage failed.
#[derive(Debug, Error)]
pub enum InfrastructureError {
    #[error("cannot reach upstream: {0}")]
    Connect(String),
    #[error("cannot reach upstream: timed out after {}s", number(*.0))]
    Timeout(f64),
    #[error("upstream answered {0}")]
    Status(u16),
    #[error("cannot reach upstream: {0}")]
    Request(String),
    #[error("cannot store the last value: {0}")]
    Storage(String),
}

impl Classify for DomainError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Persistent
    }
}

impl Classify for ApplicationError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Persistent
    }
}

impl Classify for InfrastructureError {
    fn kind(&self) -> ErrorKind {
        match self {
            InfrastructureError::Connect(_) | InfrastructureError::Timeout(_) => {
                ErrorKind::Transient
            }
            // 408 Request Timeout, 429 Too Many Requests and 5xx may pass; other 4xx will not.
            InfrastructureError::Status(code) if *code == 408 || *code == 429 || *code >= 500 => {
                ErrorKind::Transient
            }
            InfrastructureError::Request(_) => ErrorKind::Transient,
            InfrastructureError::Status(_) | InfrastructureError::Storage(_) => {
                ErrorKind::Persistent
            }
        }
    }
}

/// Any error of the example work.
#[derive(Debug, Error)]
pub enum WorkError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Application(#[from] ApplicationError),
    #[error(transparent)]
    Infrastructure(#[from] InfrastructureError),
}

impl Classify for WorkError {
    fn kind(&self) -> ErrorKind {
        match self {
            WorkError::Domain(e) => e.kind(),
            WorkError::Application(e) => e.kind(),
            WorkError::Infrastructure(e) => e.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_the_contract_says() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(
                InfrastructureError::Status(code).kind(),
                ErrorKind::Transient,
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 422] {
            assert_eq!(
                InfrastructureError::Status(code).kind(),
                ErrorKind::Persistent,
                "{code}"
            );
        }
    }

    #[test]
    fn only_infrastructure_errors_can_be_transient() {
        assert_eq!(
            WorkError::from(InfrastructureError::Timeout(1.0)).kind(),
            ErrorKind::Transient
        );
        assert_eq!(
            WorkError::from(InfrastructureError::Connect("refused".into())).kind(),
            ErrorKind::Transient
        );
        assert_eq!(
            WorkError::from(DomainError::MalformedBody).kind(),
            ErrorKind::Persistent
        );
        assert_eq!(
            WorkError::from(ApplicationError::Unprepared("x".into())).kind(),
            ErrorKind::Persistent
        );
        assert_eq!(ErrorKind::Persistent.as_str(), "persistent");
    }

    #[test]
    fn os_errors_read_as_the_c_library_words_them() {
        let missing = std::io::Error::from_raw_os_error(2);
        assert_eq!(os_reason(&missing), "No such file or directory");
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(1e-7), "0.0000001");
        assert_eq!(number(1_764_250_000.0), "1764250000");
    }
}
