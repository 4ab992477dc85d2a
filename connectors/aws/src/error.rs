//! The errors of the `aws` connector and how each maps to an [`ErrorKind`].
//!
//! | EC2 answered / what happened | kind |
//! |---|---|
//! | `InsufficientInstanceCapacity`, `InsufficientHostCapacity`, `InsufficientReservedInstanceCapacity`, `InsufficientCapacity`, `SpotMaxPriceTooLow`, `Unsupported` (the type is not offered in that zone) | `capacity` |
//! | `*LimitExceeded` (`VcpuLimitExceeded`, `InstanceLimitExceeded`, `MaxSpotInstanceCountExceeded`, `SecurityGroupLimitExceeded`...) except `RequestLimitExceeded` | `quota` |
//! | `RequestLimitExceeded`, `Throttling`, `ThrottlingException`, `ServiceUnavailable`, `Unavailable`, `InternalError`, any 5xx or 429, a connection error | `transient` |
//! | `AuthFailure`, `UnauthorizedOperation`, `InvalidClientTokenId`, `SignatureDoesNotMatch`, `OptInRequired`, `Blocked`, no credentials | `auth` |
//! | `InvalidInstanceID.NotFound`, `InvalidGroup.NotFound`, other `*.NotFound` | `not_found` |
//! | `IdempotentParameterMismatch`, `DependencyViolation`, `InvalidGroup.Duplicate`, `IncorrectInstanceState` | `conflict` |
//! | `InvalidParameterValue`, `InvalidAMIID.*`, `InvalidInstanceType*`, `InvalidSubnetID.*`, `InvalidKeyPair.*`, `MissingParameter`, other 4xx | `invalid` |
//!
//! Messages keep the provider's code and message and never carry credentials (requests are
//! signed in headers that no message includes).

use std::time::Duration;

use engine_connector::{ConnectorError, ErrorKind};

/// What went wrong talking to EC2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// EC2 answered with an error.
    #[error("{action}: EC2 answered {status} {code}: {message}")]
    Api {
        /// The Query API action.
        action: String,
        /// HTTP status.
        status: u16,
        /// EC2's error code.
        code: String,
        /// EC2's message.
        message: String,
        /// A `Retry-After` the answer carried, in seconds.
        retry_after: Option<u64>,
    },
    /// The endpoint could not be reached, or the answer broke off.
    #[error("{action}: cannot reach EC2 at {endpoint}: {detail}")]
    Transport {
        /// The Query API action.
        action: String,
        /// The endpoint.
        endpoint: String,
        /// The innermost cause.
        detail: String,
    },
    /// An answer that is not the XML expected.
    #[error("{action}: unexpected answer from EC2: {detail}")]
    Parse {
        /// The Query API action.
        action: String,
        /// What was wrong.
        detail: String,
    },
    /// No credentials were found.
    #[error("{0}")]
    NoCredentials(String),
    /// The request could not be signed.
    #[error("failed to sign the request: {0}")]
    Signing(String),
    /// The step was cancelled during a call.
    #[error("{0}: cancelled while waiting for EC2")]
    Cancelled(String),
}

/// The kind of an EC2 error code (and HTTP status, for codes not listed).
#[must_use]
pub fn code_kind(code: &str, status: u16) -> ErrorKind {
    match code {
        "InsufficientInstanceCapacity" | "InsufficientHostCapacity" | "InsufficientReservedInstanceCapacity" | "InsufficientCapacity" | "InsufficientCapacityOnHost" | "Unsupported" | "SpotMaxPriceTooLow" => {
            ErrorKind::Capacity
        }
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "ServiceUnavailable" | "Unavailable" | "InternalError" | "InternalFailure" | "RequestExpired" => ErrorKind::Transient,
        "AuthFailure" | "UnauthorizedOperation" | "InvalidClientTokenId" | "SignatureDoesNotMatch" | "OptInRequired" | "Blocked" | "PendingVerification" | "IncompleteSignature" | "MissingAuthenticationToken" => {
            ErrorKind::Auth
        }
        "IdempotentParameterMismatch" | "DependencyViolation" | "InvalidGroup.Duplicate" | "IncorrectInstanceState" | "IncorrectState" | "InvalidGroup.InUse" => ErrorKind::Conflict,
        c if c.ends_with("LimitExceeded") || c == "MaxSpotInstanceCountExceeded" => ErrorKind::Quota,
        // A parameter that names nothing (an unknown type, image, subnet, key pair) is a bad request.
        c if c.starts_with("InvalidAMIID.") || c.starts_with("InvalidInstanceType") || c.starts_with("InvalidSubnetID.") || c.starts_with("InvalidKeyPair.") || c.starts_with("InvalidVpcID.") => ErrorKind::Invalid,
        c if c.ends_with(".NotFound") => ErrorKind::NotFound,
        _ if status == 429 || status >= 500 => ErrorKind::Transient,
        _ => ErrorKind::Invalid,
    }
}

impl Error {
    /// The kind the engine's policy sees.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Api { code, status, .. } => code_kind(code, *status),
            Self::Transport { .. } | Self::Parse { .. } => ErrorKind::Transient,
            Self::NoCredentials(_) => ErrorKind::Auth,
            Self::Signing(_) => ErrorKind::Invalid,
            Self::Cancelled(_) => ErrorKind::Cancelled,
        }
    }

    /// EC2's error code, if EC2 answered one.
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<Error> for ConnectorError {
    fn from(e: Error) -> Self {
        let kind = e.kind();
        let mut message = e.to_string();
        if let Error::Api { code, .. } = &e {
            let hint = match kind {
                ErrorKind::Capacity if code != "Unsupported" => "; try another availability zone, another instance type (aws.availability lists alternatives), or spot",
                ErrorKind::Capacity => "; the instance type is not offered there: aws.availability lists the zones that offer it",
                ErrorKind::Quota => "; ask for a higher limit in Service Quotas (the GPU families have their own vCPU quotas)",
                ErrorKind::Auth => "; check the credentials and their IAM permissions",
                _ => "",
            };
            message.push_str(hint);
        }
        let retry_after = match &e {
            Error::Api { retry_after: Some(s), .. } => Some(Duration::from_secs(*s)),
            _ => None,
        };
        let mut err = ConnectorError::new(kind, message);
        err.retry_after = retry_after;
        err.with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases = [
            ("InsufficientInstanceCapacity", 500, ErrorKind::Capacity),
            ("InsufficientHostCapacity", 500, ErrorKind::Capacity),
            ("Unsupported", 400, ErrorKind::Capacity),
            ("VcpuLimitExceeded", 400, ErrorKind::Quota),
            ("InstanceLimitExceeded", 400, ErrorKind::Quota),
            ("MaxSpotInstanceCountExceeded", 400, ErrorKind::Quota),
            ("SecurityGroupLimitExceeded", 400, ErrorKind::Quota),
            ("RequestLimitExceeded", 503, ErrorKind::Transient),
            ("Throttling", 400, ErrorKind::Transient),
            ("SomethingNew", 503, ErrorKind::Transient),
            ("HTTP429", 429, ErrorKind::Transient),
            ("AuthFailure", 401, ErrorKind::Auth),
            ("UnauthorizedOperation", 403, ErrorKind::Auth),
            ("InvalidClientTokenId", 403, ErrorKind::Auth),
            ("SignatureDoesNotMatch", 403, ErrorKind::Auth),
            ("InvalidParameterValue", 400, ErrorKind::Invalid),
            ("InvalidAMIID.Malformed", 400, ErrorKind::Invalid),
            ("InvalidAMIID.NotFound", 400, ErrorKind::Invalid),
            ("InvalidInstanceID.NotFound", 400, ErrorKind::NotFound),
            ("InvalidInstanceType.NotFound", 400, ErrorKind::Invalid),
            ("InvalidKeyPair.NotFound", 400, ErrorKind::Invalid),
            ("InvalidGroup.NotFound", 400, ErrorKind::NotFound),
            ("IdempotentParameterMismatch", 400, ErrorKind::Conflict),
            ("DependencyViolation", 400, ErrorKind::Conflict),
        ];
        for (code, status, kind) in cases {
            assert_eq!(code_kind(code, status), kind, "{code}");
        }
    }

    #[test]
    fn connector_error_keeps_code_and_retry_after() {
        let e: ConnectorError = Error::Api { action: "RunInstances".into(), status: 503, code: "RequestLimitExceeded".into(), message: "Request limit exceeded.".into(), retry_after: Some(3) }.into();
        assert_eq!(e.kind, ErrorKind::Transient);
        assert!(e.message.contains("RunInstances") && e.message.contains("RequestLimitExceeded") && e.message.contains("Request limit exceeded."), "{}", e.message);
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        let e: ConnectorError = Error::Api { action: "RunInstances".into(), status: 500, code: "InsufficientInstanceCapacity".into(), message: "We currently do not have sufficient capacity".into(), retry_after: None }.into();
        assert_eq!(e.kind, ErrorKind::Capacity);
        assert!(e.message.contains("another availability zone"));
    }
}
