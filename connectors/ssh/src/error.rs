//! The connector's errors, each with the kind the engine's retry and fallback policy sees.
//!
//! | what failed | kind |
//! |---|---|
//! | TCP connect refused, reset, timed out, DNS; the connection dropped mid-way | `transient` |
//! | the server's host key: mismatch with `known_hosts`, `@revoked`, unknown under `strict`, changed since the run pinned it | `auth` (the *server* failed to authenticate) |
//! | the user's credentials were refused; `sudo` wants a password | `auth` |
//! | a bad setting or input: unreadable or undecryptable key, bad `known_hosts` path, no common algorithm | `invalid` |
//! | the remote command exited non-zero | `invalid` (never retried unless the step asks with `retry: {on: [invalid]}`) |
//! | the remote command was killed by a signal | `transient` (the engine's convention for plugins too) |
//! | a wait ran past its limit | `timeout` |
//! | the step was cancelled | `cancelled` |
//!
//! No message ever holds a password, a passphrase or a private key: keys are named by their
//! file (or `private_key`) and their public fingerprint.

use std::time::Duration;

use engine_connector::{ConnectorError, ErrorKind};

/// An error of the `ssh` connector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Connecting (TCP and SSH handshake) took longer than `connect_timeout`.
    #[error("connecting to {addr} timed out after {}", show_duration(*after))]
    ConnectTimeout {
        /// `host:port`.
        addr: String,
        /// The limit.
        after: Duration,
    },
    /// The SSH protocol failed (handshake, connection lost, channel refused).
    #[error("ssh {what} with {addr} failed: {source}")]
    Protocol {
        /// `host:port`.
        addr: String,
        /// What was going on (`handshake`, `exec`).
        what: &'static str,
        /// russh's error.
        source: russh::Error,
    },
    /// The server's host key is not trusted (mismatch, revoked, unknown, changed since pinned).
    #[error("{0}")]
    HostKey(String),
    /// The server refused every credential offered.
    #[error("{0}")]
    AuthRefused(String),
    /// The step's settings or input are wrong (a key that cannot be read, a bad path).
    #[error("{0}")]
    Config(String),
    /// The remote command exited non-zero.
    #[error("{0}")]
    CommandFailed(String),
    /// The remote command was killed by a signal.
    #[error("{0}")]
    CommandKilled(String),
    /// `sudo -n` needs a password or the user may not use sudo.
    #[error("{0}")]
    Sudo(String),
    /// The connection or channel closed before the command reported how it ended.
    #[error("{0}")]
    Lost(String),
    /// A wait ran past its limit.
    #[error("{0}")]
    Timeout(String),
    /// The step was cancelled.
    #[error("{0}")]
    Cancelled(String),
}

impl Error {
    /// The kind the engine's retry and fallback policy sees.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Connect { .. } | Self::ConnectTimeout { .. } | Self::CommandKilled(_) | Self::Lost(_) => ErrorKind::Transient,
            Self::Protocol { source, .. } => protocol_kind(source),
            Self::HostKey(_) | Self::AuthRefused(_) | Self::Sudo(_) => ErrorKind::Auth,
            Self::Config(_) | Self::CommandFailed(_) => ErrorKind::Invalid,
            Self::Timeout(_) => ErrorKind::Timeout,
            Self::Cancelled(_) => ErrorKind::Cancelled,
        }
    }
}

/// Algorithm negotiation and unreadable keys will fail the same way next time; anything
/// else (a reset, a lost connection, a refused channel) may not.
fn protocol_kind(e: &russh::Error) -> ErrorKind {
    match e {
        russh::Error::NoCommonAlgo { .. } | russh::Error::UnknownAlgo | russh::Error::Version | russh::Error::InvalidConfig(_) | russh::Error::Keys(_) => {
            ErrorKind::Invalid
        }
        russh::Error::ChannelOpenFailure(russh::ChannelOpenFailure::AdministrativelyProhibited | russh::ChannelOpenFailure::UnknownChannelType) => {
            ErrorKind::Invalid
        }
        _ => ErrorKind::Transient,
    }
}

impl From<Error> for ConnectorError {
    fn from(e: Error) -> Self {
        let kind = e.kind();
        let message = e.to_string();
        match e {
            Error::Connect { source, .. } => ConnectorError::new(kind, message).with_source(source),
            Error::Protocol { source, .. } => ConnectorError::new(kind, message).with_source(source),
            _ => ConnectorError::new(kind, message),
        }
    }
}

/// `30s`, `1.5s`, `250ms`.
pub(crate) fn show_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_documented_table() {
        let refused = Error::Connect { addr: "h:22".into(), source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused) };
        assert_eq!(refused.kind(), ErrorKind::Transient);
        assert_eq!(Error::HostKey("x".into()).kind(), ErrorKind::Auth);
        assert_eq!(Error::CommandFailed("x".into()).kind(), ErrorKind::Invalid);
        assert_eq!(Error::CommandKilled("x".into()).kind(), ErrorKind::Transient);
        let e: ConnectorError = Error::Protocol { addr: "h:22".into(), what: "handshake", source: russh::Error::Disconnect }.into();
        assert_eq!(e.kind, ErrorKind::Transient);
        assert!(e.message.contains("h:22"), "{}", e.message);
        let e: ConnectorError = Error::Protocol { addr: "h:22".into(), what: "handshake", source: russh::Error::UnknownAlgo }.into();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(show_duration(Duration::from_secs(30)), "30s");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1.5s");
    }
}
