//! The errors of the `http` connector and how each maps to an [`ErrorKind`].

use std::time::Duration;

use engine_connector::{ConnectorError, ErrorKind};

/// What went wrong in an `http` action.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input the schema lets through but that cannot be used (URL, method, header).
    #[error("{0}")]
    Input(String),
    /// The HTTP client could not be built.
    #[error("failed to build the http client: {0}")]
    Client(#[source] reqwest::Error),
    /// The request could not be sent, or its answer could not be read.
    #[error("{method} {url} failed: {detail}")]
    Send {
        /// Request method.
        method: String,
        /// Request URL, without a password.
        url: String,
        /// What failed, from the innermost cause.
        detail: String,
        /// The kind this failure counts as.
        kind: ErrorKind,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// No complete answer within the request's timeout.
    #[error("{method} {url} timed out after {timeout}")]
    TimedOut {
        /// Request method.
        method: String,
        /// Request URL, without a password.
        url: String,
        /// The timeout, as written.
        timeout: String,
    },
    /// The answer's status was not one that was asked for.
    #[error("{method} {url} returned {status}{expected}: {body}")]
    Status {
        /// Request method.
        method: String,
        /// Request URL, without a password.
        url: String,
        /// The status received.
        status: u16,
        /// ` (expected ...)` or empty.
        expected: String,
        /// The start of the body.
        body: String,
        /// A `Retry-After` header in seconds.
        retry_after: Option<Duration>,
    },
    /// `http.check` never saw the answer it waits for.
    #[error("{method} {url} was not ready within {within} after {attempts} poll{plural}: {last}", plural = if *attempts == 1 { "" } else { "s" })]
    NotReady {
        /// Request method.
        method: String,
        /// Request URL, without a password.
        url: String,
        /// The `within` input, as written.
        within: String,
        /// Polls made.
        attempts: u32,
        /// The last status or connection error.
        last: String,
    },
    /// The step was cancelled.
    #[error("{method} {url} cancelled{after}")]
    Cancelled {
        /// Request method.
        method: String,
        /// Request URL, without a password.
        url: String,
        /// ` after N polls` or empty.
        after: String,
    },
}

impl Error {
    /// The kind the engine's retry and fallback policy sees.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Input(_) | Self::Client(_) => ErrorKind::Invalid,
            Self::Send { kind, .. } => *kind,
            Self::TimedOut { .. } => ErrorKind::Transient,
            Self::Status { status, .. } => status_kind(*status),
            Self::NotReady { .. } => ErrorKind::Timeout,
            Self::Cancelled { .. } => ErrorKind::Cancelled,
        }
    }
}

/// The kind of an unwanted status: 429, 408 and 5xx are `transient`, 401 and 403 `auth`,
/// 404 `not_found`, 409 `conflict`, anything else `invalid`.
#[must_use]
pub fn status_kind(status: u16) -> ErrorKind {
    match status {
        408 | 429 | 500..=599 => ErrorKind::Transient,
        401 | 403 => ErrorKind::Auth,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        _ => ErrorKind::Invalid,
    }
}

impl From<Error> for ConnectorError {
    fn from(e: Error) -> Self {
        let kind = e.kind();
        let message = e.to_string();
        let retry_after = match &e {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        };
        let mut out = match e {
            Error::Client(source) | Error::Send { source, .. } => ConnectorError::new(kind, message).with_source(source),
            _ => ConnectorError::new(kind, message),
        };
        out.retry_after = retry_after;
        out
    }
}

/// Classify a client error and say what failed in a few words, from its innermost cause
/// (`Connection refused (os error 111)`, `invalid peer certificate: UnknownIssuer`).
pub(crate) fn describe(e: &reqwest::Error) -> (ErrorKind, String) {
    let mut inner: &dyn std::error::Error = e;
    let mut chain = Vec::new();
    while let Some(s) = inner.source() {
        chain.push(s.to_string());
        inner = s;
    }
    let detail = chain.last().cloned().unwrap_or_else(|| e.to_string());
    let certificate = chain.iter().any(|c| c.contains("certificate"));
    let kind = if e.is_builder() || e.is_redirect() || certificate {
        ErrorKind::Invalid
    } else {
        // Refused, reset, closed early, timed out, unreadable body: worth another try.
        ErrorKind::Transient
    };
    let detail = if e.is_connect() && !detail.to_lowercase().contains("connect") {
        format!("cannot connect: {detail}")
    } else if certificate {
        format!("{detail} (set `insecure: true` to skip TLS verification)")
    } else {
        detail
    };
    (kind, detail)
}
