//! Test support (feature `test-util`): a real moto server for the tests of this crate and of
//! the `engine` CLI (TESTING.md), and a few checks of what it holds.
//!
//! [`moto`] starts one `moto_server` per test process on first use (on `127.0.0.1` and a free
//! port, with instance type and AMI validation on) and stops it when the process exits. It is
//! found through `MOTO_SERVER`, else in `target/peers/moto-venv` (`scripts/peers/moto.sh`
//! installs it there). Without it [`moto`] prints `skipped: ...` and returns `None`, or panics
//! naming `scripts/peers/moto.sh` when `ENGINE_REQUIRE_PEERS=1`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use engine_connector::StepContext;
use serde_json::{json, Value};

use crate::client::{items, parse, text, Ec2, Env, Params, Settings};
use crate::ops::{self, Instance};

/// Ubuntu 16.04 in moto's default images (Canonical's account).
pub const UBUNTU_AMI: &str = "ami-785db401";

/// The secret key the tests give moto (moto accepts any): a dummy, never a real one.
pub const TEST_SECRET_KEY: &str = "testing-secret-key";

/// A moto server of one's own, on `127.0.0.1` and a free port; dropping it stops it.
/// [`moto`] is the one shared by a test process.
pub struct MotoServer {
    url: String,
    child: Child,
}

impl MotoServer {
    /// Starts a server and waits until it answers; `None` (after printing `skipped: ...`) when
    /// moto is not installed.
    ///
    /// # Panics
    /// When moto is missing and `ENGINE_REQUIRE_PEERS=1`, or when it does not answer within 60 s.
    #[must_use]
    pub fn start() -> Option<Self> {
        let Some(server) = moto_server() else {
            assert!(std::env::var("ENGINE_REQUIRE_PEERS").as_deref() != Ok("1"), "moto_server not found: run scripts/peers/moto.sh");
            eprintln!("skipped: moto_server not found (run scripts/peers/moto.sh)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port();
        // A watcher ends moto when this test process exits (a static is never dropped) or when
        // it gets SIGTERM (Drop).
        let script = format!(
            "\"$0\" -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; trap 'kill $m; exit 0' TERM; trap 'kill $m' EXIT; while kill -0 {parent} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.2; done",
            parent = std::process::id()
        );
        let child = Command::new("bash")
            .args(["-c", &script, &server.to_string_lossy()])
            .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
            .env("MOTO_ENABLE_AMI_VALIDATION", "true")
            .stdin(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let url = format!("http://127.0.0.1:{port}");
        let moto = Self { url, child };
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && curl(&["-sf", "-o", "/dev/null", &format!("{}/moto-api/", moto.url)]) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "moto_server did not answer on {} within 60s", moto.url);
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// The `moto_server` executable: `MOTO_SERVER`, else `target/peers/moto-venv/bin/moto_server`.
#[must_use]
pub fn moto_server() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/moto-venv/bin/moto_server");
    p.exists().then_some(p)
}

/// The URL of this process's shared moto server, started on first use; `None` (skip) when
/// moto is not installed. Tests that share it keep to their own region.
///
/// # Panics
/// As [`MotoServer::start`].
pub fn moto() -> Option<&'static str> {
    static MOTO: OnceLock<Option<MotoServer>> = OnceLock::new();
    MOTO.get_or_init(MotoServer::start).as_ref().map(MotoServer::url)
}

fn curl(args: &[&str]) -> bool {
    Command::new("curl").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Empties moto (`POST /moto-api/reset`): every region, every resource.
///
/// # Panics
/// When moto does not answer.
pub fn reset(url: &str) {
    assert!(curl(&["-sf", "-X", "POST", "-o", "/dev/null", &format!("{url}/moto-api/reset")]), "POST {url}/moto-api/reset failed");
}

/// The `connectors: aws:` block for moto at `endpoint` in `region`, with dummy credentials.
#[must_use]
pub fn settings(endpoint: &str, region: &str) -> Value {
    json!({"endpoint": endpoint, "region": region, "access_key_id": "testing", "secret_access_key": TEST_SECRET_KEY})
}

/// A raw client for checking what moto holds.
///
/// # Panics
/// When the settings do not resolve (they always do).
#[must_use]
pub fn ec2(endpoint: &str, region: &str) -> (Ec2, StepContext) {
    let s: Settings = serde_json::from_value(settings(endpoint, region)).expect("settings");
    let ec2 = Ec2::new(crate::client::resolve(&s, None, &Env::default()).expect("resolve")).expect("client");
    (ec2, StepContext::detached("check"))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(f)
}

/// Every instance tagged `engine:run = run_id`, in any state (blocking; not for async tests).
///
/// # Panics
/// When moto answers with an error.
#[must_use]
pub fn instances_of_run(endpoint: &str, region: &str, run_id: &str) -> Vec<Instance> {
    let (c, cx) = ec2(endpoint, region);
    block_on(ops::describe_instances(&c, &cx, &[], &[(&format!("tag:{}", ops::TAG_RUN), vec![run_id.to_string()])])).expect("DescribeInstances")
}

/// The ids of the security groups tagged `engine:run = run_id` (blocking).
///
/// # Panics
/// When moto answers with an error.
#[must_use]
pub fn groups_of_run(endpoint: &str, region: &str, run_id: &str) -> Vec<String> {
    let (c, cx) = ec2(endpoint, region);
    let mut p = Params::new();
    p.filters(&[(&format!("tag:{}", ops::TAG_RUN), vec![run_id.to_string()])]);
    let xml = block_on(c.call(&cx, "DescribeSecurityGroups", &p.0)).expect("DescribeSecurityGroups");
    let doc = parse("DescribeSecurityGroups", &xml).expect("XML");
    items(doc.root_element(), "securityGroupInfo").into_iter().filter_map(|g| text(g, "groupId")).collect()
}

/// Every instance of the region that is not terminated, tagged or not (blocking). (Filtered
/// by state on the server: moto pages an unfiltered answer.)
///
/// # Panics
/// When moto answers with an error.
#[must_use]
pub fn live_instances(endpoint: &str, region: &str) -> Vec<Instance> {
    let (c, cx) = ec2(endpoint, region);
    let states = ["pending", "running", "shutting-down", "stopping", "stopped"].map(String::from).to_vec();
    block_on(ops::describe_instances(&c, &cx, &[], &[("instance-state-name", states)])).expect("DescribeInstances")
}

/// `(id, name)` of every security group of the region (blocking).
///
/// # Panics
/// When moto answers with an error.
#[must_use]
pub fn all_groups(endpoint: &str, region: &str) -> Vec<(String, String)> {
    let (c, cx) = ec2(endpoint, region);
    let xml = block_on(c.call(&cx, "DescribeSecurityGroups", &[])).expect("DescribeSecurityGroups");
    let doc = parse("DescribeSecurityGroups", &xml).expect("XML");
    items(doc.root_element(), "securityGroupInfo").into_iter().filter_map(|g| Some((text(g, "groupId")?, text(g, "groupName").unwrap_or_default()))).collect()
}
