//! The raw workflow model, as written in YAML. The JSON Schema of the format
//! (`engine schema`, `schemas/workflow.schema.json`) is generated from these types,
//! and every file is checked against it before it is deserialized into them.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The regular expression of a duration: `500ms`, `90s`, `15m`, `1h`, `1h30m`, `0.5s`.
pub const DURATION_PATTERN: &str = engine_core::duration::DURATION_PATTERN;
/// The regular expression of a step id.
pub const STEP_ID_PATTERN: &str = r"^[a-z][a-z0-9_-]*$";

/// A workflow file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "engine workflow", extend("$id" = "https://engine.dev/schemas/workflow.schema.json"))]
pub struct WorkflowFile {
    /// Format version: `1`.
    #[schemars(extend("const" = 1))]
    pub version: u32,
    /// Shown in `plan`, `runs` and progress.
    #[serde(default)]
    pub name: Option<String>,
    /// Shown in `plan`.
    #[serde(default)]
    pub description: Option<String>,
    /// Typed inputs: `engine run f.yaml -i name=value` or `--inputs values.yaml`.
    #[serde(default)]
    pub inputs: IndexMap<String, InputSpec>,
    /// Secrets resolved at start; their values are never printed or stored.
    #[serde(default)]
    pub secrets: IndexMap<String, SecretSource>,
    /// Per-connector settings: credentials, endpoints, region or zone defaults.
    #[serde(default)]
    pub connectors: IndexMap<String, serde_json::Map<String, Value>>,
    /// Settings every step inherits unless it overrides them.
    #[serde(default)]
    pub defaults: Option<Defaults>,
    /// Most steps (fan-out elements included) running at once. Default: no limit.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub concurrency: Option<u32>,
    /// What to do with what the run created when it fails.
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
    /// Step id -> step. Ids match `[a-z][a-z0-9_-]*`.
    #[schemars(extend("propertyNames" = {"pattern": STEP_ID_PATTERN}))]
    pub steps: IndexMap<String, Step>,
    /// Values the run returns: printed at the end and kept in the run state.
    #[serde(default)]
    pub outputs: IndexMap<String, Value>,
}

/// The declaration of one input.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The value's type.
    #[serde(rename = "type", default)]
    pub ty: Option<InputType>,
    /// Used when the input is not given.
    #[serde(default)]
    pub default: Option<Value>,
    /// The only values accepted.
    #[serde(default, rename = "enum")]
    pub allowed: Option<Vec<Value>>,
    /// Smallest number accepted.
    #[serde(default)]
    pub minimum: Option<f64>,
    /// Largest number accepted.
    #[serde(default)]
    pub maximum: Option<f64>,
    /// A regular expression a string must match.
    #[serde(default)]
    pub pattern: Option<String>,
    /// What the input is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether it must be given (an input without a default is required anyway).
    #[serde(default)]
    pub required: Option<bool>,
}

/// Types an input can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A list.
    Array,
    /// A mapping.
    Object,
}

impl InputType {
    /// The name used in the format.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Array => "array",
            Self::Object => "object",
        }
    }
}

/// Where a secret's value comes from: exactly one of `env` or `file`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// An environment variable.
    #[serde(default)]
    pub env: Option<String>,
    /// A file (`~` is the home directory); one trailing newline is dropped.
    #[serde(default)]
    pub file: Option<String>,
}

/// Settings applied to every step.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Per-attempt time limit.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Retry policy.
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// A failure does not fail the run.
    #[serde(default)]
    pub continue_on_error: Option<bool>,
}

/// `keep` or `cleanup`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Leave what the run created (default): inspect it, then `engine destroy RUN`.
    #[default]
    Keep,
    /// Undo what the run created when it fails.
    Cleanup,
}

/// A duration: a number and a unit (`ms`, `s`, `m`, `h`, `d`), or a sum (`1h30m`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[schemars(extend("pattern" = DURATION_PATTERN))]
pub struct Duration(pub String);

impl Duration {
    /// Parse the text.
    ///
    /// # Errors
    /// When it is not a duration.
    pub fn parse(s: &str) -> Result<std::time::Duration, String> {
        engine_core::duration::parse_duration(s)
    }
}

/// One step.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// `connector.action` (`shell.run`, `aws.instance.create`), or a path to another
    /// workflow file (`./provision-node.yaml`) run as a sub-workflow.
    pub uses: String,
    /// The action's input (or the sub-workflow's inputs).
    #[serde(default)]
    pub with: Option<With>,
    /// Steps that must finish first.
    #[serde(default)]
    pub needs: Option<Needs>,
    /// Run only when this holds; otherwise the step is `skipped`.
    #[serde(default, rename = "if")]
    pub condition: Option<Condition>,
    /// Run once per element of a list (or 0..n for a number), with `item` and `index`.
    #[serde(default)]
    pub for_each: Option<ForEach>,
    /// Retry policy.
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// Per-attempt time limit.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// A failure does not fail the run; dependents still run.
    #[serde(default)]
    pub continue_on_error: Option<bool>,
    /// How to undo what the step created.
    #[serde(default)]
    pub cleanup: Option<Cleanup>,
    /// Alternatives tried in order when the step fails with `capacity` or `quota`.
    #[serde(default)]
    pub fallback: Option<Vec<Fallback>>,
    /// Shown in `plan` and progress.
    #[serde(default)]
    pub description: Option<String>,
}

/// An action's input: a mapping, or one expression giving a mapping.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum With {
    /// Keys of the action's input.
    Map(serde_json::Map<String, Value>),
    /// `${{ ... }}` giving a mapping.
    Expr(String),
}

/// One step id or a list of them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Needs {
    /// One step id.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Needs {
    /// The ids as a list.
    #[must_use]
    pub fn ids(&self) -> Vec<&str> {
        match self {
            Self::One(s) => vec![s.as_str()],
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A condition: a boolean or an expression (`${{ }}` optional).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Condition {
    /// Constant.
    Bool(bool),
    /// Expression.
    Expr(String),
}

/// What a step fans out over.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ForEach {
    /// 0..n.
    Count(#[schemars(range(min = 0))] u64),
    /// These elements.
    List(Vec<Value>),
    /// An expression giving a list or a number.
    Expr(String),
}

/// Retry policy; fields not given come from `defaults.retry`, then the built-in
/// defaults (1 attempt, 1s delay, backoff 2, max delay 5m, no jitter, on `transient`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Total tries, the first included.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub attempts: Option<u32>,
    /// Wait before the second try.
    #[serde(default)]
    pub delay: Option<Duration>,
    /// Factor applied to the wait after each try.
    #[serde(default)]
    #[schemars(range(min = 1.0))]
    pub backoff: Option<f64>,
    /// Longest wait between tries.
    #[serde(default)]
    pub max_delay: Option<Duration>,
    /// Randomise each wait between half and all of it.
    #[serde(default)]
    pub jitter: Option<bool>,
    /// Which errors are retried: `transient` (default), `any`, or a list of kinds.
    #[serde(default)]
    pub on: Option<RetryOn>,
}

/// Which error kinds a retry applies to.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RetryOn {
    /// `transient` or `any`.
    Preset(RetryPreset),
    /// These kinds.
    Kinds(Vec<engine_core::ErrorKind>),
}

/// `transient` or `any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryPreset {
    /// Transient errors only.
    Transient,
    /// Every error but `cancelled`.
    Any,
}

/// How a step's resources are undone.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Cleanup {
    /// `auto` (the connector's undo) or `never`.
    Mode(CleanupMode),
    /// Run this action as the undo.
    Step(CleanupStep),
}

/// `auto` or `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CleanupMode {
    /// The connector's own undo.
    Auto,
    /// Leave it.
    Never,
}

/// An action run as the undo.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CleanupStep {
    /// `connector.action`.
    pub uses: String,
    /// Its input; `steps.<this step>.outputs` is in scope.
    #[serde(default)]
    pub with: Option<serde_json::Map<String, Value>>,
}

/// One alternative of a `fallback` list.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// Another action (default: the step's own).
    #[serde(default)]
    pub uses: Option<String>,
    /// Merged over the step's `with` (or, with `uses`, the whole input).
    #[serde(default)]
    pub with: Option<serde_json::Map<String, Value>>,
}

/// The JSON Schema of the workflow format.
#[must_use]
pub fn workflow_schema() -> Value {
    engine_core::schema::json_schema::<WorkflowFile>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("90s").unwrap().as_secs(), 90);
        assert_eq!(Duration::parse("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(Duration::parse("500ms").unwrap().as_millis(), 500);
        assert_eq!(Duration::parse("0.1s").unwrap().as_millis(), 100);
        for bad in ["", "90", "s", "1x", "1.s", "-1s"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for good in ["90s", "1h30m", "0.5s", "1d"] {
            assert!(re.is_match(good));
        }
    }

    #[test]
    fn schema_has_step_id_pattern_and_no_nulls() {
        let s = workflow_schema();
        assert_eq!(s["properties"]["steps"]["propertyNames"]["pattern"], STEP_ID_PATTERN);
        assert!(!s.to_string().contains("\"null\""));
    }
}
