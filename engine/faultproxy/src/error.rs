//! The crate's error type: what can go wrong while building rules.
//!
//! Starting the proxy returns [`std::io::Error`] (binding, a bad upstream URL);
//! everything about rules (a bad path regex, a rules document that does not
//! parse) is an [`Error`].

/// An error building or loading fault rules.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `path_regex` matcher whose pattern does not compile.
    #[error("failed to compile path regex {pattern:?}: {source}")]
    InvalidPathRegex {
        /// The pattern as given.
        pattern: String,
        /// Why it does not compile.
        #[source]
        source: regex::Error,
    },
    /// A rules document (JSON) that does not parse as a rule or a list of rules.
    #[error("failed to parse rules: {0}")]
    InvalidRules(#[source] serde_json::Error),
}

/// The kind of an [`Error`], for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The rule itself is wrong (bad regex, bad JSON): fix the test.
    InvalidRule,
}

impl Error {
    /// The kind of this error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidPathRegex { .. } | Self::InvalidRules(_) => ErrorKind::InvalidRule,
        }
    }
}
