//! Located diagnostics with stable codes.
//!
//! Every code has a page under `diagnostics/codes/`, printed by `engine explain CODE`.

use crate::source::Span;

/// A stable diagnostic code, e.g. `WF0101`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub &'static str);

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Stops validation from passing.
    Error,
    /// Reported, but does not stop anything.
    Warning,
}

/// A span and the text shown under its caret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What to print beside the caret (may be empty).
    pub text: String,
}

/// One problem found in a workflow or its inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Stable code.
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// One-line message, lowercase, no trailing period.
    pub message: String,
    /// The main location, if the problem has one.
    pub primary: Option<Label>,
    /// Related locations.
    pub secondary: Vec<Label>,
    /// `help:` lines.
    pub help: Vec<String>,
}

impl Diagnostic {
    /// An error at a span.
    #[must_use]
    pub fn error(code: Code, message: impl Into<String>, span: Span) -> Self {
        Self {
            code,
            severity: Severity::Error,
            message: message.into(),
            primary: Some(Label { span, text: String::new() }),
            secondary: Vec::new(),
            help: Vec::new(),
        }
    }

    /// An error with no location in a file (a command-line input, say).
    #[must_use]
    pub fn unlocated(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            severity: Severity::Error,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            help: Vec::new(),
        }
    }

    /// Set the text under the primary caret.
    #[must_use]
    pub fn label(mut self, text: impl Into<String>) -> Self {
        if let Some(p) = &mut self.primary {
            p.text = text.into();
        }
        self
    }

    /// Add a related location.
    #[must_use]
    pub fn secondary(mut self, span: Span, text: impl Into<String>) -> Self {
        self.secondary.push(Label { span, text: text.into() });
        self
    }

    /// Add a `help:` line.
    #[must_use]
    pub fn help(mut self, text: impl Into<String>) -> Self {
        self.help.push(text.into());
        self
    }

    /// Turn into a warning.
    #[must_use]
    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    /// Whether this is an error.
    #[must_use]
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

macro_rules! codes {
    ($($name:ident = $code:literal, $title:literal;)*) => {
        /// The diagnostic codes.
        pub mod code {
            use super::Code;
            $(#[doc = $title] pub const $name: Code = Code($code);)*
        }
        /// Every code with its title and its long explanation (markdown).
        pub const CODES: &[(Code, &str, &str)] = &[
            $((code::$name, $title, include_str!(concat!("diagnostics/codes/", $code, ".md"))),)*
        ];
    };
}

codes! {
    IO = "WF0001", "the file cannot be read";
    YAML_SYNTAX = "WF0002", "YAML syntax error";
    DUPLICATE_KEY = "WF0003", "duplicate key";
    YAML_UNSUPPORTED = "WF0004", "unsupported YAML feature";
    NOT_A_MAPPING = "WF0005", "the document is not a mapping";
    UNKNOWN_KEY = "WF0100", "unknown key";
    UNKNOWN_NEEDS = "WF0101", "unknown step in needs";
    WRONG_TYPE = "WF0102", "wrong type";
    MISSING_KEY = "WF0103", "missing required key";
    BAD_STEP_ID = "WF0104", "invalid step id";
    BAD_DURATION = "WF0105", "invalid duration";
    NOT_ALLOWED = "WF0106", "value not allowed";
    OUT_OF_RANGE = "WF0107", "value out of range";
    BAD_VERSION = "WF0108", "unsupported format version";
    INVALID_VALUE = "WF0109", "invalid value";
    NO_STEPS = "WF0110", "workflow has no steps";
    SELF_NEEDS = "WF0111", "step depends on itself";
    UNKNOWN_ACTION = "WF0120", "unknown connector or action";
    BAD_ACTION_INPUT = "WF0121", "invalid action input";
    SUBWORKFLOW = "WF0122", "sub-workflow cannot be loaded";
    BAD_CLEANUP = "WF0123", "invalid cleanup or fallback";
    BAD_INPUT_SPEC = "WF0124", "invalid input declaration";
    CYCLE = "WF0130", "dependency cycle";
    EXPR_SYNTAX = "WF0140", "expression syntax error";
    EXPR_UNKNOWN_STEP = "WF0141", "reference to an unknown step";
    EXPR_UNKNOWN_OUTPUT = "WF0142", "reference to an undeclared output";
    EXPR_UNKNOWN_NAME = "WF0143", "unknown name in expression";
    EXPR_UNKNOWN_INPUT = "WF0144", "reference to an undeclared input";
    EXPR_UNKNOWN_SECRET = "WF0145", "reference to an undeclared secret";
    EXPR_ITEM_OUTSIDE_LOOP = "WF0146", "item or index outside for_each";
    EXPR_UNKNOWN_FILTER = "WF0147", "unknown filter or function";
    INPUT_UNKNOWN = "WF0150", "unknown input";
    INPUT_TYPE = "WF0151", "input has the wrong type";
    INPUT_MISSING = "WF0152", "required input missing";
    INPUT_CONSTRAINT = "WF0153", "input violates its constraints";
    SECRET_UNAVAILABLE = "WF0160", "secret cannot be resolved";
}

/// Title and explanation of a code, by its text (`WF0101`).
#[must_use]
pub fn explain(code: &str) -> Option<(Code, &'static str, &'static str)> {
    CODES.iter().copied().find(|(c, _, _)| c.0.eq_ignore_ascii_case(code))
}
