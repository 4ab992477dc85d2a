//! The SSH test peer (feature `test-util`): a real OpenSSH `sshd` started by a test on
//! 127.0.0.1 and a free port, with its own config, host key and `AuthorizedKeysFile` in a
//! temporary directory, killed when dropped. Keys are made with the real `ssh-keygen`.
//! Used by the tests of this crate and of the connectors that reach hosts through it.
//!
//! Without `/usr/sbin/sshd` or `ssh-keygen`, [`Peer::start`] prints `skipped: ...` and
//! returns `None`, unless `ENGINE_REQUIRE_PEERS=1`, where it panics (install them with
//! `scripts/peers/sshd.sh`).
//!
//! ```no_run
//! use connector_ssh::testing::Peer;
//! use connector_ssh::SshTarget;
//!
//! let Some(peer) = Peer::start() else { return };
//! // Host, port, user, private key and an (empty) known_hosts of this peer: the first host
//! // key seen is pinned.
//! let target: SshTarget = serde_json::from_value(peer.target()).unwrap();
//! // The same with known_hosts listing the peer's host key, checked strictly.
//! let strict: SshTarget = serde_json::from_value(peer.trusted_target()).unwrap();
//! # let _ = (target, strict);
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The sshd binary the peer runs.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Whether the peer can run (`sshd` and `ssh-keygen` are installed). When not, prints
/// `skipped: ...` and returns `false`, or panics under `ENGINE_REQUIRE_PEERS=1`.
///
/// # Panics
/// Under `ENGINE_REQUIRE_PEERS=1` when a binary is missing.
pub fn peer_available() -> bool {
    let missing: Vec<&str> = [SSHD, "ssh-keygen"].into_iter().filter(|b| !on_path(b)).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{} not found: run scripts/peers/sshd.sh", missing.join(" and "));
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

/// Run a command and return its stdout.
///
/// # Panics
/// When it cannot start or fails, with its stderr.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generate a key pair `dir/name` (and `dir/name.pub`) with `ssh-keygen -t kind` (RSA: 2048
/// bits) and `passphrase` (`""`: none); returns the private key's path.
///
/// # Panics
/// When ssh-keygen fails.
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

/// `SHA256:...` of a key pair's public key, as OpenSSH prints it.
///
/// # Panics
/// When ssh-keygen fails.
pub fn openssh_fingerprint(private: &Path) -> String {
    let out = sh(Command::new("ssh-keygen").arg("-l").arg("-E").arg("sha256").arg("-f").arg(pub_path(private)));
    out.split_whitespace().nth(1).expect("fingerprint").to_string()
}

/// The public key file of a private key: `PATH.pub`.
pub fn pub_path(private: &Path) -> PathBuf {
    let mut p = private.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// A port nobody listens on right now on 127.0.0.1.
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One running sshd, killed when dropped.
pub struct Sshd {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// Its log (`-e`: stderr).
    pub log: PathBuf,
    child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// Start `sshd -D -e -f CONFIG` on 127.0.0.1:`port` with `host_key`, the
    /// `authorized_keys` of `dir`, and its config, pid file and log in `dir`; waits until it
    /// sends its banner.
    ///
    /// # Errors
    /// When sshd cannot start, exits, or does not answer within 10 s (the port was taken,
    /// say), with its log.
    ///
    /// # Panics
    /// When `dir` cannot be written.
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
        // sshd refuses to start without its privilege-separation directory.
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
        let mut sshd = Sshd { port, log, child };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                return Err(format!("sshd exited with {status}: {}", sshd.log()));
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
                return Err(format!("sshd did not answer on port {port}: {}", sshd.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far (for failing assertions).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A temporary directory with a host key, a client key authorized for the current user, an
/// empty known_hosts file, and an sshd using them on 127.0.0.1.
pub struct Peer {
    /// Holds everything; removed when the peer is dropped.
    pub dir: tempfile::TempDir,
    /// The private host key sshd runs with now.
    pub host_key: PathBuf,
    /// The private client key, authorized (no passphrase).
    pub key: PathBuf,
    /// An empty known_hosts file, for [`target`](Peer::target): the host key is pinned.
    pub known_hosts: PathBuf,
    /// The current user, the one sshd lets in.
    pub user: String,
    /// sshd's port on 127.0.0.1.
    pub port: u16,
    /// The running sshd; `None` stops it.
    pub sshd: Option<Sshd>,
}

impl Peer {
    /// Make the keys and start sshd on a free port; `None` (after `skipped: ...`) when
    /// sshd or ssh-keygen is missing, see [`peer_available`].
    ///
    /// # Panics
    /// Under `ENGINE_REQUIRE_PEERS=1` when a binary is missing; when sshd does not start.
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

    /// The temporary directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// sshd's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The sshd's log (for failing assertions).
    pub fn log(&self) -> String {
        self.sshd.as_ref().map(Sshd::log).unwrap_or_default()
    }

    /// Allow a key pair (its `.pub` beside it) to log in.
    ///
    /// # Panics
    /// When the public key cannot be read or `authorized_keys` written.
    pub fn authorize(&self, private: &Path) {
        let public = std::fs::read_to_string(pub_path(private)).unwrap();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.path().join("authorized_keys")).unwrap();
        f.write_all(public.as_bytes()).unwrap();
    }

    /// The connection keys of an `SshTarget` (and of an `ssh.*` input): this sshd, its user
    /// and key, and the empty [`known_hosts`](Peer::known_hosts) (the host key is pinned).
    pub fn target(&self) -> Value {
        let mut v = self.settings();
        v["host"] = json!("127.0.0.1");
        v["port"] = json!(self.port());
        v
    }

    /// [`target`](Peer::target) with more keys (replacing those it has).
    ///
    /// # Panics
    /// When `extra` is not an object.
    pub fn with(&self, extra: Value) -> Value {
        let mut v = self.target();
        for (k, x) in extra.as_object().expect("an object") {
            v[k] = x.clone();
        }
        v
    }

    /// [`target`](Peer::target) without `host` and `port`: a `connectors: ssh:` block.
    pub fn settings(&self) -> Value {
        json!({
            "user": self.user,
            "private_key_file": self.key.to_str().unwrap(),
            "known_hosts": self.known_hosts.to_str().unwrap(),
            "connect_timeout": "5s",
        })
    }

    /// The known_hosts line for this sshd's current host key: `[127.0.0.1]:PORT TYPE KEY`.
    ///
    /// # Panics
    /// When the public host key cannot be read.
    pub fn known_hosts_line(&self) -> String {
        let public = std::fs::read_to_string(pub_path(&self.host_key)).unwrap();
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().expect("key type"), fields.next().expect("key"));
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    /// A known_hosts file (`trusted_known_hosts` in the peer's directory, rewritten on each
    /// call) listing this sshd's current host key.
    ///
    /// # Panics
    /// When it cannot be written.
    pub fn trusted_known_hosts(&self) -> PathBuf {
        let path = self.path().join("trusted_known_hosts");
        std::fs::write(&path, self.known_hosts_line()).unwrap();
        path
    }

    /// [`target`](Peer::target) with `known_hosts` listing the peer's host key
    /// ([`trusted_known_hosts`](Peer::trusted_known_hosts)) and `host_key_check: strict`.
    pub fn trusted_target(&self) -> Value {
        let mut v = self.target();
        v["known_hosts"] = json!(self.trusted_known_hosts().to_str().unwrap());
        v["host_key_check"] = json!("strict");
        v
    }

    /// Restart sshd on the same port with another host key (which becomes
    /// [`host_key`](Peer::host_key)).
    ///
    /// # Panics
    /// When sshd does not start again.
    pub fn restart_with_host_key(&mut self, host_key: &Path) {
        self.sshd = None;
        self.sshd = Some(Sshd::start(self.dir.path(), self.port, host_key).unwrap());
        self.host_key = host_key.to_path_buf();
    }
}
