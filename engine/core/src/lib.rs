//! IO-free vocabulary shared by every engine crate: source spans and diagnostics,
//! connector error kinds, resource records and the `Secret` newtype.
//!
//! Nothing here performs IO or depends on an async runtime.

pub mod diagnostics;
pub mod duration;
pub mod env;
pub mod error_kind;
pub mod resource;
pub mod schema;
pub mod secret;
pub mod source;

pub use diagnostics::{Code, Diagnostic, Label, Severity};
pub use error_kind::ErrorKind;
pub use resource::{ResourceRecord, ResourceState, StepRef};
pub use secret::{Masker, Secret};
pub use source::{FileId, LineCol, SourceFile, SourceMap, Span};
