//! The `http` connector: `http.check` polls a URL until it answers as expected (a health
//! check after a deploy), and `http.request` sends one request and classifies the answer
//! into the engine's error kinds.
//!
//! One [`HttpConnector`] holds one pooled [`reqwest`] client (rustls) that both actions share,
//! and builds a second one, which skips TLS verification, the first time an input asks for
//! `insecure: true`.
//!
//! ```
//! use engine_connector::Connector;
//! let http = connector_http::HttpConnector::new();
//! let ids: Vec<&str> = http.actions().iter().map(|a| a.id()).collect();
//! assert_eq!(ids, ["http.check", "http.request"]);
//! ```

mod check;
mod client;
mod error;
mod request;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use engine_connector::{Connector, DynAction};

pub use check::{CheckInput, CheckOutput, HttpCheck, CHECK_BODY_LIMIT};
pub use client::ExpectStatus;
pub use engine_core::duration::{parse_duration, DurationStr, DURATION_PATTERN};
pub use error::{status_kind, Error};
pub use request::{HttpRequest, RequestInput, RequestOutput, REQUEST_BODY_LIMIT};

/// The `http` connector. Clones share the connection pool.
#[derive(Debug, Clone, Default)]
pub struct HttpConnector {
    clients: Arc<client::Clients>,
}

impl HttpConnector {
    /// A connector with its own connection pool. Building the client is deferred to the
    /// first request, so this cannot fail.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `http.check`, sharing this connector's clients.
    #[must_use]
    pub fn check(&self) -> HttpCheck {
        HttpCheck { clients: self.clients.clone() }
    }

    /// `http.request`, sharing this connector's clients.
    #[must_use]
    pub fn request(&self) -> HttpRequest {
        HttpRequest { clients: self.clients.clone() }
    }
}

impl Connector for HttpConnector {
    fn name(&self) -> &'static str {
        "http"
    }

    fn description(&self) -> &'static str {
        "HTTP health checks and requests"
    }

    fn actions(&self) -> Vec<Arc<dyn DynAction>> {
        vec![Arc::new(self.check()), Arc::new(self.request())]
    }
}
