//! The error every action returns: a kind for the engine's policy, and a message for people.

use std::time::Duration;

use engine_core::ErrorKind;

/// A classified action error.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ConnectorError {
    /// What the engine's retry and fallback policy sees.
    pub kind: ErrorKind,
    /// The provider's own code and message stay in here.
    pub message: String,
    /// The provider asked to wait this long before trying again.
    pub retry_after: Option<Duration>,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

macro_rules! ctor {
    ($($name:ident => $kind:ident),*) => {$(
        #[doc = concat!("An error of kind `", stringify!($name), "`.")]
        #[must_use]
        pub fn $name(message: impl Into<String>) -> Self {
            Self::new(ErrorKind::$kind, message)
        }
    )*};
}

impl ConnectorError {
    /// An error of any kind.
    #[must_use]
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), retry_after: None, source: None }
    }

    ctor!(transient => Transient, capacity => Capacity, quota => Quota, auth => Auth, invalid => Invalid,
          not_found => NotFound, conflict => Conflict, timeout => Timeout, cancelled => Cancelled);

    /// Attach the underlying error.
    #[must_use]
    pub fn with_source(mut self, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(e));
        self
    }

    /// Ask the engine to wait this long before the next attempt.
    #[must_use]
    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }
}
