//! Where to connect and how to authenticate: [`SshTarget`], the connection part of every
//! `ssh.*` input, and [`SshSettings`], the workflow's `connectors: ssh:` block that fills in
//! what a step leaves out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use engine_connector::{ConnectorError, Secret};
use engine_core::duration::DurationStr;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The port when none is given.
pub const DEFAULT_PORT: u16 = 22;
/// The user when none is given: the user cloud images of this engine's providers log in as
/// unless their `ssh_user` output says otherwise.
pub const DEFAULT_USER: &str = "root";
/// `connect_timeout` when none is given.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the server's host key is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostKeyCheck {
    /// The host must be in `known_hosts` with the key it presents.
    Strict,
    /// A host in `known_hosts` must present a key listed there; a host that is not is
    /// trusted on first use *within the run*: the first key seen is pinned in the run state,
    /// and any later connection of the run (a retry, another step, after a resume) that sees
    /// another key fails.
    #[default]
    Pin,
    /// No check at all (a warning is logged). Only for throw-away test hosts.
    Off,
}

impl HostKeyCheck {
    /// `strict`, `pin`, `off`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Pin => "pin",
            Self::Off => "off",
        }
    }
}

/// Where to connect and how to log in. Embed it in an action's input, flattened
/// (`#[serde(flatten)] target: SshTarget`: `host`, `user`... sit beside the action's own
/// keys, as in `ssh.run`) or nested under a key of its own; then call
/// [`SshTarget::merge_defaults`] with the `connectors: ssh:` block before connecting.
///
/// Credentials, in the order they are tried: `private_key` or `private_key_file`, then
/// `password`. When none of these is given: the keys of an ssh-agent (`SSH_AUTH_SOCK`),
/// then `~/.ssh/id_ed25519`, `id_ecdsa` and `id_rsa`, as `ssh` does.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshTarget {
    /// Host name or IP address of the server.
    pub host: String,
    /// TCP port (default 22).
    #[serde(default)]
    pub port: Option<u16>,
    /// User to log in as (default: the `user` of the `connectors: ssh:` block, else `root`).
    #[serde(default)]
    pub user: Option<String>,
    /// Private key file, OpenSSH or PEM format (`~/` and paths relative to the workflow's
    /// directory are resolved). Encrypted keys need `passphrase`.
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// The private key itself (OpenSSH or PEM text), e.g. `${{ secrets.ssh_key }}`.
    #[serde(default, deserialize_with = "opt_secret")]
    #[schemars(with = "Option<String>", extend("writeOnly" = true))]
    pub private_key: Option<Secret>,
    /// Password, for password authentication (a secret).
    #[serde(default, deserialize_with = "opt_secret")]
    #[schemars(with = "Option<String>", extend("writeOnly" = true))]
    pub password: Option<Secret>,
    /// Passphrase of an encrypted private key (a secret).
    #[serde(default, deserialize_with = "opt_secret")]
    #[schemars(with = "Option<String>", extend("writeOnly" = true))]
    pub passphrase: Option<Secret>,
    /// known_hosts file to check the server's host key against (default
    /// `~/.ssh/known_hosts`; hashed entries, `[host]:port`, wildcards and `@revoked` are
    /// understood). A missing file counts as empty.
    #[serde(default)]
    pub known_hosts: Option<String>,
    /// `pin` (default): a host in known_hosts must match it, another one is pinned to the
    /// key the run first saw; `strict`: the host must be in known_hosts; `off`: no check.
    #[serde(default)]
    pub host_key_check: Option<HostKeyCheck>,
    /// Limit for the TCP connection and the SSH handshake (default `30s`).
    #[serde(default)]
    pub connect_timeout: Option<DurationStr>,
}

/// The `connectors: ssh:` block of a workflow: defaults for every `ssh.*` step (and for
/// other connectors' steps that reach a host over SSH). Every key is optional; a step's own
/// value wins.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    /// Default TCP port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Default user.
    #[serde(default)]
    pub user: Option<String>,
    /// Default private key file.
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// Default private key (a secret).
    #[serde(default, deserialize_with = "opt_secret")]
    #[schemars(with = "Option<String>", extend("writeOnly" = true))]
    pub private_key: Option<Secret>,
    /// Default password (a secret).
    #[serde(default, deserialize_with = "opt_secret")]
    #[schemars(with = "Option<String>", extend("writeOnly" = true))]
    pub password: Option<Secret>,
    /// Default key passphrase (a secret).
    #[serde(default, deserialize_with = "opt_secret")]
    #[schemars(with = "Option<String>", extend("writeOnly" = true))]
    pub passphrase: Option<Secret>,
    /// Default known_hosts file.
    #[serde(default)]
    pub known_hosts: Option<String>,
    /// Default host key policy.
    #[serde(default)]
    pub host_key_check: Option<HostKeyCheck>,
    /// Default connect timeout.
    #[serde(default)]
    pub connect_timeout: Option<DurationStr>,
}

fn opt_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}

impl SshTarget {
    /// A target with every other field left to the defaults.
    #[must_use]
    pub fn new(host: impl Into<String>) -> Self {
        Self { host: host.into(), ..Self::default() }
    }

    /// A target from the address forms users type: `host`, `user@host`, `user@host:port`,
    /// `[::1]:2222`, each optionally prefixed with `ssh://` (Docker's `DOCKER_HOST` form).
    ///
    /// # Errors
    /// `invalid` for an empty host or a port that is not a number.
    pub fn from_address(address: &str) -> Result<Self, ConnectorError> {
        let s = address.trim();
        let s = s.strip_prefix("ssh://").unwrap_or(s);
        let (user, rest) = match s.rsplit_once('@') {
            Some((u, r)) => (Some(u.to_string()).filter(|u| !u.is_empty()), r),
            None => (None, s),
        };
        let (host, port) = match rest.rsplit_once(':') {
            // `[::1]:22` or `host:22`; a bare IPv6 address has several colons.
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                let port = p.parse::<u16>().map_err(|_| ConnectorError::invalid(format!("host `{address}`: `{p}` is not a port number")))?;
                (h, Some(port))
            }
            _ => (rest, None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.trim().is_empty() {
            return Err(ConnectorError::invalid(format!("host `{address}` names no machine")));
        }
        Ok(Self { host: host.to_string(), user, port, ..Self::default() })
    }

    /// The target with an address form in `host` (`user@host:port`, `ssh://...`, as the gpu
    /// and container connectors take it) split into `host`, `user` and `port`. A user or port
    /// given both ways must agree.
    ///
    /// # Errors
    /// `invalid` when the address is malformed or disagrees with `user`/`port`.
    pub fn normalized(&self) -> Result<Self, ConnectorError> {
        let h = self.host.trim();
        let address = h.starts_with("ssh://") || h.contains('@') || h.matches(':').count() == 1 || (h.starts_with('[') && h.contains("]:"));
        if !address {
            return Ok(self.clone());
        }
        let a = Self::from_address(h)?;
        let mut t = self.clone();
        t.host = a.host;
        match (&t.user, a.user) {
            (Some(mine), Some(theirs)) if *mine != theirs => {
                return Err(ConnectorError::invalid(format!("`host` `{h}` names user `{theirs}` but `user` is `{mine}`")));
            }
            (_, Some(theirs)) => t.user = Some(theirs),
            _ => {}
        }
        match (t.port, a.port) {
            (Some(mine), Some(theirs)) if mine != theirs => {
                return Err(ConnectorError::invalid(format!("`host` `{h}` names port {theirs} but `port` is {mine}")));
            }
            (_, Some(theirs)) => t.port = Some(theirs),
            _ => {}
        }
        Ok(t)
    }

    /// Fill what this target leaves out from a `connectors: ssh:` block (`cx.settings` in an
    /// `ssh.*` action). `null` is an empty block. A step's own values win; a key given in the
    /// step is never replaced. When the step names a key of its own (`private_key` or
    /// `private_key_file`), the block's key is not added.
    ///
    /// # Errors
    /// `invalid` when the block has an unknown key or a value of the wrong type.
    pub fn merge_defaults(&mut self, settings: &Value) -> Result<(), ConnectorError> {
        // `host: user@h:port` first, so the block's port or user do not override the step's.
        *self = self.normalized()?;
        if settings.is_null() {
            return Ok(());
        }
        let s: SshSettings = serde_json::from_value(settings.clone()).map_err(|e| ConnectorError::invalid(format!("connectors.ssh: {e}")))?;
        self.port = self.port.or(s.port);
        self.user = self.user.take().or(s.user);
        if self.private_key.is_none() && self.private_key_file.is_none() {
            self.private_key = s.private_key;
            self.private_key_file = s.private_key_file;
            self.passphrase = self.passphrase.take().or(s.passphrase);
        }
        self.password = self.password.take().or(s.password);
        self.known_hosts = self.known_hosts.take().or(s.known_hosts);
        self.host_key_check = self.host_key_check.or(s.host_key_check);
        self.connect_timeout = self.connect_timeout.take().or(s.connect_timeout);
        Ok(())
    }

    /// Pure checks the schema cannot express.
    ///
    /// # Errors
    /// `invalid`, saying what is wrong.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        let t = self.normalized()?;
        let h = t.host.trim();
        if h.is_empty() {
            return Err(ConnectorError::invalid("`host` is empty"));
        }
        if h.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
            return Err(ConnectorError::invalid(format!("`host` `{h}` is not a host name or address (give the user in `user`)")));
        }
        if t.port == Some(0) {
            return Err(ConnectorError::invalid("`port` 0 is not a port"));
        }
        if t.user.as_deref().is_some_and(|u| u.is_empty() || u.chars().any(char::is_whitespace)) {
            return Err(ConnectorError::invalid("`user` is empty or has spaces"));
        }
        if t.private_key.is_some() && t.private_key_file.is_some() {
            return Err(ConnectorError::invalid("give `private_key` or `private_key_file`, not both"));
        }
        Ok(())
    }

    /// The port (default 22).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_PORT)
    }

    /// The user (default `root`).
    #[must_use]
    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or(DEFAULT_USER)
    }

    /// The host key policy (default `pin`).
    #[must_use]
    pub fn host_key_check(&self) -> HostKeyCheck {
        self.host_key_check.unwrap_or_default()
    }

    /// The connect timeout (default 30 s).
    #[must_use]
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout.as_ref().map_or(DEFAULT_CONNECT_TIMEOUT, DurationStr::get)
    }

    /// `host:port`, with brackets around an IPv6 address.
    #[must_use]
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port())
        } else {
            format!("{}:{}", self.host, self.port())
        }
    }

    /// The known_hosts file: the one given (resolved against `base`), else `~/.ssh/known_hosts`.
    pub(crate) fn known_hosts_path(&self, base: &Path) -> Option<PathBuf> {
        match &self.known_hosts {
            Some(p) => Some(resolve_path(p, base)),
            None => home().map(|h| h.join(".ssh").join("known_hosts")),
        }
    }
}

/// The user's home directory.
pub(crate) fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// `~/x` is in the home directory; a relative path is relative to `base` (the workflow's
/// directory).
pub(crate) fn resolve_path(p: &str, base: &Path) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(h) = home() {
            return h.join(rest);
        }
    }
    if p == "~" {
        if let Some(h) = home() {
            return h;
        }
    }
    base.join(p)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_address_in_host_is_split_and_must_agree() {
        let mut t = SshTarget::new("ubuntu@10.0.0.5:2222");
        let n = t.normalized().unwrap();
        assert_eq!((n.host.as_str(), n.user.as_deref(), n.port), ("10.0.0.5", Some("ubuntu"), Some(2222)));
        assert!(t.validate().is_ok());
        t.port = Some(22);
        assert!(t.validate().unwrap_err().message.contains("names port 2222 but `port` is 22"));
        let plain = SshTarget::new("gpu1.example.com");
        assert_eq!(plain.normalized().unwrap().host, "gpu1.example.com");
        assert_eq!(SshTarget::new("fe80::1").normalized().unwrap().host, "fe80::1");
    }

    #[test]
    fn addresses_parse_as_users_type_them() {
        let t = |a: &str| SshTarget::from_address(a).map(|t| (t.host, t.user, t.port));
        assert_eq!(t("gpu1").unwrap(), ("gpu1".into(), None, None));
        assert_eq!(t("ubuntu@10.0.0.5").unwrap(), ("10.0.0.5".into(), Some("ubuntu".into()), None));
        assert_eq!(t("ssh://ubuntu@10.0.0.5:2222").unwrap(), ("10.0.0.5".into(), Some("ubuntu".into()), Some(2222)));
        assert_eq!(t("root@[::1]:22").unwrap(), ("::1".into(), Some("root".into()), Some(22)));
        assert_eq!(t("fe80::1").unwrap(), ("fe80::1".into(), None, None));
        assert!(t("host:http").unwrap_err().message.contains("not a port number"));
        assert!(t("ssh://user@").unwrap_err().message.contains("names no machine"));
    }

    #[test]
    fn secrets_never_print() {
        let t: SshTarget = serde_json::from_value(json!({"host": "h", "password": "hunter22", "private_key": "KEYDATA", "passphrase": "pp-secret"})).unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("hunter22") && !shown.contains("KEYDATA") && !shown.contains("pp-secret"), "{shown}");
        assert_eq!(t.password.as_ref().unwrap().expose(), "hunter22");
    }

    #[test]
    fn unknown_keys_are_errors_and_defaults_apply() {
        assert!(serde_json::from_value::<SshTarget>(json!({"host": "h", "prot": 22})).is_err());
        let t = SshTarget::new("h");
        assert_eq!((t.port(), t.user(), t.host_key_check(), t.connect_timeout()), (22, "root", HostKeyCheck::Pin, Duration::from_secs(30)));
        assert_eq!(t.addr(), "h:22");
        assert_eq!(SshTarget { port: Some(2222), ..SshTarget::new("::1") }.addr(), "[::1]:2222");
    }

    #[test]
    fn merge_defaults_fills_only_what_the_step_left_out() {
        let mut t: SshTarget = serde_json::from_value(json!({"host": "h", "user": "alice", "private_key_file": "k"})).unwrap();
        t.merge_defaults(&json!({"user": "bob", "port": 2200, "private_key": "other", "passphrase": "p", "host_key_check": "strict", "connect_timeout": "5s"})).unwrap();
        assert_eq!(t.user(), "alice");
        assert_eq!(t.port(), 2200);
        assert!(t.private_key.is_none(), "the step's own key wins, the block's key is not added");
        assert!(t.passphrase.is_none(), "the block's passphrase belongs to the block's key");
        assert_eq!(t.host_key_check(), HostKeyCheck::Strict);
        assert_eq!(t.connect_timeout(), Duration::from_secs(5));
        let mut t = SshTarget::new("h");
        t.merge_defaults(&json!({"private_key": "K", "passphrase": "p"})).unwrap();
        assert!(t.private_key.is_some() && t.passphrase.is_some());
        t.merge_defaults(&Value::Null).unwrap();
        let e = t.merge_defaults(&json!({"hots": "x"})).unwrap_err();
        assert!(e.message.contains("connectors.ssh") && e.message.contains("hots"), "{}", e.message);
    }

    #[test]
    fn validate_catches_what_the_schema_cannot() {
        assert!(SshTarget::new("").validate().is_err());
        assert!(SshTarget::new("a host").validate().is_err());
        assert!(SshTarget::new("root@h").validate().is_ok(), "an address form is split");
        assert!(SshTarget { user: Some("ubuntu".into()), ..SshTarget::new("root@h") }.validate().is_err());
        assert!(SshTarget { private_key: Some(Secret::new("k")), private_key_file: Some("f".into()), ..SshTarget::new("h") }.validate().is_err());
        assert!(SshTarget::new("10.0.0.1").validate().is_ok());
    }

    #[test]
    fn paths_resolve_against_the_workflow_dir_and_home() {
        let base = Path::new("/wf");
        assert_eq!(resolve_path("keys/id", base), PathBuf::from("/wf/keys/id"));
        assert_eq!(resolve_path("/abs/id", base), PathBuf::from("/abs/id"));
        if let Some(h) = home() {
            assert_eq!(resolve_path("~/.ssh/id", base), h.join(".ssh/id"));
        }
    }
}
