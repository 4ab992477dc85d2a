//! The checked workflow the runtime executes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use engine_connector::DynAction;
use engine_core::{ErrorKind, FileId, Span};
use indexmap::IndexMap;
use serde_json::Value;

use crate::model::{InputSpec, OnFailure, SecretSource};

/// A workflow that passed every check.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// Its file.
    pub file: FileId,
    /// Path as given.
    pub path: PathBuf,
    /// Directory of the file (`workflow.dir`).
    pub dir: PathBuf,
    /// `name`, else the file stem.
    pub name: String,
    /// `description`.
    pub description: Option<String>,
    /// Declared inputs.
    pub inputs: IndexMap<String, InputSpec>,
    /// Declared secrets.
    pub secrets: IndexMap<String, SecretSource>,
    /// Connector settings (may hold expressions over inputs, secrets and env).
    pub connectors: IndexMap<String, Value>,
    /// Most steps at once.
    pub concurrency: Option<usize>,
    /// What a failure does to created resources.
    pub on_failure: OnFailure,
    /// Steps in file order.
    pub steps: Vec<StepPlan>,
    /// Step id -> position in `steps`.
    pub index: HashMap<String, usize>,
    /// Workflow outputs (expressions).
    pub outputs: IndexMap<String, Value>,
    /// A topological order of `steps`.
    pub order: Vec<usize>,
}

/// What a step runs.
#[derive(Clone)]
pub enum Uses {
    /// A connector action.
    Action(Arc<dyn DynAction>),
    /// A sub-workflow.
    Workflow(Arc<Workflow>),
}

impl std::fmt::Debug for Uses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Action(a) => write!(f, "Action({})", a.id()),
            Self::Workflow(w) => write!(f, "Workflow({})", w.path.display()),
        }
    }
}

impl Workflow {
    /// This workflow as a sub-workflow of one whose `connectors:` block is `parent`: every
    /// connector it does not configure itself takes the parent's settings (as a Terraform
    /// module takes its caller's providers), and so on down its own sub-workflows. The
    /// settings are rendered in the sub-workflow's scope: `secrets` and `env` mean the same
    /// there, the parent's `inputs` do not.
    #[must_use]
    pub fn inheriting(self: &Arc<Self>, parent: &IndexMap<String, Value>) -> Arc<Self> {
        let adds = parent.keys().any(|k| !self.connectors.contains_key(k));
        let nested = self.steps.iter().any(|s| matches!(s.uses, Uses::Workflow(_)));
        if !adds && !nested {
            return self.clone();
        }
        let mut w = (**self).clone();
        for (k, v) in parent {
            w.connectors.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let merged = w.connectors.clone();
        for s in &mut w.steps {
            if let Uses::Workflow(sub) = &s.uses {
                s.uses = Uses::Workflow(sub.inheriting(&merged));
            }
        }
        Arc::new(w)
    }
}

/// One checked step.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// Id.
    pub id: String,
    /// The span of its key.
    pub span: Span,
    /// The `uses` text.
    pub uses_text: String,
    /// What it runs.
    pub uses: Uses,
    /// Input template (expressions not rendered).
    pub with: Value,
    /// Positions (in `Workflow::steps`) of the steps it depends on.
    pub deps: Vec<usize>,
    /// `if`.
    pub condition: Option<Value>,
    /// Whether `if` calls `always()`, `failure()`, `success()` or `cancelled()`.
    pub status_fn: bool,
    /// `for_each`.
    pub for_each: Option<Value>,
    /// Effective retry policy.
    pub retry: RetryPolicy,
    /// Per-attempt limit.
    pub timeout: Option<Duration>,
    /// A failure does not fail the run.
    pub continue_on_error: bool,
    /// Undo.
    pub cleanup: CleanupPlan,
    /// Alternatives on `capacity`/`quota`.
    pub fallback: Vec<FallbackPlan>,
    /// Description.
    pub description: Option<String>,
}

/// Which errors are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOn {
    /// `transient` only.
    Transient,
    /// All but `cancelled`.
    Any,
    /// These kinds.
    Kinds(Vec<ErrorKind>),
}

impl RetryOn {
    /// Whether an error of this kind is retried.
    #[must_use]
    pub fn matches(&self, kind: ErrorKind) -> bool {
        match self {
            Self::Transient => kind == ErrorKind::Transient,
            Self::Any => kind != ErrorKind::Cancelled,
            Self::Kinds(k) => k.contains(&kind),
        }
    }
}

/// An effective retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total tries.
    pub attempts: u32,
    /// First wait.
    pub delay: Duration,
    /// Factor.
    pub backoff: f64,
    /// Longest wait.
    pub max_delay: Duration,
    /// Randomise waits.
    pub jitter: bool,
    /// Which kinds.
    pub on: RetryOn,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 1, delay: Duration::from_secs(1), backoff: 2.0, max_delay: Duration::from_secs(300), jitter: false, on: RetryOn::Transient }
    }
}

impl RetryPolicy {
    /// The wait before attempt `next` (2 for the first retry), without jitter.
    #[must_use]
    pub fn delay_before(&self, next: u32) -> Duration {
        let exp = i32::try_from(next.saturating_sub(2)).unwrap_or(i32::MAX);
        let secs = self.delay.as_secs_f64() * self.backoff.powi(exp);
        Duration::from_secs_f64(secs.min(self.max_delay.as_secs_f64()))
    }
}

/// How a step's resources are undone.
#[derive(Debug, Clone)]
pub enum CleanupPlan {
    /// The connector's undo.
    Auto,
    /// Nothing.
    Never,
    /// This action with this input.
    Step {
        /// The action.
        action: Arc<dyn DynAction>,
        /// Its input template.
        with: Value,
    },
}


/// One fallback alternative.
#[derive(Debug, Clone)]
pub struct FallbackPlan {
    /// Another action, or `None` for the step's own.
    pub action: Option<Arc<dyn DynAction>>,
    /// Its input template (already merged over the step's `with` when `action` is `None`).
    pub with: Value,
}

impl Workflow {
    /// A step by id.
    #[must_use]
    pub fn step(&self, id: &str) -> Option<&StepPlan> {
        self.index.get(id).map(|&i| &self.steps[i])
    }
}
