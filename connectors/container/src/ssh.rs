//! Docker over SSH: `ssh://user@host[:port][/socket]` hosts, reached through the ssh
//! connector's [`Session`]. Every request gets its own `direct-streamlocal@openssh.com` channel
//! to the remote daemon's socket, the way `ssh -L` forwards a unix socket; unlike
//! `docker -H ssh://`, nothing but sshd is needed on the remote side (no docker CLI for
//! `docker system dial-stdio`). The login must be allowed to use the socket (root, or a
//! member of the `docker` group) and sshd must allow stream-local forwarding (its default).
//!
//! Host keys, credentials and their defaults are the ssh connector's: the host's own
//! `user@host:port`, then the `ssh:` key of the `connectors: container:` block (same keys as
//! `connectors: ssh:`), then the ssh connector's defaults (agent, `~/.ssh/id_*`, known_hosts,
//! the run's pin).

use std::sync::Arc;

use async_trait::async_trait;
use connector_ssh::{Session, SshTarget};
use engine_connector::{ConnectorError, ErrorKind, StepContext};
use serde_json::Value;

use crate::client::{Dialer, DockerStream, RemoteTransport};

/// Where Docker listens when the host names no socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The `ssh://` transport, plugged into [`crate::ContainerConnector::new`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SshTransport;

/// Split `ssh://user@host:port/run/docker.sock` into the address and the socket path.
///
/// # Errors
/// `invalid` when the host is not an `ssh://` URL or names no machine.
pub fn parse(host: &str) -> Result<(SshTarget, String), ConnectorError> {
    let rest = host.strip_prefix("ssh://").ok_or_else(|| ConnectorError::invalid(format!("Docker host `{host}` is not an ssh:// URL")))?;
    let (address, socket) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, DEFAULT_SOCKET.to_string()),
    };
    Ok((SshTarget::from_address(address)?, socket))
}

#[async_trait]
impl RemoteTransport for SshTransport {
    fn scheme(&self) -> &'static str {
        "ssh"
    }

    async fn dialer(&self, host: &str, cx: &StepContext) -> Result<Arc<dyn Dialer>, ConnectorError> {
        let (mut target, socket) = parse(host)?;
        target.merge_defaults(cx.settings.get("ssh").unwrap_or(&Value::Null))?;
        let session = Session::connect(cx, &target).await?;
        Ok(Arc::new(SshDialer { session: Arc::new(session), socket }))
    }
}

struct SshDialer {
    session: Arc<Session>,
    socket: String,
}

#[async_trait]
impl Dialer for SshDialer {
    async fn dial(&self) -> std::io::Result<Box<dyn DockerStream>> {
        match self.session.open_unix_socket(&self.socket).await {
            Ok(stream) => Ok(Box::new(stream)),
            Err(e) => {
                let kind = match e.kind {
                    ErrorKind::Auth => std::io::ErrorKind::PermissionDenied,
                    _ => std::io::ErrorKind::ConnectionRefused,
                };
                Err(std::io::Error::new(kind, e.message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_into_address_and_socket() {
        let (t, s) = parse("ssh://ubuntu@10.0.0.5:2222").unwrap();
        assert_eq!((t.host.as_str(), t.user.as_deref(), t.port, s.as_str()), ("10.0.0.5", Some("ubuntu"), Some(2222), DEFAULT_SOCKET));
        let (t, s) = parse("ssh://gpu1/run/user/1000/docker.sock").unwrap();
        assert_eq!((t.host.as_str(), t.user, s.as_str()), ("gpu1", None, "/run/user/1000/docker.sock"));
        assert_eq!(parse("tcp://h:1").unwrap_err().kind, ErrorKind::Invalid);
        assert_eq!(parse("ssh://").unwrap_err().kind, ErrorKind::Invalid);
    }
}
