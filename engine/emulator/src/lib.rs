//! `engine-emulator`: emulators of provider APIs that no third party
//! emulates, for the connectors' integration tests. Each one keeps real state
//! with real transitions and answers in the provider's wire shapes, and each
//! is checked against a third-party client (the provider's official SDK and
//! its recorded exchanges) so it cannot drift into agreeing with our own
//! mistakes.
//!
//! - [`scaleway`]: Instance v1, Block Storage, marketplace v2, product catalogue.
//! - [`kubernetes`]: the Kubernetes API server with its controllers, scheduler and kubelet.

pub mod http;
pub mod kubernetes;
pub mod scaleway;
