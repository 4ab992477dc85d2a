//! An authenticated SSH connection: [`Session::connect`] checks the host key and logs in;
//! then [`Session::exec`] and [`Session::exec_logged`] run commands, [`Session::upload`]
//! writes files, [`Session::open_unix_socket`] reaches a socket on the host.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use engine_connector::{ConnectorError, LogStream, Secret, StepContext};
use russh::client::{self, AuthResult, Handle, Msg};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelStream, ChannelWriteHalf, Disconnect, Sig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::known_hosts::{fingerprint, host_name, HostEntries, KnownHosts};
use crate::target::{home, resolve_path, HostKeyCheck, SshTarget};

/// Most bytes of each output stream an [`ExecOutput`] keeps; [`Session::exec_logged`] still
/// streams the rest to the log.
pub const MAX_CAPTURE: usize = 8 << 20;
/// Longest log line; a longer run of bytes without a newline is logged in pieces.
const MAX_LINE: usize = 64 << 10;
/// How long a cancelled command gets between `SIGTERM` and `SIGKILL`.
const KILL_GRACE: Duration = Duration::from_millis(1000);
/// What every command is prefixed with: a tiny `sh` that prints, as the first line of
/// standard output, the process group of the command's session (its parent is the login
/// shell that sshd made a session leader), so that a cancelled command can be killed even
/// where sshd refuses `signal` requests. The reader takes the line out again. The login
/// shell only needs to understand `sh -c '...'; COMMAND`.
const PGID_PREFIX: &str = "sh -c 'printf \"\\036engine-ssh-pgid %s\\n\" \"$PPID\"'; ";
/// The start of that line.
const PGID_MARK: &str = "\u{1e}engine-ssh-pgid ";
/// Keepalives notice a dead server during a long silent command.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// How the server's host key came to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyTrust {
    /// It is listed for this host in known_hosts.
    KnownHosts,
    /// The host is not in known_hosts; the key is the one this run pinned (now, or before).
    Pinned,
    /// `host_key_check: off`: not checked.
    Unchecked,
}

impl HostKeyTrust {
    /// `known_hosts`, `pinned`, `unchecked`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KnownHosts => "known_hosts",
            Self::Pinned => "pinned",
            Self::Unchecked => "unchecked",
        }
    }
}

/// The server's host key as this session saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`...
    pub algorithm: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// Why it was trusted.
    pub trust: HostKeyTrust,
}

/// What a remote command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit status; `None` when the command was killed by a signal.
    pub exit_code: Option<i32>,
    /// The signal that killed the command (`TERM`, `KILL`...), if one did.
    pub signal: Option<String>,
    /// Standard output (lossy UTF-8, the first [`MAX_CAPTURE`] bytes).
    pub stdout: String,
    /// Standard error (lossy UTF-8, the first [`MAX_CAPTURE`] bytes).
    pub stderr: String,
}

impl ExecOutput {
    /// Whether it exited with status 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// The exit status, or -1 when killed by a signal (as `shell.run` reports it).
    #[must_use]
    pub fn code(&self) -> i32 {
        self.exit_code.unwrap_or(-1)
    }

    /// The last `n` non-empty lines of standard error.
    #[must_use]
    pub fn stderr_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// A stream to a unix socket on the remote host (`direct-streamlocal@openssh.com`, what
/// `ssh -L local:/remote.sock` uses), from [`Session::open_unix_socket`]. Reading gives what
/// the socket's server writes; `shutdown` sends end-of-file; dropping it closes the channel.
/// It keeps the SSH connection open for as long as it lives, even after the [`Session`] is
/// dropped.
pub struct RemoteStream {
    inner: ChannelStream<Msg>,
    _connection: Arc<Handle<Client>>,
}

impl std::fmt::Debug for RemoteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStream").finish_non_exhaustive()
    }
}

impl AsyncRead for RemoteStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for RemoteStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An authenticated SSH connection to one host, for one step. Commands run on channels of
/// it, one after the other or at once. Dropping it closes the connection (streams from
/// [`Session::open_unix_socket`] keep it open while they live).
pub struct Session {
    handle: Arc<Handle<Client>>,
    cx: StepContext,
    addr: String,
    user: String,
    host_key: HostKey,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("addr", &self.addr).field("user", &self.user).field("host_key", &self.host_key).finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// The russh client handler: host key checking.

/// What the handler knows and decides about the server's host key.
struct HostKeyState {
    addr: String,
    host_port_name: String,
    policy: HostKeyCheck,
    known: KnownHosts,
    entries: HostEntries,
    /// The key the server presented and the verdict, set during the handshake.
    seen: Mutex<Option<(PublicKey, Verdict)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    KnownHosts,
    /// Not in known_hosts: to be compared with the run's pin before anything is sent.
    PinPending,
    Unchecked,
}

impl HostKeyState {
    fn judge(&self, key: &PublicKey) -> Result<Verdict, String> {
        if self.policy == HostKeyCheck::Off {
            return Ok(Verdict::Unchecked);
        }
        let fp = fingerprint(key);
        let alg = key.algorithm();
        let alg = alg.as_str();
        if let Some((line, _)) = self.entries.revoked.iter().find(|(_, k)| k == key) {
            return Err(format!("the host key of {} ({alg} {fp}) is marked @revoked in {}; refusing to connect", self.addr, self.known.at(*line)));
        }
        if !self.entries.keys.is_empty() {
            if self.entries.keys.iter().any(|(_, k)| k == key) {
                return Ok(Verdict::KnownHosts);
            }
            let listed: Vec<String> = self
                .entries
                .keys
                .iter()
                .map(|(line, k)| format!("{} {} ({})", k.algorithm().as_str(), fingerprint(k), self.known.at(*line)))
                .collect();
            return Err(format!(
                "host key mismatch for {}: the server presented {alg} {fp}, but known_hosts expects {}. Someone may be intercepting \
                 the connection, or the host was reinstalled; if you know it was, remove the old entry (ssh-keygen -R '{}' -f {}) \
                 and connect again",
                self.addr,
                listed.join(", "),
                self.host_port_name,
                self.known.shown()
            ));
        }
        match self.policy {
            HostKeyCheck::Strict => Err(format!(
                "the host key of {} ({alg} {fp}) is unknown: the host is not in {}{} and host_key_check is strict; add it to the \
                 file, or use host_key_check: pin",
                self.addr,
                self.known.shown(),
                if self.known.exists { "" } else { " (which does not exist)" }
            )),
            HostKeyCheck::Pin => Ok(Verdict::PinPending),
            HostKeyCheck::Off => Ok(Verdict::Unchecked),
        }
    }
}

/// The russh handler of our connections.
pub(crate) struct Client {
    state: Arc<HostKeyState>,
}

/// Errors inside the handshake: russh's own, or our host key verdict.
#[derive(Debug)]
pub(crate) enum HandlerError {
    Ssh(russh::Error),
    HostKey(String),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        Self::Ssh(e)
    }
}

impl client::Handler for Client {
    type Error = HandlerError;

    async fn check_server_key(&mut self, server_key: &PublicKeyOrCertificate) -> Result<bool, HandlerError> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_key else {
            // Certificate algorithms are never offered (`host_key_certificates` is empty).
            return Err(HandlerError::HostKey(format!("{} presented a host certificate, which this client does not offer", self.state.addr)));
        };
        let verdict = self.state.judge(key).map_err(HandlerError::HostKey)?;
        *self.state.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((key.clone(), verdict));
        Ok(true)
    }
}

fn is_rsa(a: &Algorithm) -> bool {
    matches!(a, Algorithm::Rsa { .. })
}

/// russh's host key algorithms, with the families known_hosts lists for this host first,
/// as `ssh` orders them: a server with several keys then presents one we can check.
fn host_key_preference(known: &[Algorithm]) -> Vec<Algorithm> {
    let all: Vec<Algorithm> = russh::Preferred::DEFAULT.key.to_vec();
    let family = |a: &Algorithm, b: &Algorithm| (is_rsa(a) && is_rsa(b)) || a == b;
    let (mut first, rest): (Vec<Algorithm>, Vec<Algorithm>) = all.into_iter().partition(|a| known.iter().any(|k| family(a, k)));
    first.extend(rest);
    first
}

// ---------------------------------------------------------------------------------------
// Credentials.

enum Credential {
    Key { label: String, key: Arc<PrivateKey> },
    Password(Secret),
    Agent,
}

/// Decode a private key; the error names the key by `label`, never by its contents.
fn decode_key(text: &str, passphrase: Option<&Secret>, label: &str) -> Result<PrivateKey, Error> {
    russh::keys::decode_secret_key(text, passphrase.map(Secret::expose)).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => Error::Config(format!("private key {label} is encrypted: give its `passphrase`")),
        other if passphrase.is_some() => Error::Config(format!("cannot read private key {label} (is the passphrase right?): {other}")),
        other => Error::Config(format!("cannot read private key {label}: {other}")),
    })
}

fn key_label(name: &str, key: &PrivateKey) -> String {
    let public = key.public_key();
    format!("{name} ({} {})", public.algorithm().as_str(), fingerprint(public))
}

/// What to offer, in order; `skipped` says why default key files were left out.
async fn credentials(cx: &StepContext, target: &SshTarget) -> Result<(Vec<Credential>, Vec<String>), Error> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    if let Some(text) = &target.private_key {
        let key = decode_key(text.expose(), target.passphrase.as_ref(), "`private_key`")?;
        out.push(Credential::Key { label: key_label("`private_key`", &key), key: Arc::new(key) });
    }
    if let Some(file) = &target.private_key_file {
        let path = resolve_path(file, &cx.workflow_dir);
        let shown = path.display().to_string();
        let text = tokio::fs::read_to_string(&path).await.map_err(|e| Error::Config(format!("cannot read private key file {shown}: {e}")))?;
        let key = decode_key(&text, target.passphrase.as_ref(), &shown)?;
        out.push(Credential::Key { label: key_label(&shown, &key), key: Arc::new(key) });
    }
    if let Some(p) = &target.password {
        out.push(Credential::Password(p.clone()));
    }
    if !out.is_empty() {
        return Ok((out, skipped));
    }
    // Nothing given: what `ssh` would use.
    if std::env::var_os("SSH_AUTH_SOCK").is_some_and(|s| !s.is_empty()) {
        out.push(Credential::Agent);
    }
    if let Some(h) = home() {
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let path: PathBuf = h.join(".ssh").join(name);
            let Ok(text) = tokio::fs::read_to_string(&path).await else { continue };
            let shown = path.display().to_string();
            match decode_key(&text, target.passphrase.as_ref(), &shown) {
                Ok(key) => out.push(Credential::Key { label: key_label(&shown, &key), key: Arc::new(key) }),
                Err(e) => skipped.push(e.to_string()),
            }
        }
    }
    Ok((out, skipped))
}

fn methods(m: &russh::MethodSet) -> String {
    let names: Vec<&str> = m.iter().map(<&str>::from).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// Offer each credential in turn until one is accepted.
async fn authenticate(handle: &mut Handle<Client>, user: &str, addr: &str, creds: Vec<Credential>, skipped: &[String]) -> Result<(), Error> {
    let proto = |what: &'static str| move |e: russh::Error| Error::Protocol { addr: addr.to_string(), what, source: e };
    if creds.is_empty() {
        let mut msg = format!(
            "no credentials to log in as `{user}` on {addr}: give `private_key_file`, `private_key` or `password` (in the step or \
             in `connectors: ssh:`), or run an ssh-agent"
        );
        if !skipped.is_empty() {
            msg.push_str(&format!(" ({})", skipped.join("; ")));
        }
        return Err(Error::AuthRefused(msg));
    }
    let mut tried: Vec<String> = Vec::new();
    let mut allowed = String::from("unknown");
    let mut note: Vec<String> = skipped.to_vec();
    for cred in creds {
        let result = match cred {
            Credential::Key { label, key } => {
                let hash = if key.algorithm().is_rsa() { handle.best_supported_rsa_hash().await.map_err(proto("authentication"))?.flatten() } else { None };
                tried.push(format!("key {label}"));
                handle.authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash)).await.map_err(proto("authentication"))?
            }
            Credential::Password(p) => {
                tried.push("password".into());
                handle.authenticate_password(user, p.expose()).await.map_err(proto("authentication"))?
            }
            Credential::Agent => {
                let mut agent = match AgentClient::connect_env().await {
                    Ok(a) => a,
                    Err(e) => {
                        note.push(format!("ssh-agent: {e}"));
                        continue;
                    }
                };
                let identities = match agent.request_identities().await {
                    Ok(ids) => ids,
                    Err(e) => {
                        note.push(format!("ssh-agent: {e}"));
                        continue;
                    }
                };
                let mut last = None;
                for id in identities {
                    let AgentIdentity::PublicKey { key, comment } = id else { continue };
                    let hash = if key.algorithm().is_rsa() { handle.best_supported_rsa_hash().await.map_err(proto("authentication"))?.flatten() } else { None };
                    tried.push(format!("agent key {comment} ({} {})", key.algorithm().as_str(), fingerprint(&key)));
                    match handle.authenticate_publickey_with(user, key, hash, &mut agent).await {
                        Ok(r @ AuthResult::Success) => {
                            last = Some(r);
                            break;
                        }
                        Ok(r) => last = Some(r),
                        Err(e) => note.push(format!("ssh-agent: {e}")),
                    }
                }
                match last {
                    Some(r) => r,
                    None => continue,
                }
            }
        };
        match result {
            AuthResult::Success => return Ok(()),
            AuthResult::Failure { remaining_methods, partial_success } => {
                allowed = methods(&remaining_methods);
                if partial_success {
                    note.push("the server wants a further authentication step (multi-factor), which is not supported".into());
                }
            }
        }
    }
    let mut msg = format!(
        "permission denied for user `{user}` on {addr} with {} (the server accepts: {allowed})",
        if tried.is_empty() { "no usable credential".to_string() } else { tried.join(", ") }
    );
    if !note.is_empty() {
        msg.push_str(&format!("; {}", note.join("; ")));
    }
    Err(Error::AuthRefused(msg))
}

// ---------------------------------------------------------------------------------------
// Connecting.

impl Session {
    /// Connect to `target`, check its host key, log in.
    ///
    /// `target` should already hold the `connectors: ssh:` defaults
    /// ([`SshTarget::merge_defaults`]). Relative paths resolve against `cx.workflow_dir`.
    /// The returned session keeps a clone of `cx`: commands stop when the step is cancelled,
    /// and [`Session::exec_logged`] writes to its log.
    ///
    /// # Host keys
    /// A host listed in known_hosts must present one of the keys listed for it (a mismatch
    /// names both fingerprints), and never a key marked `@revoked`. A host that is not listed
    /// is refused under `host_key_check: strict`; under `pin` (the default) its key is pinned
    /// with `cx.pin("ssh-host-key:HOST:PORT", "SHA256:...")` before any credential is sent,
    /// and a connection of the same run that sees another key fails. `off` checks nothing and
    /// logs a warning.
    ///
    /// # Errors
    /// `transient` when the host cannot be reached (refused, reset, `connect_timeout`);
    /// `auth` when the host key is not trusted or every credential is refused; `invalid` for
    /// unreadable keys or files; `cancelled`.
    pub async fn connect(cx: &StepContext, target: &SshTarget) -> Result<Session, ConnectorError> {
        target.validate()?;
        Self::connect_within(cx, target, target.connect_timeout()).await.map_err(ConnectorError::from)
    }

    /// [`Session::connect`] with the crate's error and another limit (`ssh.wait` gives each
    /// attempt what is left of its wait).
    pub(crate) async fn connect_within(cx: &StepContext, target: &SshTarget, limit: Duration) -> Result<Session, Error> {
        let target = &target.normalized().map_err(|e| Error::Config(e.message))?;
        let host = target.host.trim().to_string();
        let port = target.port();
        let user = target.user().to_string();
        let addr = target.addr();
        let policy = target.host_key_check();

        let (creds, skipped) = credentials(cx, target).await?;
        let known = match (policy, target.known_hosts_path(&cx.workflow_dir)) {
            (HostKeyCheck::Off, _) | (_, None) => KnownHosts::default(),
            (_, Some(path)) => KnownHosts::load(&path).map_err(|e| Error::Config(format!("cannot read known_hosts file {}: {e}", path.display())))?,
        };
        let entries = known.lookup(&host, port);
        let mut preferred = russh::Preferred::DEFAULT.clone();
        preferred.key = host_key_preference(&entries.algorithms()).into();
        let state = Arc::new(HostKeyState {
            addr: addr.clone(),
            host_port_name: host_name(&host, port),
            policy,
            known,
            entries,
            seen: Mutex::new(None),
        });
        let config = Arc::new(client::Config {
            preferred,
            keepalive_interval: Some(KEEPALIVE),
            keepalive_max: 4,
            nodelay: true,
            ..client::Config::default()
        });

        let deadline = tokio::time::Instant::now() + limit;
        let handshake = async {
            let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| Error::Connect { addr: addr.clone(), source: e })?;
            let _ = tcp.set_nodelay(true);
            client::connect_stream(config, tcp, Client { state: state.clone() }).await.map_err(|e| match e {
                HandlerError::HostKey(m) => Error::HostKey(m),
                HandlerError::Ssh(e) => Error::Protocol { addr: addr.clone(), what: "handshake", source: e },
            })
        };
        let mut handle = tokio::select! {
            r = tokio::time::timeout_at(deadline, handshake) => r.map_err(|_| Error::ConnectTimeout { addr: addr.clone(), after: limit })??,
            () = cx.cancelled() => return Err(Error::Cancelled(format!("cancelled while connecting to {addr}"))),
        };

        // The handshake is done and nothing was sent yet: settle the host key first.
        let seen = state.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let Some((key, verdict)) = seen else {
            return Err(Error::HostKey(format!("{addr} completed the handshake without a host key being checked")));
        };
        let fp = fingerprint(&key);
        let algorithm = key.algorithm().as_str().to_string();
        let trust = match verdict {
            Verdict::KnownHosts => HostKeyTrust::KnownHosts,
            Verdict::Unchecked => {
                cx.log(
                    LogStream::Stderr,
                    &format!("warning: host_key_check is off: accepting the host key of {addr} ({algorithm} {fp}) without checking it"),
                );
                HostKeyTrust::Unchecked
            }
            Verdict::PinPending => {
                let pin_key = format!("ssh-host-key:{}:{port}", host.to_ascii_lowercase());
                let pinned = cx.pin(&pin_key, &fp).await.map_err(|e| Error::Config(format!("cannot pin the host key of {addr}: {}", e.message)))?;
                if pinned != fp {
                    let _ = handle.disconnect(Disconnect::HostKeyNotVerifiable, "host key changed", "en").await;
                    return Err(Error::HostKey(format!(
                        "the host key of {addr} changed during this run: it was {pinned} when this run first connected, and is now \
                         {algorithm} {fp}. Someone may be intercepting the connection, or the host was replaced; refusing to connect"
                    )));
                }
                HostKeyTrust::Pinned
            }
        };

        let login = authenticate(&mut handle, &user, &addr, creds, &skipped);
        tokio::select! {
            r = tokio::time::timeout_at(deadline.max(tokio::time::Instant::now() + Duration::from_secs(5)), login) => {
                r.map_err(|_| Error::ConnectTimeout { addr: addr.clone(), after: limit })??;
            }
            () = cx.cancelled() => return Err(Error::Cancelled(format!("cancelled while logging in to {addr}"))),
        }
        Ok(Session { handle: Arc::new(handle), cx: cx.clone(), addr, user, host_key: HostKey { algorithm, fingerprint: fp, trust } })
    }

    /// `host:port`.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The user logged in as.
    #[must_use]
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The server's host key and why it was trusted.
    #[must_use]
    pub fn host_key(&self) -> &HostKey {
        &self.host_key
    }

    /// The step context the session was opened with.
    pub(crate) fn cx(&self) -> &StepContext {
        &self.cx
    }

    /// Close the connection politely (dropping the session closes it too).
    pub async fn close(self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
    }

    fn proto(&self, what: &'static str) -> impl Fn(russh::Error) -> Error + '_ {
        move |e| Error::Protocol { addr: self.addr.clone(), what, source: e }
    }

    // -----------------------------------------------------------------------------------
    // Commands.

    /// Run `command` (through the login shell, as `ssh host command` does) and collect its
    /// output. Nothing is logged. A non-zero exit is not an error here: look at
    /// [`ExecOutput::exit_code`], or use [`Session::check`]. The login shell gets
    /// `sh -c '...'; COMMAND`, where the small `sh` reports the session's process group on a
    /// first line of standard output that is taken out again.
    ///
    /// When the step is cancelled, the command's process group gets `SIGTERM`, then
    /// `SIGKILL` a second later, and the channel is closed; the same happens when this future
    /// is dropped (a step timeout). This works for root logins too, where sshd ignores SSH
    /// `signal` requests. Several commands may run at once on one session.
    ///
    /// # Errors
    /// `transient` when the connection fails; `cancelled`.
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, ConnectorError> {
        self.exec_inner(command, None, false).await.map_err(ConnectorError::from)
    }

    /// As [`Session::exec`], and every line of standard output and standard error goes to the
    /// step log (`cx.log`, secrets masked) as it arrives.
    ///
    /// # Errors
    /// As [`Session::exec`].
    pub async fn exec_logged(&self, command: &str) -> Result<ExecOutput, ConnectorError> {
        self.exec_inner(command, None, true).await.map_err(ConnectorError::from)
    }

    /// As [`Session::exec`] (or [`Session::exec_logged`] when `log`), with `stdin` streamed
    /// to the command's standard input, then end-of-file.
    ///
    /// # Errors
    /// As [`Session::exec`].
    pub async fn exec_with_stdin(&self, command: &str, stdin: &mut (dyn AsyncRead + Send + Unpin), log: bool) -> Result<ExecOutput, ConnectorError> {
        self.exec_inner(command, Some(stdin), log).await.map_err(ConnectorError::from)
    }

    /// `Ok(out)` when `out` exited 0; else the error `ssh.run` fails with: `invalid` with the
    /// exit code and the last lines of standard error (masked), or `transient` when a signal
    /// killed it. `what` names the command in the message (`"the command"`).
    ///
    /// # Errors
    /// As said.
    pub fn check(&self, out: ExecOutput, what: &str) -> Result<ExecOutput, ConnectorError> {
        self.failure(&out, what).map_or(Ok(out), |e| Err(e.into()))
    }

    pub(crate) fn failure(&self, out: &ExecOutput, what: &str) -> Option<Error> {
        if out.success() {
            return None;
        }
        let tail = self.cx.masker.mask(&out.stderr_tail(5));
        let tail = if tail.is_empty() { String::new() } else { format!(": {tail}") };
        Some(match (&out.exit_code, &out.signal) {
            (Some(code), _) => Error::CommandFailed(format!("{what} exited with code {code} on {}{tail}", self.addr)),
            (None, sig) => Error::CommandKilled(format!("{what} was killed by signal {} on {}{tail}", sig.as_deref().unwrap_or("?"), self.addr)),
        })
    }

    pub(crate) async fn exec_inner(&self, command: &str, stdin: Option<&mut (dyn AsyncRead + Send + Unpin)>, log: bool) -> Result<ExecOutput, Error> {
        if self.cx.is_cancelled() {
            return Err(Error::Cancelled("cancelled before the command started".into()));
        }
        let channel = tokio::select! {
            r = self.handle.channel_open_session() => r.map_err(self.proto("opening a session channel"))?,
            () = self.cx.cancelled() => return Err(Error::Cancelled("cancelled before the command started".into())),
        };
        let (mut rd, wr) = channel.split();
        let wr = Arc::new(wr);
        let pgid = Arc::new(AtomicU32::new(0));
        // From here on, dropping this future (a step timeout) kills the command.
        let mut guard = KillGuard(Some((self.handle.clone(), wr.clone(), pgid.clone())));
        wr.exec(true, format!("{PGID_PREFIX}{command}")).await.map_err(self.proto("exec"))?;

        let writing = async {
            if let Some(input) = stdin {
                let mut tx = wr.make_writer();
                let mut input = tokio::io::BufReader::with_capacity(32 << 10, input);
                tokio::io::copy_buf(&mut input, &mut tx).await?;
            }
            wr.eof().await.map_err(std::io::Error::other)
        };
        let mut reader = Reader::new(&self.cx, log, pgid.clone());
        let outcome = {
            let reading = reader.read(&mut rd);
            tokio::pin!(writing, reading);
            let mut written = false;
            loop {
                tokio::select! {
                    r = &mut reading => break Some(r),
                    // A write error (the command exited without reading it all) shows in what
                    // it reports; the reader carries on until the channel closes.
                    _ = &mut writing, if !written => written = true,
                    () = self.cx.cancelled() => break None,
                }
            }
        };
        guard.0 = None;
        let Some((exit_code, signal, refused)) = outcome else {
            terminate(&self.handle, &wr, pgid.load(Ordering::SeqCst)).await;
            return Err(Error::Cancelled(format!("cancelled; the command's processes on {} were sent SIGTERM (SIGKILL 1s later) and its channel closed", self.addr)));
        };
        if refused {
            return Err(Error::Lost(format!("{} refused to run the command", self.addr)));
        }
        if exit_code.is_none() && signal.is_none() {
            return Err(Error::Lost(format!("the connection to {} closed before the command reported how it ended", self.addr)));
        }
        let (stdout, stderr) = reader.finish();
        Ok(ExecOutput { exit_code, signal, stdout, stderr })
    }

    /// Open a stream to the unix socket `path` on the host (`direct-streamlocal@openssh.com`,
    /// needs sshd's `AllowStreamLocalForwarding`, on by default): e.g. `/var/run/docker.sock`
    /// to talk to the host's Docker Engine.
    ///
    /// # Errors
    /// `invalid` when sshd forbids forwarding; `transient` when sshd cannot connect to the
    /// socket (missing, refused, no permission) or the connection fails; `cancelled`.
    pub async fn open_unix_socket(&self, path: &str) -> Result<RemoteStream, ConnectorError> {
        let channel = tokio::select! {
            r = self.handle.channel_open_direct_streamlocal(path) => r.map_err(|e| {
                let reason = match &e {
                    russh::Error::ChannelOpenFailure(f) => match f {
                        russh::ChannelOpenFailure::AdministrativelyProhibited => "sshd forbids it (AllowStreamLocalForwarding)".to_string(),
                        russh::ChannelOpenFailure::ConnectFailed => "sshd could not connect to it (missing, refused or no permission)".to_string(),
                        other => format!("{other:?}"),
                    },
                    other => other.to_string(),
                };
                let err: ConnectorError = Error::Protocol { addr: self.addr.clone(), what: "unix socket forwarding", source: e }.into();
                ConnectorError { message: format!("cannot open unix socket {path} on {}: {reason}", self.addr), ..err }
            })?,
            () = self.cx.cancelled() => return Err(Error::Cancelled(format!("cancelled while opening {path} on {}", self.addr)).into()),
        };
        Ok(RemoteStream { inner: channel.into_stream(), _connection: self.handle.clone() })
    }
}

/// Kills a running command when dropped while armed (the future running it was dropped:
/// a step timeout).
struct KillGuard(Option<Running>);

/// What it takes to kill a running command: the connection, its channel, its process group.
type Running = (Arc<Handle<Client>>, Arc<ChannelWriteHalf<Msg>>, Arc<AtomicU32>);

impl Drop for KillGuard {
    fn drop(&mut self) {
        let Some((handle, wr, pgid)) = self.0.take() else { return };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            // The task holds the connection, so it lives until the kill is sent.
            rt.spawn(async move { terminate(&handle, &wr, pgid.load(Ordering::SeqCst)).await });
        }
    }
}

/// End a command: `SIGTERM` to its process group, `SIGKILL` a second later, then close its
/// channel. Two ways, as neither always works: sshd's `signal` request (a `killpg` of the
/// session, which sshd refuses for root logins, where it runs without privilege
/// separation), and `kill` run on a channel of its own against the process group the command
/// reported when it started ([`PGID_PREFIX`]).
async fn terminate(handle: &Handle<Client>, wr: &ChannelWriteHalf<Msg>, pgid: u32) {
    let _ = wr.signal(Sig::TERM).await;
    if pgid > 1 {
        let killer = format!(
            "kill -TERM -- -{pgid} 2>/dev/null; (sleep {grace}; kill -KILL -- -{pgid}) </dev/null >/dev/null 2>&1 &",
            grace = KILL_GRACE.as_secs().max(1)
        );
        let run = async {
            let mut ch = handle.channel_open_session().await.ok()?;
            ch.exec(true, killer).await.ok()?;
            while ch.wait().await.is_some() {}
            Some(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), run).await;
    } else {
        // Without a known process group, give the signal request its second to work.
        tokio::time::sleep(KILL_GRACE).await;
        let _ = wr.signal(Sig::KILL).await;
    }
    let _ = wr.close().await;
}

/// The name of a signal as `kill -l` prints it.
fn signal_name(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT".into(),
        Sig::ALRM => "ALRM".into(),
        Sig::FPE => "FPE".into(),
        Sig::HUP => "HUP".into(),
        Sig::ILL => "ILL".into(),
        Sig::INT => "INT".into(),
        Sig::KILL => "KILL".into(),
        Sig::PIPE => "PIPE".into(),
        Sig::QUIT => "QUIT".into(),
        Sig::SEGV => "SEGV".into(),
        Sig::TERM => "TERM".into(),
        Sig::USR1 => "USR1".into(),
        Sig::Custom(s) => s.clone(),
    }
}

/// One output stream: captured (up to [`MAX_CAPTURE`]) and, when logging, cut into lines.
struct Lines {
    stream: LogStream,
    log: bool,
    captured: Vec<u8>,
    pending: Vec<u8>,
}

impl Lines {
    fn new(stream: LogStream, log: bool) -> Self {
        Self { stream, log, captured: Vec::new(), pending: Vec::new() }
    }

    fn push(&mut self, data: &[u8], cx: &StepContext) {
        let room = MAX_CAPTURE.saturating_sub(self.captured.len());
        self.captured.extend_from_slice(&data[..data.len().min(room)]);
        if !self.log {
            return;
        }
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
            self.emit(start, start + nl, cx);
            start += nl + 1;
        }
        self.pending.drain(..start);
        while self.pending.len() > MAX_LINE {
            self.emit(0, MAX_LINE, cx);
            self.pending.drain(..MAX_LINE);
        }
    }

    fn emit(&self, from: usize, to: usize, cx: &StepContext) {
        let line = String::from_utf8_lossy(&self.pending[from..to]);
        cx.log(self.stream, line.trim_end_matches('\r'));
    }

    fn finish(&mut self, cx: &StepContext) {
        if self.log && !self.pending.is_empty() {
            self.emit(0, self.pending.len(), cx);
            self.pending.clear();
        }
    }
}

/// Reads a command's channel until it closes.
struct Reader<'a> {
    cx: &'a StepContext,
    out: Lines,
    err: Lines,
    /// Standard output until the [`PGID_PREFIX`] line has been taken out of it.
    head: Option<Vec<u8>>,
    pgid: Arc<AtomicU32>,
}

impl<'a> Reader<'a> {
    fn new(cx: &'a StepContext, log: bool, pgid: Arc<AtomicU32>) -> Self {
        Self { cx, out: Lines::new(LogStream::Stdout, log), err: Lines::new(LogStream::Stderr, log), head: Some(Vec::new()), pgid }
    }

    fn stdout(&mut self, data: &[u8]) {
        let Some(head) = self.head.as_mut() else {
            self.out.push(data, self.cx);
            return;
        };
        head.extend_from_slice(data);
        let mark = PGID_MARK.as_bytes();
        if let Some(nl) = head.iter().position(|&b| b == b'\n') {
            let head = self.head.take().unwrap_or_default();
            let rest = match head[..nl].strip_prefix(mark) {
                Some(id) => {
                    let id = String::from_utf8_lossy(id).trim().parse().unwrap_or(0);
                    self.pgid.store(id, Ordering::SeqCst);
                    &head[nl + 1..]
                }
                None => &head[..],
            };
            self.out.push(rest, self.cx);
        } else if !(head.starts_with(mark) || mark.starts_with(head)) {
            let head = self.head.take().unwrap_or_default();
            self.out.push(&head, self.cx);
        }
    }

    /// `(exit code, signal, the exec request was refused)`.
    async fn read(&mut self, rd: &mut russh::ChannelReadHalf) -> (Option<i32>, Option<String>, bool) {
        let (mut code, mut signal, mut refused) = (None, None, false);
        while let Some(msg) = rd.wait().await {
            match msg {
                ChannelMsg::Data { data } => self.stdout(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => self.err.push(&data, self.cx),
                ChannelMsg::ExitStatus { exit_status } => code = Some(i32::try_from(exit_status).unwrap_or(i32::MAX)),
                ChannelMsg::ExitSignal { signal_name: s, .. } => signal = Some(signal_name(&s)),
                ChannelMsg::Failure => refused = true,
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        if let Some(head) = self.head.take() {
            self.out.push(&head, self.cx);
        }
        self.out.finish(self.cx);
        self.err.finish(self.cx);
        (code, signal, refused)
    }

    fn finish(&mut self) -> (String, String) {
        (String::from_utf8_lossy(&self.out.captured).into_owned(), String::from_utf8_lossy(&self.err.captured).into_owned())
    }
}

/// Quote `s` for a POSIX shell: as it is when it is plainly safe, else in single quotes.
#[must_use]
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '=' | '@' | '%' | '+' | ',')) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc/def-1.2"), "abc/def-1.2");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME;rm"), "'$HOME;rm'");
    }

    #[test]
    fn known_families_come_first() {
        let pref = host_key_preference(&[Algorithm::Rsa { hash: None }]);
        assert!(pref[..3].iter().all(is_rsa), "{pref:?}");
        assert_eq!(pref.len(), russh::Preferred::DEFAULT.key.len());
        assert_eq!(host_key_preference(&[])[0], Algorithm::Ed25519);
    }

    #[test]
    fn lines_are_cut_and_captured() {
        let cx = StepContext::detached("s");
        let mut l = Lines::new(LogStream::Stdout, true);
        l.push(b"one\ntw", &cx);
        assert_eq!(l.pending, b"tw");
        l.push(b"o\r\nthree", &cx);
        assert_eq!(l.pending, b"three");
        l.finish(&cx);
        assert!(l.pending.is_empty());
        assert_eq!(l.captured, b"one\ntwo\r\nthree");
        let out = ExecOutput { stderr: "a\n\nb\nc\n".into(), ..ExecOutput::default() };
        assert_eq!(out.stderr_tail(2), "b\nc");
        assert_eq!(out.code(), -1);
    }
}
