//! The peer of the `ssh` connector's tests: a real OpenSSH `sshd` started by the test on
//! 127.0.0.1 and a free port, with its own config, host key and `AuthorizedKeysFile` in a
//! temporary directory, killed when dropped. Keys are made with the real `ssh-keygen`.
//!
//! Without `/usr/sbin/sshd` a test prints `skipped: ...` and returns, unless
//! `ENGINE_REQUIRE_PEERS=1`, where it fails (install it with `scripts/peers/sshd.sh`).

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use engine_connector::{CancellationToken, ConnectorError, LogStream, ResourceRecord, StepContext, StepRef, StepSink};
use serde_json::{json, Value};

pub const SSHD: &str = "/usr/sbin/sshd";

/// Whether the peer can run; prints `skipped: ...` when not, or panics under
/// `ENGINE_REQUIRE_PEERS=1`.
pub fn peer_available() -> bool {
    let missing: Vec<&str> = [SSHD, "ssh-keygen"].into_iter().filter(|b| !on_path(b)).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{} not found: install the ssh test peer with scripts/peers/sshd.sh", missing.join(" and "));
    assert!(std::env::var("ENGINE_REQUIRE_PEERS").as_deref() != Ok("1"), "ENGINE_REQUIRE_PEERS=1 and {msg}");
    eprintln!("skipped: {msg}");
    false
}

fn on_path(bin: &str) -> bool {
    if bin.contains('/') {
        return Path::new(bin).is_file();
    }
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// Start a [`Peer`] or return from the test when sshd is missing.
#[macro_export]
macro_rules! peer {
    () => {
        match common::Peer::start() {
            Some(p) => p,
            None => return,
        }
    };
}

/// Run a command, panicking with its stderr when it fails.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generate a key pair with ssh-keygen; returns the private key's path.
pub fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", name, "-f"]).arg(&path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    sh(&mut cmd);
    path
}

/// `SHA256:...` of a public key file, as OpenSSH prints it.
pub fn openssh_fingerprint(private: &Path) -> String {
    let out = sh(Command::new("ssh-keygen").arg("-l").arg("-E").arg("sha256").arg("-f").arg(pub_path(private)));
    out.split_whitespace().nth(1).expect("fingerprint").to_string()
}

pub fn pub_path(private: &Path) -> PathBuf {
    let mut p = private.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One running sshd.
pub struct Sshd {
    pub port: u16,
    child: Child,
    pub log: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// Start sshd on `port` with `host_key` and the authorized keys of `dir`; waits until it
    /// sends its banner.
    pub fn start(dir: &Path, port: u16, host_key: &Path) -> Result<Sshd, String> {
        let config = dir.join(format!("sshd_config.{port}"));
        let log = dir.join(format!("sshd.{port}.log"));
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {d}/sshd.{port}.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
                 UsePAM no\nStrictModes no\nPermitRootLogin yes\nPubkeyAuthentication yes\nPasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\nAllowStreamLocalForwarding yes\nAllowTcpForwarding yes\nMaxStartups 100\n\
                 MaxAuthTries 10\nLogLevel VERBOSE\n",
                hk = host_key.display(),
                d = dir.display()
            ),
        )
        .unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .map_err(|e| format!("cannot start {SSHD}: {e}"))?;
        let mut sshd = Sshd { port, child, log };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                return Err(format!("sshd exited with {status}: {}", std::fs::read_to_string(&sshd.log).unwrap_or_default()));
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf) {
                    if buf[..n].starts_with(b"SSH-2.0-") {
                        return Ok(sshd);
                    }
                }
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("sshd did not answer on port {port}: {}", std::fs::read_to_string(&sshd.log).unwrap_or_default()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far (for failing assertions).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A temporary directory with a host key, a client key authorized for the current user,
/// an empty known_hosts file, and an sshd using them.
pub struct Peer {
    pub dir: tempfile::TempDir,
    pub host_key: PathBuf,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub user: String,
    pub port: u16,
    pub sshd: Option<Sshd>,
}

impl Peer {
    pub fn start() -> Option<Peer> {
        if !peer_available() {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("ssh-peer-").tempdir().unwrap();
        let host_key = keygen(dir.path(), "host_ed25519", "ed25519", "");
        let key = keygen(dir.path(), "id_ed25519", "ed25519", "");
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, "").unwrap();
        let user = sh(Command::new("id").arg("-un")).trim().to_string();
        let peer_dir = dir.path().to_path_buf();
        let mut last = String::new();
        for _ in 0..5 {
            match Sshd::start(&peer_dir, free_port(), &host_key) {
                Ok(sshd) => {
                    let p = Peer { dir, host_key, key, known_hosts, user, port: sshd.port, sshd: Some(sshd) };
                    p.authorize(&p.key);
                    return Some(p);
                }
                // Another test took the port between the probe and sshd's bind.
                Err(e) => last = e,
            }
        }
        panic!("cannot start sshd: {last}");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The sshd's log (for failing assertions).
    pub fn log(&self) -> String {
        self.sshd.as_ref().map(Sshd::log).unwrap_or_default()
    }

    /// Allow a key pair to log in.
    pub fn authorize(&self, private: &Path) {
        use std::io::Write;
        let public = std::fs::read_to_string(pub_path(private)).unwrap();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.path().join("authorized_keys")).unwrap();
        f.write_all(public.as_bytes()).unwrap();
    }

    /// The connection keys of an input: this sshd, its user and key, the peer's known_hosts.
    pub fn target(&self) -> Value {
        json!({
            "host": "127.0.0.1",
            "port": self.port(),
            "user": self.user,
            "private_key_file": self.key.to_str().unwrap(),
            "known_hosts": self.known_hosts.to_str().unwrap(),
            "connect_timeout": "5s",
        })
    }

    /// `target()` with more keys.
    pub fn with(&self, extra: Value) -> Value {
        let mut v = self.target();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    /// Restart sshd on the same port with another host key.
    pub fn restart_with_host_key(&mut self, host_key: &Path) {
        self.sshd = None;
        self.sshd = Some(Sshd::start(self.dir.path(), self.port, host_key).unwrap());
    }
}

/// A step sink that keeps logs and progress and pins host keys in a map, as the run state
/// does.
#[derive(Default)]
pub struct TestSink {
    pub pins: Mutex<HashMap<String, String>>,
    pub logs: Mutex<Vec<(LogStream, String)>>,
    pub progress: Mutex<Vec<(String, Option<u8>)>>,
}

#[async_trait]
impl StepSink for TestSink {
    fn progress(&self, _: &StepRef, _: u32, stage: &str, percent: Option<u8>) {
        self.progress.lock().unwrap().push((stage.to_string(), percent));
    }
    fn log(&self, _: &StepRef, stream: LogStream, line: &str) {
        self.logs.lock().unwrap().push((stream, line.to_string()));
    }
    async fn record(&self, _: &ResourceRecord) -> Result<(), ConnectorError> {
        Ok(())
    }
    async fn pin(&self, key: &str, value: &str) -> Result<String, ConnectorError> {
        Ok(self.pins.lock().unwrap().entry(key.to_string()).or_insert_with(|| value.to_string()).clone())
    }
}

impl TestSink {
    pub fn lines(&self, stream: LogStream) -> Vec<String> {
        self.logs.lock().unwrap().iter().filter(|(s, _)| *s == stream).map(|(_, l)| l.clone()).collect()
    }
}

/// A context over `sink`, cancelled by `token`, with `workflow_dir`.
pub fn context(sink: &Arc<TestSink>, token: &CancellationToken, workflow_dir: &Path) -> StepContext {
    let mut cx = StepContext::new("test-run", StepRef { step: "ssh".into(), index: None }, token.clone(), sink.clone());
    cx.workflow_dir = workflow_dir.to_path_buf();
    cx
}

/// A fresh sink and token, and a context over them.
pub fn fresh(workflow_dir: &Path) -> (Arc<TestSink>, CancellationToken, StepContext) {
    let sink = Arc::new(TestSink::default());
    let token = CancellationToken::new();
    let cx = context(&sink, &token, workflow_dir);
    (sink, token, cx)
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Wait up to `limit` for `cond`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    cond()
}
