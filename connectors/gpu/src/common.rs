//! Small pieces the actions share.

use engine_connector::{ConnectorError, LogStream, StepContext};

use crate::exec::HostInput;
use crate::ledger::{now, Allocation, Ledger};

/// The ledger's name for the machine: `local`, or the host's `host:port` with the port
/// the connection uses (the step's, else the `ssh:` settings', else 22).
#[must_use]
pub fn host_label(cx: &StepContext, host: Option<&HostInput>) -> String {
    host.map_or_else(|| "local".to_string(), |h| h.label_with(cx.settings.get("ssh").unwrap_or(&serde_json::Value::Null)))
}

/// The live allocations on `host`, or none (with a line in the step log) when the
/// ledger cannot be read: read-only actions still answer.
#[must_use]
pub fn allocations_or_warn(cx: &StepContext, host: &str) -> Vec<Allocation> {
    let read = Ledger::for_context(cx).and_then(|l| l.read());
    match read {
        Ok(state) => {
            let t = now();
            state.live_on(host, t).cloned().collect()
        }
        Err(e) => {
            cx.log(LogStream::Stderr, &format!("cannot read the gpu allocation ledger, allocations are not shown: {}", e.message));
            Vec::new()
        }
    }
}

/// `min_memory_gb` (GiB, decimals allowed) or `min_memory_mb` (MiB) as MiB.
///
/// # Errors
/// `invalid` when both are given, or a size is negative or not finite.
pub fn min_memory_mib(gb: Option<f64>, mb: Option<u64>) -> Result<Option<u64>, ConnectorError> {
    match (gb, mb) {
        (Some(_), Some(_)) => Err(ConnectorError::invalid("give `min_memory_gb` or `min_memory_mb`, not both")),
        (Some(g), None) if !g.is_finite() || g < 0.0 => Err(ConnectorError::invalid(format!("`min_memory_gb` must be a positive number, not {g}"))),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        (Some(g), None) => Ok(Some((g * 1024.0).ceil() as u64)),
        (None, m) => Ok(m),
    }
}

/// Percentage of `part` in `whole`, one decimal.
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn percent(part: Option<u64>, whole: Option<u64>) -> Option<f64> {
    match (part, whole) {
        (Some(p), Some(w)) if w > 0 => Some((p as f64 * 1000.0 / w as f64).round() / 10.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(min_memory_mib(Some(8.0), None).unwrap(), Some(8192));
        assert_eq!(min_memory_mib(Some(0.5), None).unwrap(), Some(512));
        assert_eq!(min_memory_mib(None, Some(300)).unwrap(), Some(300));
        assert_eq!(min_memory_mib(None, None).unwrap(), None);
        assert!(min_memory_mib(Some(1.0), Some(1)).is_err());
        assert!(min_memory_mib(Some(-1.0), None).is_err());
        assert_eq!(percent(Some(1), Some(3)), Some(33.3));
        assert_eq!(percent(Some(1), Some(0)), None);
    }
}
