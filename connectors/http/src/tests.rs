//! Tests against a real HTTP server on 127.0.0.1 that answers from a script.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine_connector::{Action, CancellationToken, Connector, ConnectorError, DynAction, ErrorKind, LogStream, ResourceRecord, StepContext, StepRef, StepSink};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{CheckInput, HttpConnector, RequestInput, CHECK_BODY_LIMIT, DURATION_PATTERN};

// ---------------------------------------------------------------- the scripted server

/// One scripted answer.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// Never answer (for timeouts and cancellation).
    hang: bool,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: String::new(), hang: false }
    }
    fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    fn hang() -> Self {
        Self { hang: true, ..Self::status(200) }
    }
}

/// A request the server saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// Answers each path from its script; the last reply of a script repeats. Unknown paths get 404.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

type Routes = Arc<Mutex<HashMap<String, VecDeque<Reply>>>>;

impl Server {
    async fn start(routes: Vec<(&str, Vec<Reply>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Routes = Arc::new(Mutex::new(routes.into_iter().map(|(p, r)| (p.to_string(), r.into())).collect()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (routes.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, r.clone(), s.clone()));
            }
        });
        Self { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(mut stream: TcpStream, routes: Routes, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let headers: HashMap<String, String> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    seen.lock().unwrap().push(Seen { method, path: path.clone(), headers, body: String::from_utf8_lossy(&body).into_owned() });
    let reply = {
        let mut routes = routes.lock().unwrap();
        match routes.get_mut(&path) {
            Some(q) if q.len() > 1 => q.pop_front().unwrap(),
            Some(q) => q.front().cloned().unwrap_or_else(|| Reply::status(404)),
            None => Reply::status(404).body("no such path"),
        }
    };
    if reply.hang {
        std::future::pending::<()>().await;
    }
    let reason = reqwest::StatusCode::from_u16(reply.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Whatever");
    let mut out = format!("HTTP/1.1 {} {reason}\r\ncontent-length: {}\r\nconnection: close\r\n", reply.status, reply.body.len());
    for (k, v) in &reply.headers {
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A port with nothing listening on it.
async fn refused_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------- a context that keeps logs

#[derive(Debug, Default)]
struct Recorder {
    logs: Mutex<Vec<String>>,
    stages: Mutex<Vec<String>>,
}

#[async_trait]
impl StepSink for Recorder {
    fn progress(&self, _: &StepRef, _: u32, stage: &str, _: Option<u8>) {
        self.stages.lock().unwrap().push(stage.to_string());
    }
    fn log(&self, _: &StepRef, stream: LogStream, line: &str) {
        self.logs.lock().unwrap().push(format!("{}: {line}", stream.as_str()));
    }
    async fn record(&self, _: &ResourceRecord) -> Result<(), ConnectorError> {
        Ok(())
    }
}

fn context() -> (StepContext, Arc<Recorder>, CancellationToken) {
    let rec = Arc::new(Recorder::default());
    let cancel = CancellationToken::new();
    let cx = StepContext::new("test-run", StepRef { step: "s".into(), index: None }, cancel.clone(), rec.clone());
    (cx, rec, cancel)
}

fn check_input(v: Value) -> CheckInput {
    serde_json::from_value(v).unwrap()
}

fn request_input(v: Value) -> RequestInput {
    serde_json::from_value(v).unwrap()
}

// ---------------------------------------------------------------- http.check

#[tokio::test]
async fn check_passes_on_the_third_poll() {
    let server = Server::start(vec![("/health", vec![Reply::status(503), Reply::status(503), Reply::status(200).body("ok")])]).await;
    let (cx, rec, _) = context();
    let check = HttpConnector::new().check();
    let input = check_input(json!({"url": server.url("/health"), "interval": "10ms", "within": "5s"}));
    check.validate(&input).unwrap();
    let out = check.run(input, &cx).await.unwrap();
    assert_eq!((out.status, out.body.as_str(), out.attempts), (200, "ok", 3));
    assert!(out.elapsed_ms >= 20, "{out:?}");
    assert_eq!(server.seen().len(), 3);
    let logs = rec.logs.lock().unwrap().clone();
    // One line for the first 503 (the second one is no news), one for the answer that passed.
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(logs[0].starts_with("stderr: GET http://") && logs[0].contains("poll 1: status 503 (expected 200)"), "{logs:?}");
    assert!(logs[1].contains("ready after 3 polls"), "{logs:?}");
    assert_eq!(rec.stages.lock().unwrap().as_slice(), ["polling"]);
}

#[tokio::test]
async fn check_times_out_naming_url_polls_and_last_status() {
    let server = Server::start(vec![("/down", vec![Reply::status(503).body("not yet")])]).await;
    let (cx, rec, _) = context();
    let check = HttpConnector::new().check();
    let url = server.url("/down");
    let started = tokio::time::Instant::now();
    let e = check.run(check_input(json!({"url": url, "interval": "15ms", "within": "40ms"})), &cx).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    let polls = server.seen().len();
    assert!(polls >= 2, "{polls}");
    assert!(e.message.contains(&url), "{e}");
    assert!(e.message.contains(&format!("within 40ms after {polls} polls")), "{e}");
    assert!(e.message.contains("last status 503 (expected 200)"), "{e}");
    assert_eq!(rec.logs.lock().unwrap().len(), 1, "only the first 503 is logged");
}

#[tokio::test]
async fn check_times_out_on_a_refused_port_with_the_connection_error() {
    let port = refused_port().await;
    let (cx, _, _) = context();
    let e = HttpConnector::new()
        .check()
        .run(check_input(json!({"url": format!("http://127.0.0.1:{port}/"), "interval": "10ms", "within": "30ms"})), &cx)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.message.contains("last error:") && e.message.to_lowercase().contains("refused"), "{e}");
}

#[tokio::test]
async fn check_waits_for_the_body_to_contain_the_text() {
    let server = Server::start(vec![("/ready", vec![Reply::status(200).body("starting"), Reply::status(200).body(r#"{"ready":true}"#)])]).await;
    let (cx, rec, _) = context();
    let input = check_input(json!({"url": server.url("/ready"), "contains": "\"ready\":true", "interval": "10ms"}));
    let out = HttpConnector::new().check().run(input, &cx).await.unwrap();
    assert_eq!((out.attempts, out.body.as_str()), (2, r#"{"ready":true}"#));
    assert!(rec.logs.lock().unwrap()[0].contains("status 200 but the body does not contain `\"ready\":true`"));
}

#[tokio::test]
async fn check_through_the_connector_with_the_benchmark_input() {
    let server =
        Server::start(vec![("/health/0", vec![Reply::status(204)]), ("/health/1", vec![Reply::status(200).body("x".repeat(CHECK_BODY_LIMIT + 10))])]).await;
    let http = HttpConnector::new();
    assert_eq!(http.name(), "http");
    let check = http.actions().into_iter().find(|a| a.id() == "http.check").unwrap();
    let (cx, _, _) = context();
    let input = json!({"url": server.url("/health/1"), "expect_status": 200, "interval": "0.1s", "within": "10.0s"});
    check.validate_value(&input).unwrap();
    let out = check.run_value(input, &cx).await.unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(out["attempts"], 1);
    assert_eq!(out["body"].as_str().unwrap().len(), CHECK_BODY_LIMIT);
    let out = check.run_value(json!({"url": server.url("/health/0"), "expect_status": [200, 204]}), &cx).await.unwrap();
    assert_eq!(out["status"], 204);
}

#[tokio::test]
async fn check_stops_promptly_when_cancelled_mid_request_and_mid_wait() {
    let server = Server::start(vec![("/hang", vec![Reply::hang()]), ("/down", vec![Reply::status(503)])]).await;
    let http = HttpConnector::new();
    for (path, polls) in [("/hang", "1 poll"), ("/down", "1 poll")] {
        let (cx, _, cancel) = context();
        let input = check_input(json!({"url": server.url(path), "interval": "10s", "within": "10s", "request_timeout": "10s"}));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(15)).await;
            cancel.cancel();
        });
        let started = tokio::time::Instant::now();
        let e = http.check().run(input, &cx).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert_eq!(e.kind, ErrorKind::Cancelled, "{e}");
        assert!(e.message.contains(&format!("cancelled after {polls}")), "{e}");
    }
}

#[tokio::test]
async fn check_validate_rejects_bad_inputs() {
    let check = HttpConnector::new().check();
    for (input, want) in [
        (json!({"url": "not a url"}), "invalid url"),
        (json!({"url": "ftp://example.com/"}), "scheme must be http or https"),
        (json!({"url": "http://x/", "interval": "0s"}), "`interval` must be longer than zero"),
        (json!({"url": "http://x/", "expect_status": [200, 999]}), "999"),
        (json!({"url": "http://x/", "headers": {"bad name": "v"}}), "invalid header name"),
        (json!({"url": "http://x/", "method": "G T"}), "invalid method"),
        (json!({"url": "http://x/", "interval": "2 seconds"}), "is not a duration"),
        (json!({"url": "http://x/", "timeout": "2s"}), "unknown field `timeout`"),
    ] {
        let e = check.validate_value(&input).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
        assert!(e.message.contains(want), "{input}: {e}");
    }
    // `run` checks too (the engine validates before it runs, but a caller may not).
    let (cx, _, _) = context();
    let e = check.run_value(json!({"url": "mailto:x@example.com"}), &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
}

// ---------------------------------------------------------------- http.request

#[tokio::test]
async fn request_classifies_statuses() {
    let server = Server::start(vec![
        ("/ok", vec![Reply::status(200).body("fine").header("X-Custom", "v1")]),
        ("/gone", vec![Reply::status(404).body("no such host")]),
        ("/auth", vec![Reply::status(401).body("bad token")]),
        ("/forbidden", vec![Reply::status(403)]),
        ("/conflict", vec![Reply::status(409).body("exists")]),
        ("/slow-down", vec![Reply::status(429).header("Retry-After", "2").body("too many")]),
        ("/broken", vec![Reply::status(500).body(format!("oops {}", "y".repeat(300)))]),
        ("/unavailable", vec![Reply::status(503).header("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")]),
        ("/bad", vec![Reply::status(400).body("missing field")]),
        ("/teapot", vec![Reply::status(418)]),
    ])
    .await;
    let request = HttpConnector::new().request();
    let (cx, _, _) = context();

    let out = request.run(request_input(json!({"url": server.url("/ok")})), &cx).await.unwrap();
    assert_eq!((out.status, out.body.as_str(), out.json.is_none()), (200, "fine", true));
    assert_eq!(out.headers["x-custom"], "v1");
    assert_eq!(out.headers["content-length"], "4");

    for (path, kind, retry) in [
        ("/gone", ErrorKind::NotFound, None),
        ("/auth", ErrorKind::Auth, None),
        ("/forbidden", ErrorKind::Auth, None),
        ("/conflict", ErrorKind::Conflict, None),
        ("/slow-down", ErrorKind::Transient, Some(Duration::from_secs(2))),
        ("/broken", ErrorKind::Transient, None),
        ("/unavailable", ErrorKind::Transient, None),
        ("/bad", ErrorKind::Invalid, None),
        ("/teapot", ErrorKind::Invalid, None),
    ] {
        let url = server.url(path);
        let e = request.run(request_input(json!({"url": url, "method": "delete"})), &cx).await.unwrap_err();
        assert_eq!((e.kind, e.retry_after), (kind, retry), "{path}: {e}");
        assert!(e.message.starts_with(&format!("DELETE {url} returned ")), "{e}");
    }
    let e = request.run(request_input(json!({"url": server.url("/broken")})), &cx).await.unwrap_err();
    assert!(e.message.contains("returned 500: oops yyy"), "{e}");
    assert_eq!(e.message.split(": ").last().unwrap().chars().count(), 201, "200 characters and an ellipsis: {e}");
    let e = request.run(request_input(json!({"url": server.url("/bad")})), &cx).await.unwrap_err();
    assert!(e.message.ends_with("returned 400: missing field"), "{e}");
}

#[tokio::test]
async fn request_expect_status() {
    let server = Server::start(vec![("/made", vec![Reply::status(201)]), ("/missing", vec![Reply::status(404)]), ("/ok", vec![Reply::status(200)])]).await;
    let request = HttpConnector::new().request();
    let (cx, _, _) = context();
    let out = request.run(request_input(json!({"url": server.url("/made"), "expect_status": [200, 201]})), &cx).await.unwrap();
    assert_eq!(out.status, 201);
    let out = request.run(request_input(json!({"url": server.url("/missing"), "expect_status": 404})), &cx).await.unwrap();
    assert_eq!(out.status, 404);
    let e = request.run(request_input(json!({"url": server.url("/ok"), "expect_status": 201})), &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("returned 200 (expected 201)"), "{e}");
}

#[tokio::test]
async fn request_connection_failures_are_transient() {
    let port = refused_port().await;
    let request = HttpConnector::new().request();
    let (cx, _, _) = context();
    let e = request.run(request_input(json!({"url": format!("http://127.0.0.1:{port}/x")})), &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.starts_with(&format!("GET http://127.0.0.1:{port}/x failed: ")) && e.message.to_lowercase().contains("refused"), "{e}");
    assert!(e.source.is_some());

    let server = Server::start(vec![("/hang", vec![Reply::hang()])]).await;
    let e = request.run(request_input(json!({"url": server.url("/hang"), "timeout": "20ms"})), &cx).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.ends_with("timed out after 20ms"), "{e}");
}

#[tokio::test]
async fn request_sends_and_parses_json() {
    let server = Server::start(vec![
        ("/api", vec![Reply::status(200).header("Content-Type", "application/json").body(r#"{"id": 7, "tags": ["a"]}"#)]),
        ("/text", vec![Reply::status(200).header("Content-Type", "text/plain").body("[not json")]),
        ("/untyped", vec![Reply::status(200).body("[1, 2]")]),
    ])
    .await;
    let http = HttpConnector::new();
    let request = http.actions().into_iter().find(|a| a.id() == "http.request").unwrap();
    let (cx, _, _) = context();
    let out = request
        .run_value(json!({"url": server.url("/api"), "method": "POST", "json": {"name": "vm-1"}, "headers": {"Authorization": "Bearer t"}}), &cx)
        .await
        .unwrap();
    assert_eq!(out["json"], json!({"id": 7, "tags": ["a"]}));
    assert_eq!(out["headers"]["content-type"], "application/json");
    let seen = server.seen();
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/api"));
    assert_eq!(seen[0].headers["content-type"], "application/json");
    assert_eq!(seen[0].headers["authorization"], "Bearer t");
    assert_eq!(serde_json::from_str::<Value>(&seen[0].body).unwrap(), json!({"name": "vm-1"}));

    let out = request.run_value(json!({"url": server.url("/text"), "method": "PUT", "body": "hello"}), &cx).await.unwrap();
    assert_eq!(out["json"], Value::Null);
    assert_eq!(out["body"], "[not json");
    assert_eq!(server.seen()[1].body, "hello");
    let out = request.run_value(json!({"url": server.url("/untyped")}), &cx).await.unwrap();
    assert_eq!(out["json"], json!([1, 2]));
}

#[tokio::test]
async fn request_stops_promptly_when_cancelled() {
    let server = Server::start(vec![("/hang", vec![Reply::hang()])]).await;
    let (cx, _, cancel) = context();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(15)).await;
        cancel.cancel();
    });
    let started = tokio::time::Instant::now();
    let e = HttpConnector::new().request().run(request_input(json!({"url": server.url("/hang")})), &cx).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(e.kind, ErrorKind::Cancelled, "{e}");
}

#[test]
fn request_validate_rejects_bad_inputs() {
    let request = HttpConnector::new().request();
    for (input, want) in [
        (json!({"url": "localhost:8080/x"}), "scheme must be http or https"),
        (json!({"url": "http://x/", "body": "a", "json": {"a": 1}}), "not both"),
        (json!({"url": "http://x/", "timeout": "0ms"}), "`timeout` must be longer than zero"),
        (json!({"url": "http://x/", "expect_status": []}), "empty list"),
        (json!({"url": "http://x/", "within": "1s"}), "unknown field `within`"),
    ] {
        let e = request.validate_value(&input).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
        assert!(e.message.contains(want), "{input}: {e}");
    }
    assert!(request.validate_value(&json!({"url": "https://example.com/x", "method": "PATCH", "json": [1]})).is_ok());
}

#[test]
fn passwords_in_urls_are_not_shown() {
    let e = HttpConnector::new().request().validate_value(&json!({"url": "ftp://user:hunter2@example.com/"})).unwrap_err();
    assert!(!e.message.contains("hunter2"), "{e}");
}

// ---------------------------------------------------------------- schemas and clients

#[test]
fn schemas_are_strict_and_documented() {
    let http = HttpConnector::new();
    for a in http.actions() {
        let s = a.input_schema();
        assert_eq!(s["additionalProperties"], false, "{}", a.id());
        assert_eq!(s["required"], json!(["url"]), "{}", a.id());
        for (name, p) in s["properties"].as_object().unwrap() {
            assert!(p.get("description").and_then(Value::as_str).is_some_and(|d| !d.is_empty()), "{}.{name} has no description", a.id());
        }
        assert_eq!(s["$defs"]["Duration"]["pattern"], DURATION_PATTERN, "{}", a.id());
        for (name, p) in a.output_schema()["properties"].as_object().unwrap() {
            assert!(p.get("description").is_some(), "{} output {name} has no description", a.id());
        }
    }
    let check = http.check();
    assert_eq!(check.input_schema()["properties"]["interval"]["default"], "2s");
    assert_eq!(check.input_schema()["properties"]["expect_status"]["default"], 200);
    let mut outs = check.output_names();
    outs.sort();
    assert_eq!(outs, ["attempts", "body", "elapsed_ms", "status"]);
    let mut outs = http.request().output_names();
    outs.sort();
    assert_eq!(outs, ["body", "body_truncated", "headers", "json", "status"]);
}

#[test]
fn both_clients_build_once_and_are_shared() {
    let http = HttpConnector::new();
    let clients = http.check().clients;
    assert!(clients.get(false).is_ok());
    assert!(clients.get(true).is_ok());
    assert!(Arc::ptr_eq(&clients, &http.request().clients));
}
