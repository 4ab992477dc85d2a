//! The control API, served on the proxy's own port under `/__faults/`, so that
//! tests in other languages (Python against moto or fakepve) can drive it:
//!
//! | request | does |
//! |---|---|
//! | `GET /__faults/rules` | the rules with their counters: `[{"rule": {...}, "seen": 3, "fired": 2}]` |
//! | `POST /__faults/rules` | replaces the rules with the body: a rule list or one rule (JSON, see [`crate::rule`]); `?append=true` adds them after the existing ones instead |
//! | `DELETE /__faults/rules` | removes every rule |
//! | `GET /__faults/log` | the request log: `[{"method", "path", "query", "status", "faulted", "rule", "rule_name", "fault", "error"}]` |
//! | `DELETE /__faults/log` | empties the log |
//! | `POST /__faults/reset` | both: no rules, empty log |
//!
//! Answers are JSON; a bad rules document is a 400 `{"error": "..."}`. Control
//! requests are neither faulted nor logged.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::proxy::Shared;
use crate::rule::Rule;

/// The path prefix of the control API.
pub const CONTROL_PREFIX: &str = "/__faults/";

pub(crate) fn is_control(path: &str) -> bool {
    path.starts_with(CONTROL_PREFIX)
}

pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path()[CONTROL_PREFIX.len()..]
        .trim_end_matches('/')
        .to_owned();
    let append = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "append" || p == "append=true" || p == "append=1")
    });
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("failed to read request body: {e}"),
            )
        }
    };
    match (&method, path.as_str()) {
        (&Method::GET, "rules") => json_response(StatusCode::OK, &shared.rules()),
        (&Method::POST | &Method::PUT, "rules") => {
            let text = String::from_utf8_lossy(&body);
            match Rule::list_from_json(&text) {
                Ok(rules) => {
                    if append {
                        shared.add_rules(rules);
                    } else {
                        shared.set_rules(rules);
                    }
                    json_response(StatusCode::OK, &json!({ "rules": shared.rules().len() }))
                }
                Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        (&Method::DELETE, "rules") => {
            shared.set_rules(Vec::new());
            json_response(StatusCode::OK, &json!({ "rules": 0 }))
        }
        (&Method::GET, "log") => json_response(StatusCode::OK, &shared.requests()),
        (&Method::DELETE, "log") => {
            shared.clear_log();
            json_response(StatusCode::OK, &json!({ "requests": 0 }))
        }
        (&Method::POST, "reset") => {
            shared.set_rules(Vec::new());
            shared.clear_log();
            json_response(StatusCode::OK, &json!({ "rules": 0, "requests": 0 }))
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no control endpoint {method} {CONTROL_PREFIX}{path}"),
        ),
    }
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body =
        serde_json::to_vec(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
