//! Scaleway's error answers.
//!
//! # Shapes
//! Two families, both JSON with `message` and `type`, as the official SDKs
//! parse them (`scaleway-sdk-go` `scw/errors.go`: standard errors by `type`,
//! plus the Instance API's non-standard `unknown_resource` and
//! `invalid_request_error`; the Python SDK raises `ValidationError` on
//! `"message": "Validation Error"` with `fields`):
//! - Instance API: 404 `{"message": "\"<id>\" not found", "type": "unknown_resource"}`
//!   (`Security group "<id>" not found` for groups, which the Go SDK turns
//!   into resource `security_group`); 400 `{"message": "Validation Error",
//!   "fields": {"field": ["why"]}, "type": "invalid_request_error"}` or
//!   `{"message": "why", "type": "invalid_request_error"}`.
//! - Newer APIs (Block, marketplace): 404 `{"message": "resource is not found",
//!   "resource": "volume", "resource_id": "<id>", "type": "not_found"}` (the
//!   shape recorded in the Python SDK's k8s cassette); 400
//!   `invalid_arguments` with `details`; 409 `transient_state`; 412
//!   `precondition_failed`.
//! - Every API: 401 `denied_authentication` with `method` and `reason`.
//! - Out of stock: 412 `{"message": "resource is out of stock", "resource":
//!   "server", "type": "out_of_stock"}`, the body `engine-faultproxy`
//!   injects (see its `shapes` module for the sources).

use serde_json::{json, Value};

use crate::http::Resp;

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 401: no token (`invalid_argument`) or an unknown one (`not_found`).
    Auth {
        /// `invalid_argument` or `not_found`.
        reason: &'static str,
    },
    /// 404 Instance API `unknown_resource`.
    UnknownResource(String),
    /// 400 Instance API `invalid_request_error`.
    InvalidRequest {
        /// The message.
        message: String,
        /// `{"field": ["why"]}` for validation errors.
        fields: Option<Value>,
    },
    /// 404 standard `not_found`.
    NotFound {
        /// `volume`, `image`...
        resource: String,
        /// The id asked.
        id: String,
    },
    /// 400 standard `invalid_arguments`.
    InvalidArguments {
        /// The argument at fault.
        argument: String,
        /// Why.
        help: String,
    },
    /// 409 standard `transient_state`.
    TransientState {
        /// `volume`.
        resource: String,
        /// Its id.
        id: String,
        /// Its current state.
        state: String,
    },
    /// 412 standard `precondition_failed`.
    PreconditionFailed {
        /// `resource_still_in_use`...
        precondition: String,
        /// Why.
        help: String,
    },
    /// 412 `out_of_stock`.
    OutOfStock,
    /// 404 for a path no API has.
    NoRoute(String),
    /// 405 for a method a path does not take.
    MethodNotAllowed,
}

/// Message of [`ApiError::OutOfStock`], as `engine-faultproxy` answers it.
pub const OUT_OF_STOCK_MESSAGE: &str = "resource is out of stock";

impl ApiError {
    /// The HTTP answer.
    #[must_use]
    pub fn response(&self) -> Resp {
        let (status, body) = match self {
            Self::Auth { reason } => (
                401,
                json!({"message": "authentication is denied", "method": "api_key", "reason": reason, "type": "denied_authentication"}),
            ),
            Self::UnknownResource(message) => {
                (404, json!({"message": message, "type": "unknown_resource"}))
            }
            Self::InvalidRequest {
                message,
                fields: Some(fields),
            } => (
                400,
                json!({"fields": fields, "message": message, "type": "invalid_request_error"}),
            ),
            Self::InvalidRequest {
                message,
                fields: None,
            } => (
                400,
                json!({"message": message, "type": "invalid_request_error"}),
            ),
            Self::NotFound { resource, id } => (
                404,
                json!({"message": "resource is not found", "resource": resource, "resource_id": id, "type": "not_found"}),
            ),
            Self::InvalidArguments { argument, help } => (
                400,
                json!({"details": [{"argument_name": argument, "reason": "constraint", "help_message": help}], "message": "invalid argument(s)", "type": "invalid_arguments"}),
            ),
            Self::TransientState {
                resource,
                id,
                state,
            } => (
                409,
                json!({"current_state": state, "message": "resource is in a transient state", "resource": resource, "resource_id": id, "type": "transient_state"}),
            ),
            Self::PreconditionFailed { precondition, help } => (
                412,
                json!({"help_message": help, "message": "precondition is not respected", "precondition": precondition, "type": "precondition_failed"}),
            ),
            Self::OutOfStock => (
                412,
                json!({"message": OUT_OF_STOCK_MESSAGE, "resource": "server", "type": "out_of_stock"}),
            ),
            Self::NoRoute(path) => (
                404,
                json!({"message": format!("no such endpoint: {path}"), "type": "not_found"}),
            ),
            Self::MethodNotAllowed => (
                405,
                json!({"message": "method not allowed", "type": "method_not_allowed"}),
            ),
        };
        Resp::json(status, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_stock_matches_the_fault_proxy() {
        let r = ApiError::OutOfStock.response();
        assert_eq!(r.status, 412);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"message":"resource is out of stock","resource":"server","type":"out_of_stock"}"#
        );
    }
}
