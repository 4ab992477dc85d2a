//! Reliability through the fault proxy: a real HTTP server behind it, faults injected
//! per test, and the engine's retry policy seen from outside.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use engine_faultproxy::{Fault, FaultProxy, Match, Rule};
use serde_json::Value;

use crate::{text, CliTest};

/// `python3 -m http.server` on a free port, serving `dir`.
struct Upstream(Child, u16);

impl Upstream {
    fn start(dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self(child, port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("http.server did not start");
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn retries_absorb_injected_503s_and_honour_retry_after() {
    let t = CliTest::new();
    std::fs::write(t.dir.path().join("health"), "ok\n").unwrap();
    let up = Upstream::start(t.dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let proxy = rt.block_on(FaultProxy::start(&format!("http://127.0.0.1:{}", up.1))).unwrap();
    proxy.add_rule(Rule::times(2, Fault::status(503)).matching(Match::path_prefix("/health")));
    proxy.add_rule(Rule::times(1, Fault::too_many(1)).matching(Match::path_prefix("/health")));
    let wf = t.write(
        "r.yaml",
        &format!(
            "version: 1\nsteps:\n  get:\n    uses: http.request\n    retry: {{ attempts: 5, delay: 10ms }}\n    with: {{ url: '{}/health' }}\noutputs: {{ body: '${{{{ steps.get.outputs.body | trim }}}}' }}\n",
            proxy.url()
        ),
    );
    let out = t.run(&["run", wf.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let retries: Vec<&Value> = events.iter().filter(|e| e["event"] == "step_retry").collect();
    assert_eq!(retries.len(), 3, "{retries:?}");
    assert!(retries[0]["error"].as_str().unwrap().contains("503"));
    assert_eq!(retries[2]["delay_ms"], 1000, "Retry-After: 1 was not honoured");
    assert_eq!(events.last().unwrap()["outputs"]["body"], "ok");
    let log = proxy.requests();
    assert_eq!(log.len(), 4);
    assert_eq!(log.iter().filter(|r| r.faulted).count(), 3);
    // Without retries, the first 503 fails the step as transient.
    proxy.add_rule(Rule::times(1, Fault::status(503)).matching(Match::path_prefix("/health")));
    let once = t.write("o.yaml", &format!("version: 1\nsteps:\n  get: {{ uses: http.request, with: {{ url: '{}/health' }} }}\n", proxy.url()));
    let out = t.run(&["run", once.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("\"kind\":\"transient\""));
    rt.block_on(proxy.shutdown());
}
