//! `${{ }}` expressions: scanning strings for them, static reference extraction
//! (for implicit dependencies and output checks), and evaluation on minijinja.
//!
//! A value that is exactly one expression keeps the expression's type; a string
//! with text around expressions is interpolated to a string.

mod eval;
mod scan;

pub use minijinja::value::Value as JValue;
pub use eval::{condition_source as condition_source_of, find_reference, shell_quote, EvalError, Evaluator, StatusFlags};
pub use scan::{is_template, scan, ExprPart, Part, ScanError};
