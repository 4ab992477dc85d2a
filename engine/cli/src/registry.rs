//! The built-in connectors, each under its cargo feature. Registration is explicit.

use engine_connector::Registry;

/// Every connector compiled in.
#[must_use]
pub fn builtin() -> Registry {
    let mut r = Registry::new();
    #[cfg(feature = "connector-shell")]
    r.register(&connector_shell::ShellConnector);
    #[cfg(feature = "connector-http")]
    r.register(&connector_http::HttpConnector::new());
    r
}
