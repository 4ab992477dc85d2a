//! The proxy against a real upstream: a small hyper server started per test
//! that answers 200 with the method, path, query and body it received.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine_faultproxy::{Fault, FaultProxy, Match, Rule, FAULT_HEADER};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path_and_query: String,
    host: String,
    body: String,
}

struct Upstream {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl Upstream {
    fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (seen2, connections2) = (Arc::clone(&seen), Arc::clone(&connections));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            connections2.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&seen2);
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let seen = Arc::clone(&seen);
                async move {
                    let method = req.method().to_string();
                    let path_and_query = req
                        .uri()
                        .path_and_query()
                        .map_or("/".to_owned(), ToString::to_string);
                    let host = req
                        .headers()
                        .get("host")
                        .map_or(String::new(), |h| h.to_str().unwrap().to_owned());
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let body = String::from_utf8_lossy(&body).into_owned();
                    let text = format!("{method} {path_and_query}\n{body}");
                    seen.lock().unwrap().push(Seen {
                        method,
                        path_and_query,
                        host,
                        body,
                    });
                    let mut response = Response::new(Full::new(Bytes::from(text)));
                    response
                        .headers_mut()
                        .insert("x-upstream", "echo".parse().unwrap());
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream {
        url,
        seen,
        connections,
    }
}

async fn setup() -> (Upstream, FaultProxy, reqwest::Client) {
    let up = upstream().await;
    let proxy = FaultProxy::start(&up.url).await.unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    (up, proxy, client)
}

#[tokio::test]
async fn forwards_get_and_post_faithfully() {
    let (up, proxy, client) = setup().await;

    let r = client
        .get(format!("{}/a/b?x=1&y=two", proxy.url()))
        .header("x-custom", "v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "echo");
    assert!(r.headers().get(FAULT_HEADER).is_none());
    assert_eq!(r.text().await.unwrap(), "GET /a/b?x=1&y=two\n");

    let r = client
        .post(format!("{}/submit", proxy.url()))
        .body("hello body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "POST /submit\nhello body");

    let r = client
        .delete(format!("{}/things/1", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "DELETE /things/1\n");

    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].body, "hello body");
    // The Host the upstream sees is its own.
    assert_eq!(seen[0].host, up.url.trim_start_matches("http://"));

    let log = proxy.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(
        (
            log[0].method.as_str(),
            log[0].path.as_str(),
            log[0].query.as_deref()
        ),
        ("GET", "/a/b", Some("x=1&y=two"))
    );
    assert!(log
        .iter()
        .all(|e| e.status == Some(200) && !e.faulted && e.rule.is_none()));
    proxy.shutdown().await;
}

#[tokio::test]
async fn keep_alive_clients_reuse_one_connection() {
    let (up, proxy, client) = setup().await;
    for i in 0..5 {
        let r = client
            .post(format!("{}/n/{i}", proxy.url()))
            .body(format!("b{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), format!("POST /n/{i}\nb{i}"));
    }
    assert_eq!(proxy.connections_accepted(), 1);
    assert_eq!(up.hits(), 5);
    // The proxy pools its upstream connections too.
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn status_fault_answers_without_the_upstream() {
    let (up, proxy, client) = setup().await;
    let mut fault = Fault::status_with_body(503, "{\"message\":\"down\"}");
    if let Fault::Status { headers, .. } = &mut fault {
        headers.insert("x-extra".to_owned(), "1".to_owned());
    }
    proxy.add_rule(Rule::once(fault).named("first-503"));

    let r = client
        .get(format!("{}/x", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-extra"], "1");
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()[FAULT_HEADER], "status");
    assert_eq!(r.text().await.unwrap(), "{\"message\":\"down\"}");
    assert_eq!(up.hits(), 0);

    let r = client
        .get(format!("{}/x", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.hits(), 1);

    let log = proxy.requests();
    assert_eq!(log[0].status, Some(503));
    assert!(log[0].faulted);
    assert_eq!(log[0].rule, Some(0));
    assert_eq!(log[0].rule_name.as_deref(), Some("first-503"));
    assert_eq!(log[0].fault.as_deref(), Some("status"));
    assert!(!log[1].faulted);
    let rules = proxy.rules();
    assert_eq!((rules[0].seen, rules[0].fired), (2, 1));
}

#[tokio::test]
async fn too_many_sets_retry_after() {
    let (up, proxy, client) = setup().await;
    proxy.add_rule(Rule::once(Fault::too_many(3)));
    let r = client
        .get(format!("{}/x", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn reset_drops_the_connection_and_the_client_sees_an_error() {
    let (up, proxy, client) = setup().await;
    // A first request opens a keep-alive connection, the reset hits the same one.
    assert_eq!(
        client
            .get(format!("{}/warm", proxy.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    proxy.add_rule(Rule::once(Fault::Reset).matching(Match::path_prefix("/boom")));

    let e = client
        .post(format!("{}/boom", proxy.url()))
        .body("payload")
        .send()
        .await
        .unwrap_err();
    assert!(e.is_request() || e.is_connect(), "{e:?}");
    assert_eq!(up.hits(), 1);

    // The client recovers on a new connection.
    let r = client
        .get(format!("{}/after", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(proxy.connections_accepted(), 2);

    let log = proxy.requests();
    assert_eq!(log[1].path, "/boom");
    assert_eq!(log[1].status, None);
    assert_eq!(log[1].fault.as_deref(), Some("reset"));
}

#[tokio::test]
async fn reset_is_a_tcp_reset_after_reading_the_request() {
    let (up, proxy, _client) = setup().await;
    proxy.add_rule(Rule::always(Fault::Reset));
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf))
        .await
        .unwrap();
    match read {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => panic!(
            "expected a reset, read {n} bytes: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
    assert_eq!(up.hits(), 0);
    assert_eq!(proxy.requests()[0].status, None);
}

#[tokio::test]
async fn latency_delays_then_forwards() {
    let (up, proxy, client) = setup().await;
    proxy.add_rule(Rule::once(Fault::latency_ms(150)));
    let start = Instant::now();
    let r = client
        .get(format!("{}/slow", proxy.url()))
        .send()
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "GET /slow\n");
    assert_eq!(up.hits(), 1);
    let log = proxy.requests();
    assert!(log[0].faulted);
    assert_eq!(log[0].fault.as_deref(), Some("latency"));
    assert_eq!(log[0].status, Some(200));

    let start = Instant::now();
    client
        .get(format!("{}/fast", proxy.url()))
        .send()
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_millis(150));
}

/// An EC2 Query API call as boto3 and the AWS SDK send it: a form post.
async fn ec2_call(client: &reqwest::Client, url: &str, action: &str) -> reqwest::Response {
    client
        .post(format!("{url}/"))
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(format!(
            "Action={action}&Version=2016-11-15&ImageId=ami-12345678&MinCount=1&MaxCount=1"
        ))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn ec2_insufficient_capacity_on_run_instances_only() {
    let (up, proxy, client) = setup().await;
    proxy.add_rule(
        Rule::times(2, Fault::Ec2InsufficientCapacity)
            .matching(Match::body_contains("Action=RunInstances")),
    );

    for _ in 0..2 {
        let r = ec2_call(&client, &proxy.url(), "RunInstances").await;
        assert_eq!(r.status(), 500);
        assert_eq!(r.headers()["content-type"], "text/xml;charset=UTF-8");
        let body = r.text().await.unwrap();
        assert!(
            body.starts_with(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"
            ),
            "{body}"
        );
        assert!(
            body.contains("<Code>InsufficientInstanceCapacity</Code>"),
            "{body}"
        );
        assert!(
            body.contains("<Message>We currently do not have sufficient capacity"),
            "{body}"
        );
        assert!(body.contains("<RequestID>"), "{body}");
    }
    // Other actions pass, and the third RunInstances reaches the peer.
    let r = ec2_call(&client, &proxy.url(), "DescribeInstances").await;
    assert_eq!(r.status(), 200);
    let r = ec2_call(&client, &proxy.url(), "RunInstances").await;
    assert_eq!(r.status(), 200);
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].body.starts_with("Action=DescribeInstances&"));
    assert!(seen[1].body.starts_with("Action=RunInstances&"));
}

#[tokio::test]
async fn ec2_throttling_and_exact_action_match() {
    let (up, proxy, client) = setup().await;
    proxy.add_rule(
        Rule::always(Fault::Ec2Throttling).matching(Match::ec2_action("DescribeInstanceTypes")),
    );
    let r = ec2_call(&client, &proxy.url(), "DescribeInstanceTypes").await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(
        body.contains(
            "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
        ),
        "{body}"
    );
    // A longer action with the same prefix is not matched.
    let r = ec2_call(&client, &proxy.url(), "DescribeInstanceTypeOfferings").await;
    assert_eq!(r.status(), 200);
    // The action in the query string (GET form of the Query API) matches too.
    let r = client
        .get(format!(
            "{}/?Action=DescribeInstanceTypes&Version=2016-11-15",
            proxy.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn scaleway_out_of_stock_on_server_create() {
    let (up, proxy, client) = setup().await;
    let create = Match::all_of([
        Match::method("POST"),
        Match::path_regex("^/instance/v1/zones/[^/]+/servers/?$").unwrap(),
    ]);
    proxy.add_rule(Rule::always(Fault::ScalewayOutOfStock).matching(create));

    let r = client
        .post(format!(
            "{}/instance/v1/zones/fr-par-2/servers",
            proxy.url()
        ))
        .header("content-type", "application/json")
        .body(r#"{"name":"a","commercial_type":"L4-1-24G"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["type"], "out_of_stock");
    assert_eq!(body["resource"], "server");
    assert!(body["message"].is_string());

    // Listing servers and acting on one are not creates.
    let r = client
        .get(format!(
            "{}/instance/v1/zones/fr-par-2/servers",
            proxy.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!(
            "{}/instance/v1/zones/fr-par-2/servers/123/action",
            proxy.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn times_and_after_count_matching_requests() {
    let (_up, proxy, client) = setup().await;
    proxy.add_rule(
        Rule::times(2, Fault::status(500))
            .after(1)
            .matching(Match::path_prefix("/r")),
    );
    let mut statuses = Vec::new();
    for path in ["/r", "/other", "/r", "/r", "/r", "/other", "/r"] {
        statuses.push(
            client
                .get(format!("{}{path}", proxy.url()))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 500, 500, 200, 200, 200]);
    let rules = proxy.rules();
    assert_eq!((rules[0].seen, rules[0].fired), (5, 2));
}

#[tokio::test]
async fn first_firing_rule_wins_and_spent_rules_let_later_ones_fire() {
    let (_up, proxy, client) = setup().await;
    proxy.add_rule(Rule::once(Fault::status(503)));
    proxy.add_rule(Rule::once(Fault::status(500)));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            client
                .get(format!("{}/", proxy.url()))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [503, 500, 200]);
    let log = proxy.requests();
    assert_eq!(
        log.iter().map(|e| e.rule).collect::<Vec<_>>(),
        [Some(0), Some(1), None]
    );
}

#[tokio::test]
async fn query_matching() {
    let (_up, proxy, client) = setup().await;
    proxy.add_rule(Rule::always(Fault::status(500)).matching(Match::query_contains("page=2")));
    assert_eq!(
        client
            .get(format!("{}/list?page=1", proxy.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{}/list?page=2", proxy.url()))
            .send()
            .await
            .unwrap()
            .status(),
        500
    );
    assert_eq!(
        client
            .get(format!("{}/list", proxy.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn clear_and_reset() {
    let (_up, proxy, client) = setup().await;
    proxy.add_rule(Rule::always(Fault::status(500)));
    assert_eq!(client.get(proxy.url()).send().await.unwrap().status(), 500);
    proxy.clear();
    assert_eq!(client.get(proxy.url()).send().await.unwrap().status(), 200);
    assert_eq!(proxy.requests().len(), 2);
    proxy.reset();
    assert!(proxy.requests().is_empty());
    assert!(proxy.rules().is_empty());
}

#[tokio::test]
async fn unreachable_upstream_is_a_502() {
    // A port that was free a moment ago.
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = FaultProxy::start(&format!("http://{addr}")).await.unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/x", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let log = proxy.requests();
    assert_eq!(log[0].status, Some(502));
    assert!(log[0].error.is_some());
}

#[tokio::test]
async fn bad_upstream_url_is_invalid_input() {
    let e = FaultProxy::start("not a url").await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let (_up, proxy, _client) = setup().await;
    let addr = proxy.addr();
    proxy.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn control_api_drives_the_proxy() {
    let (up, proxy, client) = setup().await;
    let control = format!("{}/__faults", proxy.url());

    let rules = r#"[
        {"name": "ice", "matcher": {"param": {"name": "Action", "value": "RunInstances"}},
         "fault": "ec2_insufficient_capacity", "times": 1},
        {"matcher": {"path_prefix": "/slow"}, "fault": {"latency": 50}}
    ]"#;
    let r = client
        .post(format!("{control}/rules"))
        .body(rules)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["rules"], 2);

    assert_eq!(
        ec2_call(&client, &proxy.url(), "RunInstances")
            .await
            .status(),
        500
    );
    assert_eq!(
        ec2_call(&client, &proxy.url(), "RunInstances")
            .await
            .status(),
        200
    );

    let r = client
        .post(format!("{control}/rules?append=true"))
        .body(r#"{"fault": {"too_many": {"retry_after_secs": 1}}, "times": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["rules"], 3);
    assert_eq!(
        client
            .get(format!("{}/x", proxy.url()))
            .send()
            .await
            .unwrap()
            .status(),
        429
    );

    let listed: serde_json::Value = client
        .get(format!("{control}/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["rule"]["name"], "ice");
    assert_eq!(listed[0]["fired"], 1);
    assert_eq!(listed[0]["seen"], 2);

    let log: serde_json::Value = client
        .get(format!("{control}/log"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 3, "control requests are not logged: {log:?}");
    assert_eq!(log[0]["fault"], "ec2_insufficient_capacity");
    assert_eq!(log[0]["rule_name"], "ice");
    assert_eq!(log[0]["status"], 500);
    assert_eq!(log[1]["faulted"], false);
    assert_eq!(log[2]["status"], 429);

    // A bad document is a 400 that says why, and leaves the rules alone.
    let r = client
        .post(format!("{control}/rules"))
        .body(r#"[{"fault": "explode"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("failed to parse rules"),
        "{e}"
    );
    assert_eq!(proxy.rules().len(), 3);

    let r = client
        .delete(format!("{control}/rules"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(proxy.rules().is_empty());
    assert_eq!(
        ec2_call(&client, &proxy.url(), "RunInstances")
            .await
            .status(),
        200
    );

    assert_eq!(
        client
            .delete(format!("{control}/log"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(proxy.requests().is_empty());
    assert_eq!(
        client
            .get(format!("{control}/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Nothing under /__faults/ reaches the upstream.
    assert_eq!(
        up.seen()
            .iter()
            .filter(|s| s.path_and_query.starts_with("/__faults"))
            .count(),
        0
    );
}

#[tokio::test]
async fn binary_prints_its_url_and_serves_rules_and_control_api() {
    let up = upstream().await;
    let rules_path =
        std::env::temp_dir().join(format!("faultproxy-rules-{}.json", std::process::id()));
    std::fs::write(
        &rules_path,
        r#"[{"matcher": {"path_prefix": "/fail"}, "fault": {"status": {"code": 503}}}]"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_engine-faultproxy"))
        .args(["--upstream", &up.url, "--rules"])
        .arg(&rules_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line.trim().to_owned()
    })
    .await
    .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{url}/ok"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{url}/fail"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    let r = client
        .post(format!("{url}/__faults/rules"))
        .body(r#"[{"fault": "scaleway_out_of_stock"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        client
            .get(format!("{url}/ok"))
            .send()
            .await
            .unwrap()
            .status(),
        412
    );
    let log: serde_json::Value = client
        .get(format!("{url}/__faults/log"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.as_array().unwrap().len(), 3);
    assert_eq!(up.hits(), 1);

    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_file(&rules_path);
}

#[tokio::test]
async fn binary_rejects_a_bad_rules_file() {
    let rules_path =
        std::env::temp_dir().join(format!("faultproxy-bad-rules-{}.json", std::process::id()));
    std::fs::write(&rules_path, r#"[{"fault": "reset", "oops": 1}]"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_engine-faultproxy"))
        .args(["--upstream", "http://127.0.0.1:9"])
        .arg("--rules")
        .arg(&rules_path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&rules_path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed to load rules file") && stderr.contains("oops"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
