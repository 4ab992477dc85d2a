//! A fault-injecting HTTP proxy for reliability tests (TESTING.md, "Faults").
//!
//! The proxy sits between a connector and a real peer (moto, fakepve, our own
//! emulators) on `127.0.0.1`. Requests no rule fires on go to the peer
//! untouched; the others get, per test:
//!
//! - an HTTP status with any body and headers ([`Fault::Status`]: 500, 503, ...),
//! - 429 with `Retry-After` ([`Fault::TooMany`]),
//! - a dropped connection: the request is read, then the TCP connection is
//!   reset with no answer ([`Fault::Reset`]),
//! - latency before forwarding ([`Fault::Latency`]),
//! - provider-shaped capacity errors: EC2's `InsufficientInstanceCapacity`
//!   ([`Fault::Ec2InsufficientCapacity`]) and `RequestLimitExceeded`
//!   ([`Fault::Ec2Throttling`]), Scaleway's out-of-stock answer
//!   ([`Fault::ScalewayOutOfStock`]); [`shapes`] says where each shape comes from.
//!
//! A [`Rule`] picks requests with a [`Match`] (method, path prefix or regex,
//! body or query substring, a query/form parameter such as EC2's
//! `Action=RunInstances`, combinations), may let the first `after` matches
//! through and fires at most `times` times. [`FaultProxy::requests`] tells what
//! happened to every request, so a test can prove the connector retried,
//! fell back, and left nothing behind in the peer.
//!
//! # Example
//! A reliability test of `aws.instance.create` against moto: the first two
//! `RunInstances` calls fail for capacity, the connector must retry or fall
//! back, and moto must end up with exactly one instance.
//!
//! ```no_run
//! use engine_faultproxy::{Fault, FaultProxy, Match, Rule};
//!
//! # async fn reliability_test(moto_url: &str) -> std::io::Result<()> {
//! // The peer (moto_server) runs at moto_url, started by the test harness.
//! let proxy = FaultProxy::start(moto_url).await?;
//! proxy.add_rule(
//!     Rule::times(2, Fault::Ec2InsufficientCapacity).matching(Match::body_contains("Action=RunInstances")),
//! );
//!
//! // Point the connector at the proxy instead of the peer.
//! let workflow = format!(
//!     "steps:\n  - id: vm\n    uses: aws.instance.create\n    with:\n      endpoint: {}\n      instance_type: g5.xlarge\n",
//!     proxy.url()
//! );
//! # let _ = workflow;
//! // ... run the workflow, then check the peer holds exactly one instance ...
//!
//! let log = proxy.requests();
//! let faulted = log.iter().filter(|r| r.faulted).count();
//! assert_eq!(faulted, 2);
//! assert!(log.iter().any(|r| !r.faulted && r.status == Some(200)));
//! proxy.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # The binary and its control API
//! `engine-faultproxy --upstream URL [--listen 127.0.0.1:PORT] [--rules rules.json]`
//! prints its URL (`http://127.0.0.1:PORT`) on stdout once it accepts
//! connections, and serves the control API on the same port under
//! `/__faults/` ([`control`]): `POST /__faults/rules` (a JSON rule list,
//! replaces), `DELETE /__faults/rules`, `GET /__faults/log`. The rules JSON is
//! the serde form of [`Rule`] (see [`rule`]). Library proxies serve the same
//! control API.
//!
//! # Assumptions
//! - Plain HTTP/1.1 between the client and the proxy; the upstream may be
//!   `http://` or `https://` (with [`Builder::accept_invalid_certs`] for
//!   self-signed peers).
//! - Bodies are buffered whole, both ways (no streaming): fine for API calls,
//!   not for multi-gigabyte downloads.
//! - Forwarding keeps method, path and query, headers and body. The proxy
//!   drops hop-by-hop headers, sets `Host` to the upstream's (unless
//!   [`Builder::preserve_host`]) and, as its HTTP client does, adds
//!   `Accept: */*` when the client sent no `Accept`. Signed requests
//!   (AWS `SigV4`) are signed for the proxy's host: peers that check signatures
//!   need `preserve_host(true)`.

pub mod control;
mod error;
mod proxy;
pub mod rule;
pub mod shapes;

pub use control::CONTROL_PREFIX;
pub use error::{Error, ErrorKind};
pub use proxy::{Builder, FaultProxy, RequestLog, RuleStatus, FAULT_HEADER};
pub use rule::{Fault, Match, PathRegex, Rule};
