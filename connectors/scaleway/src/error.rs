//! The errors of the `scaleway` connector and how each maps to an [`ErrorKind`].
//!
//! The Scaleway APIs answer errors as JSON: `{"message": ..., "type": ...}` plus fields
//! that depend on the type (`details` for `invalid_arguments` and `quotas_exceeded`,
//! `resource`/`resource_id` for `not_found` and `out_of_stock`, `method`/`reason` for
//! `denied_authentication`). Older Instance API answers carry `fields` instead of `details`.
//! The kind is decided on `type` first, then on the HTTP status:
//!
//! | Scaleway answered / what happened | kind |
//! |---|---|
//! | `out_of_stock`, any 412, "no more servers of this type available" | `capacity` |
//! | `quotas_exceeded` | `quota` |
//! | `denied_authentication`, `permissions_denied`, `authentication_failed`, 401, 403, no secret key | `auth` |
//! | `not_found`, `unknown_resource`, 404 | `not_found` |
//! | `conflict`, `transient_state`, `resource_locked`, `already_exists`, 409 | `conflict` |
//! | `invalid_arguments`, `invalid_request_error`, `precondition_failed` (other than 412), other 4xx | `invalid` |
//! | 429, 5xx, a connection error, an answer that is not JSON | `transient` (with `Retry-After`) |
//!
//! Messages keep the API's type, message and the arguments it named; the secret key is sent in
//! the `X-Auth-Token` header only, which no message includes.

use std::time::Duration;

use engine_connector::{ConnectorError, ErrorKind};
use serde_json::Value;

/// What went wrong talking to Scaleway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error.
    #[error("{what}: Scaleway answered {status} {error_type}: {message}")]
    Api {
        /// What was being done (`POST /instance/v1/zones/fr-par-2/servers`).
        what: String,
        /// HTTP status.
        status: u16,
        /// The error's `type` (`out_of_stock`, `invalid_arguments`...), or `http_STATUS`.
        error_type: String,
        /// The API's message, with the arguments or quotas it named.
        message: String,
        /// A `Retry-After` the answer carried, in seconds.
        retry_after: Option<u64>,
    },
    /// The API could not be reached, or the answer broke off.
    #[error("{what}: cannot reach Scaleway at {endpoint}: {detail}")]
    Transport {
        /// What was being done.
        what: String,
        /// The API URL.
        endpoint: String,
        /// The innermost cause.
        detail: String,
    },
    /// An answer that is not the JSON expected.
    #[error("{what}: unexpected answer from Scaleway: {detail}")]
    Parse {
        /// What was being done.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// No secret key was found.
    #[error("{0}")]
    NoCredentials(String),
    /// The step was cancelled during a call.
    #[error("{0}: cancelled while waiting for Scaleway")]
    Cancelled(String),
}

/// The kind of a Scaleway error `type` (and HTTP status, for types not listed).
#[must_use]
pub fn type_kind(error_type: &str, status: u16, message: &str) -> ErrorKind {
    let lower = message.to_ascii_lowercase();
    match error_type {
        "out_of_stock" => ErrorKind::Capacity,
        _ if lower.contains("no more servers of this type available") || lower.contains("out of stock") => ErrorKind::Capacity,
        "quotas_exceeded" => ErrorKind::Quota,
        "denied_authentication" | "authentication_failed" | "permissions_denied" | "unauthorized" | "forbidden" => ErrorKind::Auth,
        "not_found" | "unknown_resource" => ErrorKind::NotFound,
        "conflict" | "transient_state" | "resource_locked" | "already_exists" | "locked" => ErrorKind::Conflict,
        "invalid_arguments" | "invalid_request_error" | "resource_expired" => ErrorKind::Invalid,
        _ if status == 412 => ErrorKind::Capacity,
        _ if status == 401 || status == 403 => ErrorKind::Auth,
        _ if status == 404 => ErrorKind::NotFound,
        _ if status == 409 => ErrorKind::Conflict,
        _ if status == 429 || status >= 500 => ErrorKind::Transient,
        _ => ErrorKind::Invalid,
    }
}

/// `(type, message)` of a Scaleway error body: the message gets the arguments of
/// `invalid_arguments` (`details` or the older `fields`), the quotas of `quotas_exceeded`,
/// the resource of `not_found`/`out_of_stock` and the reason of `denied_authentication`.
#[must_use]
pub fn parse_error(status: u16, body: &str) -> (String, String) {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        let text: String = body.chars().take(300).collect();
        return (format!("http_{status}"), if text.trim().is_empty() { format!("HTTP {status}") } else { text });
    };
    let error_type = v.get("type").and_then(Value::as_str).map_or_else(|| format!("http_{status}"), str::to_string);
    let mut message = v.get("message").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut extra: Vec<String> = Vec::new();
    if let Some(details) = v.get("details").and_then(Value::as_array) {
        for d in details {
            if let Some(arg) = d.get("argument_name").and_then(Value::as_str) {
                let reason = d.get("reason").and_then(Value::as_str).unwrap_or_default();
                let help = d.get("help_message").and_then(Value::as_str).unwrap_or_default();
                extra.push(format!("argument `{arg}` {reason}{}", if help.is_empty() { String::new() } else { format!(" ({help})") }));
            } else if let Some(res) = d.get("resource").and_then(Value::as_str) {
                let quota = d.get("quota").map(Value::to_string).unwrap_or_default();
                let current = d.get("current").map(Value::to_string).unwrap_or_default();
                extra.push(format!("quota of {res}: {current} used of {quota}"));
            }
        }
    }
    if let Some(fields) = v.get("fields").and_then(Value::as_object) {
        for (name, reasons) in fields {
            let r: Vec<String> = reasons.as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect()).unwrap_or_default();
            extra.push(format!("field `{name}`: {}", r.join("; ")));
        }
    }
    if let Some(res) = v.get("resource").and_then(Value::as_str) {
        match v.get("resource_id").and_then(Value::as_str) {
            Some(id) => extra.push(format!("resource {res} {id}")),
            None => extra.push(format!("resource {res}")),
        }
    }
    if let Some(reason) = v.get("reason").and_then(Value::as_str) {
        extra.push(format!("reason {reason}"));
    }
    if message.is_empty() {
        message = format!("HTTP {status}");
    }
    if !extra.is_empty() {
        message = format!("{message} ({})", extra.join(", "));
    }
    (error_type, message)
}

impl Error {
    /// The kind the engine's policy sees.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Api { error_type, status, message, .. } => type_kind(error_type, *status, message),
            Self::Transport { .. } | Self::Parse { .. } => ErrorKind::Transient,
            Self::NoCredentials(_) => ErrorKind::Auth,
            Self::Cancelled(_) => ErrorKind::Cancelled,
        }
    }

    /// The error's `type`, if the API answered one.
    #[must_use]
    pub fn error_type(&self) -> Option<&str> {
        match self {
            Self::Api { error_type, .. } => Some(error_type),
            _ => None,
        }
    }
}

impl From<Error> for ConnectorError {
    fn from(e: Error) -> Self {
        let kind = e.kind();
        let mut message = e.to_string();
        if matches!(e, Error::Api { .. }) {
            message.push_str(match kind {
                ErrorKind::Capacity => "; no stock of that type there now: try another zone or commercial type (scaleway.availability, or a `fallback:`)",
                ErrorKind::Quota => "; ask for higher quotas in the console (Organization > Quotas); GPU types have their own",
                ErrorKind::Auth => "; check the secret key (SCW_SECRET_KEY, `connectors: scaleway: secret_key`) and its IAM permissions",
                _ => "",
            });
        }
        let retry_after = match &e {
            Error::Api { retry_after: Some(s), .. } => Some(Duration::from_secs(*s)),
            _ => None,
        };
        let mut err = ConnectorError::new(kind, message);
        err.retry_after = retry_after;
        err.with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(status: u16, body: &str) -> (ErrorKind, String) {
        let (t, m) = parse_error(status, body);
        (type_kind(&t, status, &m), m)
    }

    #[test]
    fn real_error_bodies() {
        // The official Python SDK's cassette (k8s/v1 test_k8s_cluster_list).
        let (k, m) = kind_of(404, r#"{"message": "resource is not found", "resource": "cluster", "resource_id": "9c1b1a3e-0000-4000-8000-000000000000", "type": "not_found"}"#);
        assert_eq!(k, ErrorKind::NotFound);
        assert!(m.contains("resource cluster 9c1b1a3e"), "{m}");
        // Out of stock: 412 with type out_of_stock (scaleway-sdk-go OutOfStockError).
        let (k, _) = kind_of(412, r#"{"message":"resource is out of stock","resource":"server","type":"out_of_stock"}"#);
        assert_eq!(k, ErrorKind::Capacity);
        // The Instance API's older wording of the same.
        let (k, _) = kind_of(400, r#"{"message": "No more servers of this type available in this zone.", "type": "precondition_failed"}"#);
        assert_eq!(k, ErrorKind::Capacity);
        let (k, _) = kind_of(412, "");
        assert_eq!(k, ErrorKind::Capacity);
        // Quotas (scaleway-sdk-go QuotasExceededError).
        let (k, m) = kind_of(403, r#"{"details":[{"resource":"instances_gpu_l4_1","quota":0,"current":0}],"message":"quota(s) exceeded for this resource","type":"quotas_exceeded"}"#);
        assert_eq!(k, ErrorKind::Quota);
        assert!(m.contains("instances_gpu_l4_1"), "{m}");
        // Invalid arguments keep the argument name and reason.
        let (k, m) = kind_of(400, r#"{"details":[{"argument_name":"commercial_type","reason":"constraint","help_message":"unknown commercial type"}],"message":"invalid argument(s)","type":"invalid_arguments"}"#);
        assert_eq!(k, ErrorKind::Invalid);
        assert!(m.contains("argument `commercial_type` constraint (unknown commercial type)"), "{m}");
        // The Instance API's older field list.
        let (k, m) = kind_of(400, r#"{"fields": {"volumes": ["total local volume size must be equal to 20GB"]}, "message": "Validation Error", "type": "invalid_request_error"}"#);
        assert_eq!(k, ErrorKind::Invalid);
        assert!(m.contains("field `volumes`"), "{m}");
        let (k, m) = kind_of(401, r#"{"message":"authentication is denied","method":"api_key","reason":"invalid_argument","type":"denied_authentication"}"#);
        assert_eq!(k, ErrorKind::Auth);
        assert!(m.contains("reason invalid_argument"), "{m}");
        let (k, _) = kind_of(403, r#"{"message":"insufficient permissions","type":"permissions_denied","details":[]}"#);
        assert_eq!(k, ErrorKind::Auth);
        let (k, _) = kind_of(409, r#"{"message":"resource is in a transient state","resource":"server","resource_id":"x","current_state":"starting","type":"transient_state"}"#);
        assert_eq!(k, ErrorKind::Conflict);
        assert_eq!(kind_of(409, "{}").0, ErrorKind::Conflict);
        assert_eq!(kind_of(503, "<html>bad gateway</html>").0, ErrorKind::Transient);
        assert_eq!(kind_of(429, r#"{"message":"rate limited","type":"too_many_requests"}"#).0, ErrorKind::Transient);
        assert_eq!(kind_of(404, "").0, ErrorKind::NotFound);
        assert_eq!(kind_of(400, "{}").0, ErrorKind::Invalid);
    }

    #[test]
    fn connector_error_keeps_type_and_retry_after() {
        let e: ConnectorError = Error::Api { what: "POST /x".into(), status: 503, error_type: "http_503".into(), message: "HTTP 503".into(), retry_after: Some(4) }.into();
        assert_eq!(e.kind, ErrorKind::Transient);
        assert_eq!(e.retry_after, Some(Duration::from_secs(4)));
        let e: ConnectorError = Error::Api { what: "POST /servers/x/action".into(), status: 412, error_type: "out_of_stock".into(), message: "resource is out of stock".into(), retry_after: None }.into();
        assert_eq!(e.kind, ErrorKind::Capacity);
        assert!(e.message.contains("out_of_stock") && e.message.contains("another zone"), "{}", e.message);
    }
}
