//! The `shell` connector: run a local command or script.
//!
//! `shell.run` runs `command` (or the local file `script`) with `sh`, streams each
//! output line to the step log (secrets masked), and returns `exit_code`, `stdout`
//! and `stderr`. A command that exits non-zero fails the step with kind
//! `transient`, so `retry: {attempts: 3}` retries it; exit 126 and 127 (not
//! executable, not found) are `invalid` and are not retried. On timeout or
//! cancellation the whole process group is killed.

mod run;

use std::sync::Arc;

use engine_connector::{Connector, DynAction};

pub use run::{ShellRun, ShellRunInput, ShellRunOutput};

/// The `shell` connector.
#[derive(Debug, Default, Clone)]
pub struct ShellConnector;

impl Connector for ShellConnector {
    fn name(&self) -> &'static str {
        "shell"
    }
    fn description(&self) -> &'static str {
        "local commands and scripts"
    }
    fn actions(&self) -> Vec<Arc<dyn DynAction>> {
        vec![Arc::new(ShellRun)]
    }
}
