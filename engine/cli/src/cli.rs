//! The command line: the fixed verbs of WORKFLOW-FORMAT.md.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Provision and run GPU infrastructure from declarative YAML workflows.
#[derive(Debug, Parser)]
#[command(name = "engine", version, about, propagate_version = true)]
pub struct Cli {
    /// The run state file (default: `$ENGINE_STATE`, else `$XDG_STATE_HOME/engine/state.db`,
    /// else `~/.local/state/engine/state.db`).
    #[arg(long, global = true, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How `run` reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputMode {
    /// Live progress bars (default on a terminal).
    Tty,
    /// One line per event on stderr.
    Plain,
    /// One JSON object per event on stdout.
    Json,
}

/// How diagnostics are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiagFormat {
    /// Source excerpts with carets.
    Text,
    /// One JSON array of diagnostics.
    Json,
}

/// How `show` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// For people.
    Plain,
    /// One JSON object.
    Json,
}

/// Graph formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow, print progress and the run id.
    Run {
        /// The workflow file.
        file: PathBuf,
        /// An input value, `name=value` (repeatable).
        #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// A YAML or JSON file of input values.
        #[arg(long = "inputs", value_name = "FILE")]
        inputs_file: Option<PathBuf>,
        /// Most steps at once (overrides the workflow's `concurrency`).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Progress format (default: tty on a terminal, else plain).
        #[arg(long, value_enum)]
        output: Option<OutputMode>,
    },
    /// Check workflow files without touching the network.
    Validate {
        /// Workflow files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Diagnostics format.
        #[arg(long, value_enum, default_value = "text")]
        format: DiagFormat,
    },
    /// Show what a run would do: steps in order, rendered inputs, resources.
    Plan {
        /// The workflow file.
        file: PathBuf,
        /// An input value, `name=value` (repeatable).
        #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// A YAML or JSON file of input values.
        #[arg(long = "inputs", value_name = "FILE")]
        inputs_file: Option<PathBuf>,
    },
    /// Print the DAG for Graphviz or Mermaid.
    Graph {
        /// The workflow file.
        file: PathBuf,
        /// Format.
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// List connectors and their actions; with NAME, their input and output schemas.
    Connectors {
        /// A connector (`shell`) or an action (`shell.run`).
        name: Option<String>,
    },
    /// List past runs, newest first.
    Runs {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One run: steps, outputs, resources.
    Show {
        /// Run id (a unique prefix is enough).
        run: String,
        /// `json` prints one JSON object.
        #[arg(long, value_enum, default_value = "plain")]
        output: ShowFormat,
    },
    /// The lines a run's steps printed.
    Logs {
        /// Run id (a unique prefix is enough).
        run: String,
        /// Only this step (and, for a sub-workflow step, its children).
        step: Option<String>,
        /// Keep printing while the run goes on.
        #[arg(short, long)]
        follow: bool,
    },
    /// Continue a run: what finished is reused, the rest runs.
    Resume {
        /// Run id (a unique prefix is enough).
        run: String,
        /// Most steps at once.
        #[arg(long)]
        concurrency: Option<usize>,
        /// Progress format.
        #[arg(long, value_enum)]
        output: Option<OutputMode>,
    },
    /// Undo everything a run created, in reverse dependency order.
    Destroy {
        /// Run id (a unique prefix is enough).
        run: String,
        /// Progress format.
        #[arg(long, value_enum)]
        output: Option<OutputMode>,
    },
    /// Print the JSON Schema of the workflow format.
    Schema,
    /// Explain a diagnostic code (`engine explain WF0101`).
    Explain {
        /// The code.
        code: String,
    },
}
