//! Provider-shaped error answers, and where their shapes come from.
//!
//! # EC2 (Query API)
//! Every EC2 error is XML with a `<Response>` root (not the `<ErrorResponse>`
//! of other AWS query services), one `<Error>` in `<Errors>` and a
//! `<RequestID>` (capital `ID`):
//!
//! ```xml
//! <?xml version="1.0" encoding="UTF-8"?>
//! <Response><Errors><Error><Code>InsufficientInstanceCapacity</Code><Message>...</Message></Error></Errors><RequestID>...</RequestID></Response>
//! ```
//!
//! Sources: the EC2 API reference, "Error codes for the Amazon EC2 API",
//! section "Example error response"
//! (<https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html#api-error-response>),
//! which also sorts the codes: client errors come with a 4xx status, server
//! errors (`InsufficientInstanceCapacity` among them) with a 5xx one; and moto's
//! `EC2_ERROR_RESPONSE` template (`moto/ec2/exceptions.py`), which copies that
//! shape because `terraform destroy` rejects another root tag.
//! `RequestLimitExceeded` (the EC2 throttling code, "Troubleshooting API request
//! errors" in the same reference) is answered with 503 Service Unavailable;
//! AWS SDKs retry it by its code (botocore's `throttling` errors) whatever the
//! status, so a client must not rely on the status alone. The
//! `InsufficientInstanceCapacity` message follows the wording AWS uses ("We
//! currently do not have sufficient capacity in the Availability Zone you
//! requested...") without naming a type or zone.
//!
//! # Scaleway (Instance API)
//! The Instance API answers errors as JSON `{"message": ..., "type": ...}`,
//! plus `resource` for some types. An out-of-stock server type is
//! `"type": "out_of_stock"` with a `resource`: the official Go SDK maps that
//! type to `OutOfStockError{Resource}` (`scaleway-sdk-go`, `scw/errors.go`,
//! `unmarshalStandardError`), and the official JS SDK's
//! `OutOfStockError.fromJSON` only accepts a body whose `resource` is a string
//! (`@scaleway/sdk-client`, `dist/scw/errors/standard/out-of-stock-error.js`).
//! The status is 412 Precondition Failed, as observed on server creates in
//! fr-par-2 and recorded in public client code that handles it
//! (`scaleway HTTP 412: {"type":"out_of_stock"}`). No recorded real
//! out-of-stock body was found; the `message` follows the wording of the
//! standard errors that are recorded (the official Python SDK's cassette
//! `scaleway/k8s/v1/tests/cassettes/test_k8s_cluster_list.cassette.yaml` holds
//! `{"message": "resource is not found", "resource": "cluster",
//! "resource_id": "...", "type": "not_found"}`), and `"resource": "server"` is
//! our guess. Clients must classify on `type`, never on the message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `Content-Type` EC2 answers errors with.
pub const EC2_CONTENT_TYPE: &str = "text/xml;charset=UTF-8";

/// HTTP status of [`crate::Fault::Ec2InsufficientCapacity`].
pub const EC2_INSUFFICIENT_CAPACITY_STATUS: u16 = 500;
/// Error code of [`crate::Fault::Ec2InsufficientCapacity`].
pub const EC2_INSUFFICIENT_CAPACITY_CODE: &str = "InsufficientInstanceCapacity";
/// Message of [`crate::Fault::Ec2InsufficientCapacity`].
pub const EC2_INSUFFICIENT_CAPACITY_MESSAGE: &str = "We currently do not have sufficient capacity in the \
    Availability Zone you requested. Our system will be working on provisioning additional capacity. \
    You can currently get capacity by not specifying an Availability Zone in your request or choosing \
    a different Availability Zone.";

/// HTTP status of [`crate::Fault::Ec2Throttling`].
pub const EC2_THROTTLING_STATUS: u16 = 503;
/// Error code of [`crate::Fault::Ec2Throttling`].
pub const EC2_THROTTLING_CODE: &str = "RequestLimitExceeded";
/// Message of [`crate::Fault::Ec2Throttling`].
pub const EC2_THROTTLING_MESSAGE: &str = "Request limit exceeded.";

/// HTTP status of [`crate::Fault::ScalewayOutOfStock`].
pub const SCALEWAY_OUT_OF_STOCK_STATUS: u16 = 412;
/// Error type of [`crate::Fault::ScalewayOutOfStock`].
pub const SCALEWAY_OUT_OF_STOCK_TYPE: &str = "out_of_stock";
/// Message of [`crate::Fault::ScalewayOutOfStock`] (ours, see the module docs).
pub const SCALEWAY_OUT_OF_STOCK_MESSAGE: &str = "resource is out of stock";
/// Resource of [`crate::Fault::ScalewayOutOfStock`] (ours, see the module docs).
pub const SCALEWAY_OUT_OF_STOCK_RESOURCE: &str = "server";

/// The EC2 XML error body for `code` and `message`.
#[must_use]
pub fn ec2_error_body(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message>\
         </Error></Errors><RequestID>{}</RequestID></Response>",
        xml_escape(code),
        xml_escape(message),
        xml_escape(request_id)
    )
}

/// The Scaleway Instance API JSON error body.
#[must_use]
pub fn scaleway_error_body(error_type: &str, message: &str, resource: Option<&str>) -> String {
    let mut body = serde_json::Map::new();
    body.insert("message".to_owned(), message.into());
    if let Some(resource) = resource {
        body.insert("resource".to_owned(), resource.into());
    }
    body.insert("type".to_owned(), error_type.into());
    serde_json::Value::Object(body).to_string()
}

/// A fresh request id in UUID form, like the ones AWS returns.
#[must_use]
pub fn request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    #[allow(clippy::cast_possible_truncation)]
    let (hi, lo) = (
        (nanos >> 64) as u64 ^ (nanos as u64).rotate_left(17),
        nanos as u64,
    );
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (lo >> 32) as u32,
        (lo >> 16) & 0xffff,
        (hi ^ n) & 0xfff,
        (n >> 12) & 0xfff,
        (lo ^ n.rotate_left(29)) & 0xffff_ffff_ffff
    )
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_body_shape() {
        let body = ec2_error_body("InsufficientInstanceCapacity", "a < b & c", "rid");
        assert!(body
            .starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"));
        assert!(body.contains(
            "<Code>InsufficientInstanceCapacity</Code><Message>a &lt; b &amp; c</Message>"
        ));
        assert!(body.ends_with("</Error></Errors><RequestID>rid</RequestID></Response>"));
    }

    #[test]
    fn scaleway_body_shape() {
        let body = scaleway_error_body("out_of_stock", "m", Some("server"));
        assert_eq!(
            body,
            r#"{"message":"m","resource":"server","type":"out_of_stock"}"#
        );
        assert_eq!(
            scaleway_error_body("t", "m", None),
            r#"{"message":"m","type":"t"}"#
        );
    }

    #[test]
    fn request_ids_differ_and_look_like_uuids() {
        let (a, b) = (request_id(), request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }
}
