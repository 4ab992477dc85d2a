//! A real fakepve for tests of other crates (feature `test-util`): `tests/fakepve_launcher.py`
//! run with the venv of scripts/peers/fakepve.sh (`FAKEPVE_PYTHON` overrides), serving
//! `https://127.0.0.1:<free port>` with the guests of `tests/guests.json` (template 9000 on
//! `pve1`). Missing peer: [`FakePve::start`] prints `skipped: ...` and gives `None`, or panics
//! naming scripts/peers/fakepve.sh under `ENGINE_REQUIRE_PEERS=1`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use serde_json::{json, Value};

/// The venv's python with fakepve installed, if there is one.
#[must_use]
pub fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FAKEPVE_PYTHON") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/fakepve-venv/bin/python");
    let fakepve = p.with_file_name("fakepve");
    (p.exists() && fakepve.exists()).then_some(p)
}

/// A running fakepve and the launcher's command channel; killed on drop.
pub struct FakePve {
    child: Child,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    dir: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The PEM of the self-signed certificate it serves.
    pub ca_file: String,
    /// `root@pam!engine`.
    pub token_id: String,
    /// The token's secret.
    pub token_secret: String,
}

impl FakePve {
    /// Starts one with PVE seconds scaled by `time_scale` (0: tasks finish before the request
    /// returns). `None` (after printing `skipped: ...`) when the peer is not installed.
    ///
    /// # Panics
    /// Under `ENGINE_REQUIRE_PEERS=1` without the peer, or when the launcher does not start.
    #[must_use]
    pub fn start(time_scale: f64) -> Option<Self> {
        let Some(py) = python() else {
            assert!(std::env::var("ENGINE_REQUIRE_PEERS").as_deref() != Ok("1"), "fakepve not found: run scripts/peers/fakepve.sh");
            eprintln!("skipped: fakepve not found (run scripts/peers/fakepve.sh)");
            return None;
        };
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
        let dir = std::env::temp_dir().join(format!("fakepve-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let mut child = Command::new(py)
            .arg(here.join("fakepve_launcher.py"))
            .arg(here.join("guests.json"))
            .arg(&dir)
            .arg(time_scale.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the fakepve launcher");
        let stdin = child.stdin.take().expect("stdin");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("the launcher's first line");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("launcher said {line:?}: {e}"));
        let s = |k: &str| v[k].as_str().expect(k).to_string();
        Some(Self { url: s("url"), ca_file: s("ca_file"), token_id: s("token_id"), token_secret: s("token_secret"), child, io: Mutex::new((stdin, out)), dir })
    }

    /// One launcher command (see tests/fakepve_launcher.py) and its answer.
    ///
    /// # Panics
    /// When the launcher is gone or answers something other than JSON.
    pub fn cmd(&self, c: &Value) -> Value {
        let mut io = self.io.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writeln!(io.0, "{c}").expect("write to the launcher");
        io.0.flush().expect("flush");
        let mut line = String::new();
        io.1.read_line(&mut line).expect("the launcher's answer");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("launcher answered {line:?}: {e}"))
    }

    /// The VM's node, status and config, or null.
    #[must_use]
    pub fn vm(&self, vmid: u64) -> Value {
        self.cmd(&json!({"vm": vmid}))
    }

    /// How many VMs carry this name.
    #[must_use]
    pub fn count_named(&self, name: &str) -> u64 {
        self.cmd(&json!({"count_named": name})).as_u64().unwrap_or(u64::MAX)
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Drop for FakePve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
