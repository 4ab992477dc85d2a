//! The proxy server: the accept loop, the per-request decision, the canned
//! answers and the forwarding to the upstream.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::control;
use crate::rule::{Fault, RequestParts, Rule};
use crate::shapes;

/// The most entries the request log keeps; older ones are dropped first.
const LOG_CAPACITY: usize = 100_000;

/// The header every injected answer carries, naming the fault kind.
pub const FAULT_HEADER: &str = "x-faultproxy-fault";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running fault proxy on `127.0.0.1`, in front of one upstream.
///
/// Requests that no rule fires on are forwarded to the upstream as they came
/// (method, path and query, headers, body) and its answer comes back as it
/// was (status, headers, body). Paths under `/__faults/` are the control API
/// (see the crate docs) and are never forwarded.
///
/// Dropping the proxy stops it too; [`FaultProxy::shutdown`] also waits until
/// the port is closed.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// How to start a [`FaultProxy`]; from [`FaultProxy::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    upstream: String,
    listen: SocketAddr,
    preserve_host: bool,
    accept_invalid_certs: bool,
    rules: Vec<Rule>,
}

/// One rule of a running proxy, with its counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleStatus {
    /// The rule as added.
    pub rule: Rule,
    /// Requests that matched it so far (fired or not).
    pub seen: u32,
    /// Times it fired so far.
    pub fired: u32,
}

/// One request the proxy handled (control API requests are not logged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    /// The request method, e.g. `POST`.
    pub method: String,
    /// The request path, without the query string.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// The status the client got; `None` when the connection was reset.
    pub status: Option<u16>,
    /// Whether a rule fired on it (latency included).
    pub faulted: bool,
    /// The index of the rule that fired, in the rule list at that time.
    pub rule: Option<usize>,
    /// The name of the rule that fired, if it has one.
    pub rule_name: Option<String>,
    /// The kind of the fault injected ([`Fault::kind`]).
    pub fault: Option<String>,
    /// Why forwarding failed, when the proxy answered 502 for the upstream.
    pub error: Option<String>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1` (a free port) in front of `upstream`
    /// (`http://127.0.0.1:5000`; `https://` works too).
    ///
    /// # Errors
    /// `InvalidInput` when `upstream` is not an `http`/`https` URL; the bind
    /// error when no port can be had.
    pub async fn start(upstream: &str) -> io::Result<Self> {
        Self::builder(upstream).start().await
    }

    /// A [`Builder`] for a proxy in front of `upstream`, for more options.
    #[must_use]
    pub fn builder(upstream: &str) -> Builder {
        Builder {
            upstream: upstream.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            preserve_host: false,
            accept_invalid_certs: false,
            rules: Vec::new(),
        }
    }

    /// The proxy's base URL, `http://127.0.0.1:PORT`: what a connector's
    /// `endpoint:` points at.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the proxy listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a rule after the existing ones.
    pub fn add_rule(&self, rule: Rule) {
        self.shared.add_rules(vec![rule]);
    }

    /// Replaces all rules (counters start again at zero).
    pub fn set_rules(&self, rules: Vec<Rule>) {
        self.shared.set_rules(rules);
    }

    /// Removes all rules: everything is forwarded again. The log stays.
    pub fn clear(&self) {
        self.shared.set_rules(Vec::new());
    }

    /// The current rules with their counters.
    #[must_use]
    pub fn rules(&self) -> Vec<RuleStatus> {
        self.shared.rules()
    }

    /// The requests handled so far, oldest first (the last 100 000).
    #[must_use]
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.requests()
    }

    /// Empties the request log.
    pub fn clear_log(&self) {
        self.shared.clear_log();
    }

    /// Removes all rules and empties the log: a fresh proxy for the next test.
    pub fn reset(&self) {
        self.shared.set_rules(Vec::new());
        self.shared.clear_log();
    }

    /// How many client connections the proxy accepted so far (a keep-alive
    /// client that reuses its connection counts once).
    #[must_use]
    pub fn connections_accepted(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting, drops every open connection (requests in flight get
    /// no answer) and waits until the port is closed.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream.as_str())
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Listens on `addr` instead of `127.0.0.1:0`.
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Sends the client's `Host` header to the upstream unchanged instead of
    /// the upstream's own host and port (the default).
    #[must_use]
    pub fn preserve_host(mut self, yes: bool) -> Self {
        self.preserve_host = yes;
        self
    }

    /// Accepts any certificate from an `https://` upstream (self-signed test
    /// peers such as fakepve).
    #[must_use]
    pub fn accept_invalid_certs(mut self, yes: bool) -> Self {
        self.accept_invalid_certs = yes;
        self
    }

    /// Starts with these rules in place.
    #[must_use]
    pub fn rules(mut self, rules: Vec<Rule>) -> Self {
        self.rules = rules;
        self
    }

    /// Binds and starts serving on the current tokio runtime.
    ///
    /// # Errors
    /// `InvalidInput` when the upstream is not an `http`/`https` URL; the
    /// bind error when the address cannot be had.
    pub async fn start(self) -> io::Result<FaultProxy> {
        let upstream = parse_upstream(&self.upstream)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(self.accept_invalid_certs)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(io::Error::other)?;
        let listener = TcpListener::bind(self.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            client,
            preserve_host: self.preserve_host,
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(VecDeque::new()),
            connections: AtomicU64::new(0),
        });
        shared.set_rules(self.rules);
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), rx));
        tracing::debug!(%addr, upstream = %shared.upstream, "Fault proxy started.");
        Ok(FaultProxy {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }
}

fn parse_upstream(upstream: &str) -> io::Result<reqwest::Url> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let mut url = reqwest::Url::parse(upstream)
        .map_err(|e| invalid(format!("invalid upstream url {upstream:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(format!(
            "invalid upstream url {upstream:?}: not an http or https url"
        )));
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// State shared by the handle, the connections and the control API.
pub(crate) struct Shared {
    upstream: reqwest::Url,
    client: reqwest::Client,
    preserve_host: bool,
    rules: Mutex<Vec<RuleStatus>>,
    log: Mutex<VecDeque<RequestLog>>,
    connections: AtomicU64,
}

/// The rule that fired on a request.
struct Decision {
    index: usize,
    name: Option<String>,
    fault: Fault,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn set_rules(&self, rules: Vec<Rule>) {
        *lock(&self.rules) = rules
            .into_iter()
            .map(|rule| RuleStatus {
                rule,
                seen: 0,
                fired: 0,
            })
            .collect();
    }

    pub(crate) fn add_rules(&self, rules: Vec<Rule>) {
        lock(&self.rules).extend(rules.into_iter().map(|rule| RuleStatus {
            rule,
            seen: 0,
            fired: 0,
        }));
    }

    pub(crate) fn rules(&self) -> Vec<RuleStatus> {
        lock(&self.rules).clone()
    }

    pub(crate) fn requests(&self) -> Vec<RequestLog> {
        lock(&self.log).iter().cloned().collect()
    }

    pub(crate) fn clear_log(&self) {
        lock(&self.log).clear();
    }

    fn push_log(&self, entry: RequestLog) {
        let mut log = lock(&self.log);
        if log.len() >= LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(entry);
    }

    /// Finds the rule that fires on `req` and counts it, under one lock so
    /// that concurrent requests count exactly.
    fn decide(&self, req: &RequestParts<'_>) -> Option<Decision> {
        let mut rules = lock(&self.rules);
        for (index, status) in rules.iter_mut().enumerate() {
            if !status.rule.matcher.matches(req) {
                continue;
            }
            status.seen = status.seen.saturating_add(1);
            if status.seen <= status.rule.after {
                continue;
            }
            if status.rule.times.is_some_and(|times| status.fired >= times) {
                continue;
            }
            status.fired += 1;
            return Some(Decision {
                index,
                name: status.rule.name.clone(),
                fault: status.rule.fault.clone(),
            });
        }
        None
    }

    /// Sends the request to the upstream and brings its answer back; a
    /// failure to reach it is a 502 and the error text.
    async fn forward(
        &self,
        parts: hyper::http::request::Parts,
        body: Bytes,
    ) -> (Response<Full<Bytes>>, Option<String>) {
        match self.try_forward(parts, body).await {
            Ok(response) => (response, None),
            Err(e) => {
                let error = error_chain(&*e);
                tracing::debug!(error = %error, "Failed to forward a request.");
                let mut response = Response::new(Full::new(Bytes::from(format!(
                    "engine-faultproxy: upstream request failed: {error}\n"
                ))));
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                (response, Some(error))
            }
        }
    }

    async fn try_forward(
        &self,
        parts: hyper::http::request::Parts,
        body: Bytes,
    ) -> Result<Response<Full<Bytes>>, BoxError> {
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let base = self.upstream.as_str().trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}{path_and_query}"))?;
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(header::CONTENT_LENGTH);
        if !self.preserve_host {
            headers.remove(header::HOST);
        }
        let upstream = self
            .client
            .request(parts.method, url)
            .headers(headers)
            .body(body)
            .send()
            .await?;
        let status = upstream.status();
        let mut headers = upstream.headers().clone();
        strip_hop_by_hop(&mut headers);
        let body = upstream.bytes().await?;
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// Removes the headers that belong to one connection, not to the message
/// (RFC 9110 §7.6.1), those the `Connection` header names included.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The connection was reset on purpose ([`Fault::Reset`]); returning it from
/// the service makes hyper drop the connection without an answer.
#[derive(Debug)]
struct ResetInjected;

impl fmt::Display for ResetInjected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset by a fault rule")
    }
}

impl std::error::Error for ResetInjected {}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    let reset = Arc::new(AtomicBool::new(false));
                    let io = TokioIo::new(Conn { stream, reset: Arc::clone(&reset) });
                    let shared = Arc::clone(&shared);
                    let service = service_fn(move |req| handle(Arc::clone(&shared), Arc::clone(&reset), req));
                    connections.spawn(async move {
                        let served = http1::Builder::new().timer(TokioTimer::new()).serve_connection(io, service).await;
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "Connection ended with an error.");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Failed to accept a connection.");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Dropping the set aborts every connection; dropping the listener closes the port.
    connections.shutdown().await;
}

async fn handle(
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    if control::is_control(req.uri().path()) {
        return Ok(control::handle(&shared, req).await);
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let decision = shared.decide(&RequestParts {
        method: &parts.method,
        path: &path,
        query: query.as_deref(),
        body: &body,
        form_body: is_form(&parts.headers),
    });
    let mut entry = RequestLog {
        method: parts.method.as_str().to_owned(),
        path,
        query,
        status: None,
        faulted: decision.is_some(),
        rule: decision.as_ref().map(|d| d.index),
        rule_name: decision.as_ref().and_then(|d| d.name.clone()),
        fault: decision.as_ref().map(|d| d.fault.kind().to_owned()),
        error: None,
    };
    if let Some(d) = &decision {
        tracing::debug!(rule = d.index, fault = d.fault.kind(), method = %entry.method, path = %entry.path, "Injecting a fault.");
    }
    let response = match decision.map(|d| d.fault) {
        None => {
            let (response, error) = shared.forward(parts, body).await;
            entry.error = error;
            response
        }
        Some(Fault::Latency(delay)) => {
            tokio::time::sleep(delay).await;
            let (response, error) = shared.forward(parts, body).await;
            entry.error = error;
            response
        }
        Some(Fault::Reset) => {
            reset.store(true, Ordering::SeqCst);
            shared.push_log(entry);
            return Err(Box::new(ResetInjected));
        }
        Some(fault) => canned(&fault),
    };
    entry.status = Some(response.status().as_u16());
    shared.push_log(entry);
    Ok(response)
}

/// Whether [`crate::Match::Param`] may read the body as a form: it says it is
/// one, or says nothing.
fn is_form(headers: &HeaderMap) -> bool {
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(ct) => ct
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded"),
    }
}

/// The answer for a fault that answers without the upstream.
fn canned(fault: &Fault) -> Response<Full<Bytes>> {
    let (status, body, headers): (u16, String, Vec<(String, String)>) = match fault {
        Fault::Status {
            code,
            body,
            headers,
        } => (
            *code,
            body.clone(),
            headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        Fault::TooMany { retry_after_secs } => (
            429,
            "Too Many Requests\n".to_owned(),
            vec![("retry-after".to_owned(), retry_after_secs.to_string())],
        ),
        Fault::Ec2InsufficientCapacity => ec2(
            shapes::EC2_INSUFFICIENT_CAPACITY_STATUS,
            shapes::EC2_INSUFFICIENT_CAPACITY_CODE,
            shapes::EC2_INSUFFICIENT_CAPACITY_MESSAGE,
        ),
        Fault::Ec2Throttling => ec2(
            shapes::EC2_THROTTLING_STATUS,
            shapes::EC2_THROTTLING_CODE,
            shapes::EC2_THROTTLING_MESSAGE,
        ),
        Fault::ScalewayOutOfStock => (
            shapes::SCALEWAY_OUT_OF_STOCK_STATUS,
            shapes::scaleway_error_body(
                shapes::SCALEWAY_OUT_OF_STOCK_TYPE,
                shapes::SCALEWAY_OUT_OF_STOCK_MESSAGE,
                Some(shapes::SCALEWAY_OUT_OF_STOCK_RESOURCE),
            ),
            vec![("content-type".to_owned(), "application/json".to_owned())],
        ),
        // Handled before an answer is built; kept total for safety.
        Fault::Reset | Fault::Latency(_) => (500, String::new(), Vec::new()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body.clone())));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let map = response.headers_mut();
    for (name, value) in headers {
        if let (Ok(header_name), Ok(header_value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            map.append(header_name, header_value);
        } else {
            tracing::warn!(name = %name, value = %value, "Skipping an invalid header of a fault rule.");
        }
    }
    if !body.is_empty() && !map.contains_key(header::CONTENT_TYPE) {
        map.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(guess_content_type(&body)),
        );
    }
    if let Ok(kind) = HeaderValue::from_str(fault.kind()) {
        map.insert(FAULT_HEADER, kind);
    }
    response
}

fn ec2(status: u16, code: &str, message: &str) -> (u16, String, Vec<(String, String)>) {
    (
        status,
        shapes::ec2_error_body(code, message, &shapes::request_id()),
        vec![(
            "content-type".to_owned(),
            shapes::EC2_CONTENT_TYPE.to_owned(),
        )],
    )
}

fn guess_content_type(body: &str) -> &'static str {
    match body.trim_start().as_bytes().first() {
        Some(b'{' | b'[') => "application/json",
        Some(b'<') => "text/xml;charset=UTF-8",
        _ => "text/plain; charset=utf-8",
    }
}

/// A client connection that ends with a TCP reset (`SO_LINGER` 0) instead of
/// a clean close when a [`Fault::Reset`] fired on it.
struct Conn {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.reset.load(Ordering::SeqCst) {
            // No FIN before the reset: the client must see a reset, not an EOF.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        assert_eq!(
            parse_upstream("http://127.0.0.1:5000").unwrap().as_str(),
            "http://127.0.0.1:5000/"
        );
        assert_eq!(
            parse_upstream("https://h:8006/base/?x=1#f")
                .unwrap()
                .as_str(),
            "https://h:8006/base/"
        );
        assert_eq!(
            parse_upstream("ftp://h").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            parse_upstream("127.0.0.1:5000").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-amz-date", HeaderValue::from_static("20240101T000000Z"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-amz-date"));
    }

    #[test]
    fn canned_answers() {
        let r = canned(&Fault::status_with_body(503, "{\"a\":1}"));
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[FAULT_HEADER], "status");
        let r = canned(&Fault::status(1000));
        assert_eq!(r.status(), 500);
        let r = canned(&Fault::too_many(7));
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        let r = canned(&Fault::ScalewayOutOfStock);
        assert_eq!(r.status(), 412);
        let r = canned(&Fault::Ec2Throttling);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::CONTENT_TYPE], shapes::EC2_CONTENT_TYPE);
    }
}
