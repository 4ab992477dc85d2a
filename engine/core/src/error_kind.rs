//! The kinds of error a connector reports; the engine decides retries and fallbacks from them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What went wrong, as far as retry and fallback policy is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 5xx, 429, connection reset, provider "try again": retried by default.
    Transient,
    /// No stock of that type in that zone: goes to the step's `fallback` list.
    Capacity,
    /// A quota or limit was hit: goes to the step's `fallback` list.
    Quota,
    /// Credentials missing or refused.
    Auth,
    /// The request itself is wrong.
    Invalid,
    /// The thing does not exist.
    NotFound,
    /// The thing exists in a state that conflicts with the request.
    Conflict,
    /// A wait ran past its limit.
    Timeout,
    /// The step was cancelled.
    Cancelled,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 9] = [
        Self::Transient,
        Self::Capacity,
        Self::Quota,
        Self::Auth,
        Self::Invalid,
        Self::NotFound,
        Self::Conflict,
        Self::Timeout,
        Self::Cancelled,
    ];

    /// The snake_case name used in workflow files and events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Capacity => "capacity",
            Self::Quota => "quota",
            Self::Auth => "auth",
            Self::Invalid => "invalid",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parse the snake_case name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
