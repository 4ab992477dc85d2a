//! `nvidia-smi` as the actions use it: the connector settings, the commands, the
//! classification of its failures, and its CSV output.
//!
//! ## Settings (`connectors: gpu:`)
//! | key | default | what |
//! |---|---|---|
//! | `nvidia_smi` | `nvidia-smi` (on `PATH`) | the nvidia-smi program (on the remote host, with `host:`) |
//! | `docker` | `docker` | the docker CLI, for `health`'s `container_image` check |
//! | `nvcc` | `nvcc` | the CUDA compiler, for `cuda_info`'s toolkit version |
//! | `ledger_dir` | `$XDG_STATE_HOME/engine/gpu`, else `$HOME/.local/state/engine/gpu` | where the allocation ledger lives (relative to the workflow's directory) |
//! | `command_timeout` | `60s` | how long one nvidia-smi command may take |
//! | `container_timeout` | `10m` | how long `health`'s container check may take (an image may be pulled) |
//!
//! | `ssh` | none | defaults for `host:` connections, the keys of `connectors: ssh:` (`user`, `private_key_file`, `known_hosts`, `host_key_check`...) |
//!
//! Other keys are left alone.
//!
//! ## Failures
//! nvidia-smi's exit statuses (from its manual page) are turned into error kinds, with a
//! message that says what is missing and how to fix it: no program (shell status 127),
//! no NVML library (12) and no driver (9) are `invalid`, never a parse error; no
//! permission (4) is `auth`; "query unsuccessful" (6) and unknown failures are `transient`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use engine_connector::{ConnectorError, StepContext};
use engine_core::duration::parse_duration;
use serde_json::Value;

use crate::exec::{executor, Exec, HostInput, Output, NOT_FOUND_STATUS};
use crate::smi::{parse_query_xml, SmiReport};

/// The connector's settings, from the workflow's `connectors: gpu:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The nvidia-smi program.
    pub nvidia_smi: String,
    /// The docker CLI.
    pub docker: String,
    /// The CUDA compiler.
    pub nvcc: String,
    /// `ledger_dir` as written (resolved by the ledger).
    pub ledger_dir: Option<String>,
    /// Limit for one nvidia-smi command.
    pub command_timeout: Duration,
    /// Limit for the container check.
    pub container_timeout: Duration,
}

impl Settings {
    /// Read the settings from `cx.settings`.
    ///
    /// # Errors
    /// `invalid` when a known key has the wrong type or a bad duration.
    pub fn from_context(cx: &StepContext) -> Result<Self, ConnectorError> {
        Self::from_value(&cx.settings)
    }

    /// Read the settings from a `connectors: gpu:` block.
    ///
    /// # Errors
    /// `invalid` when a known key has the wrong type or a bad duration.
    pub fn from_value(v: &Value) -> Result<Self, ConnectorError> {
        let text = |key: &str| -> Result<Option<String>, ConnectorError> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                Some(other) => Err(ConnectorError::invalid(format!("`connectors: gpu: {key}` must be a non-empty string, not {other}"))),
            }
        };
        let duration = |key: &str, default: Duration| -> Result<Duration, ConnectorError> {
            match text(key)? {
                None => Ok(default),
                Some(s) => parse_duration(&s).map_err(|e| ConnectorError::invalid(format!("`connectors: gpu: {key}`: {e}"))),
            }
        };
        Ok(Self {
            nvidia_smi: text("nvidia_smi")?.unwrap_or_else(|| "nvidia-smi".into()),
            docker: text("docker")?.unwrap_or_else(|| "docker".into()),
            nvcc: text("nvcc")?.unwrap_or_else(|| "nvcc".into()),
            ledger_dir: text("ledger_dir")?,
            command_timeout: duration("command_timeout", Duration::from_secs(60))?,
            container_timeout: duration("container_timeout", Duration::from_secs(600))?,
        })
    }
}

/// nvidia-smi on one machine.
pub struct Smi {
    exec: Box<dyn Exec>,
    /// The settings it was made with.
    pub settings: Settings,
}

impl std::fmt::Debug for Smi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smi").field("target", &self.exec.target()).field("nvidia_smi", &self.settings.nvidia_smi).finish()
    }
}

impl Smi {
    /// nvidia-smi on `host`, or on this machine.
    ///
    /// # Errors
    /// Bad settings, or a `host` that cannot be reached (see [`executor`]).
    pub async fn new(cx: &StepContext, host: Option<&HostInput>) -> Result<Self, ConnectorError> {
        let settings = Settings::from_context(cx)?;
        Ok(Self { exec: executor(cx, host).await?, settings })
    }

    /// An nvidia-smi over a given executor (tests, and the remote path).
    #[must_use]
    pub fn with_exec(exec: Box<dyn Exec>, settings: Settings) -> Self {
        Self { exec, settings }
    }

    /// Where the commands run (`local`, `user@host:port`).
    #[must_use]
    pub fn target(&self) -> &str {
        self.exec.target()
    }

    /// Run nvidia-smi with `args`; a non-zero exit is a classified error.
    ///
    /// # Errors
    /// See the module's "Failures".
    pub async fn run(&self, args: &[&str]) -> Result<Output, ConnectorError> {
        let out = self.run_unchecked(args).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(smi_failure(&self.settings.nvidia_smi, self.target(), args, &out))
        }
    }

    /// Run nvidia-smi with `args` and return whatever it produced, exit status included.
    ///
    /// # Errors
    /// Only when it cannot be run at all (cancelled, timed out, not startable).
    pub async fn run_unchecked(&self, args: &[&str]) -> Result<Output, ConnectorError> {
        let mut argv = vec![self.settings.nvidia_smi.as_str()];
        argv.extend_from_slice(args);
        self.exec.run(&argv, self.settings.command_timeout).await
    }

    /// Run another program (docker, nvcc) on the same machine, unchecked.
    ///
    /// # Errors
    /// Only when it cannot be run at all.
    pub async fn run_other(&self, argv: &[&str], timeout: Duration) -> Result<Output, ConnectorError> {
        self.exec.run(argv, timeout).await
    }

    /// `nvidia-smi -q -x`, parsed.
    ///
    /// # Errors
    /// The failures of [`Smi::run`]; `transient` when the output does not parse (a
    /// driver that answered with half a document).
    pub async fn report(&self) -> Result<SmiReport, ConnectorError> {
        let out = self.run(&["-q", "-x"]).await?;
        parse_query_xml(&out.stdout).map_err(|e| ConnectorError::transient(format!("reading `nvidia-smi -q -x` on {}: {e}", self.target())).with_source(e))
    }

    /// `nvidia-smi --query-gpu=FIELDS --format=csv,noheader,nounits`.
    ///
    /// # Errors
    /// The failures of [`Smi::run`] (a field this driver does not know is `invalid`).
    pub async fn query_gpu(&self, fields: &[&str]) -> Result<Vec<CsvRow>, ConnectorError> {
        self.query("--query-gpu", fields).await
    }

    /// `nvidia-smi --query-compute-apps=FIELDS --format=csv,noheader,nounits`.
    ///
    /// # Errors
    /// As [`Smi::query_gpu`].
    pub async fn query_compute_apps(&self, fields: &[&str]) -> Result<Vec<CsvRow>, ConnectorError> {
        self.query("--query-compute-apps", fields).await
    }

    async fn query(&self, what: &str, fields: &[&str]) -> Result<Vec<CsvRow>, ConnectorError> {
        let arg = format!("{what}={}", fields.join(","));
        let out = self.run(&[&arg, "--format=csv,noheader,nounits"]).await?;
        parse_csv(&out.stdout, fields)
    }
}

/// Whether a failed query names a field this driver does not know
/// (`Field "clocks_event_reasons.active" is not a valid field to query.`).
#[must_use]
pub fn is_unknown_field(e: &ConnectorError) -> bool {
    e.message.contains("is not a valid field")
}

/// The error for an nvidia-smi command that did not succeed.
#[must_use]
pub fn smi_failure(program: &str, target: &str, args: &[&str], out: &Output) -> ConnectorError {
    let said = out.text(600);
    let text_has = |needle: &str| said.to_ascii_lowercase().contains(&needle.to_ascii_lowercase());
    let on = if target == "local" { "this machine".to_string() } else { target.to_string() };
    let cmd = format!("{program} {}", args.join(" "));
    if out.status == NOT_FOUND_STATUS {
        let where_ = if program.contains('/') { format!("`{program}` does not exist on {on}") } else { format!("`{program}` was not found on the PATH of {on}") };
        return ConnectorError::invalid(format!(
            "{where_}: nvidia-smi comes with the NVIDIA driver; install the driver's utilities \
             (Debian: `apt-get install nvidia-smi` from non-free, Ubuntu: `apt-get install nvidia-utils-<driver version>`, \
             RHEL: `dnf install nvidia-driver-cuda`), or set `connectors: gpu: nvidia_smi:` to its path"
        ));
    }
    if out.status == 12 || text_has("couldn't find libnvidia-ml.so") {
        return ConnectorError::invalid(format!(
            "nvidia-smi on {on} cannot load the NVML library libnvidia-ml.so (exit {}): the NVIDIA driver's user-space \
             libraries are missing or not on the library path; install the driver package that matches the kernel module \
             (Debian: `libnvidia-ml1` or `nvidia-driver`, Ubuntu: `libnvidia-compute-<driver version>`), or inside a \
             container run with the NVIDIA Container Toolkit (`--gpus all`); nvidia-smi said: {said}",
            out.status
        ));
    }
    if out.status == 9 || text_has("couldn't communicate with the nvidia driver") {
        return ConnectorError::invalid(format!(
            "nvidia-smi on {on} cannot talk to the NVIDIA kernel driver (exit {}): the driver is not installed or its \
             module is not loaded; load it with `modprobe nvidia` (see `dmesg` for why it failed: a reboot is needed after \
             a driver install or a kernel update, and Secure Boot refuses an unsigned module), or install the driver \
             (Debian: `nvidia-driver`, Ubuntu: `nvidia-driver-<version>` or `ubuntu-drivers install`); nvidia-smi said: {said}",
            out.status
        ));
    }
    if out.status == 4 || text_has("insufficient permissions") {
        return ConnectorError::auth(format!("`{cmd}` on {on} needs more privileges (exit {}; run the engine as root, or with sudo on the host): {said}", out.status));
    }
    if text_has("is not a valid field") {
        return ConnectorError::invalid(format!("`{cmd}` on {on}: this driver does not know a field asked for: {said}"));
    }
    if text_has("fallen off the bus") || out.status == 15 {
        return ConnectorError::invalid(format!("`{cmd}` on {on}: the GPU has fallen off the bus (exit {}); it needs a reset or a reboot, see `dmesg` for Xid errors: {said}", out.status));
    }
    let why = match out.status {
        2 => "nvidia-smi rejected an argument",
        3 => "the operation is not supported by this GPU",
        8 => "the GPU's external power cables are not connected",
        10 => "the NVIDIA kernel driver detected an interrupt problem with a GPU",
        13 => "the NVML library is older than nvidia-smi and lacks a function",
        14 => "the GPU's infoROM is corrupted",
        6 => "the query did not succeed",
        _ => "nvidia-smi failed",
    };
    let msg = format!("`{cmd}` on {on} failed with exit {}: {why}: {said}", out.status);
    match out.status {
        2 | 3 | 8 | 10 | 13 | 14 => ConnectorError::invalid(msg),
        _ => ConnectorError::transient(msg),
    }
}

/// One line of `--format=csv,noheader,nounits` output, by field name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsvRow(pub BTreeMap<String, Option<String>>);

impl CsvRow {
    /// The value of `field`; `None` when absent or a placeholder (`[N/A]`, `N/A`,
    /// `[Not Supported]`, any `[...]`).
    #[must_use]
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).and_then(Option::as_deref)
    }

    /// The value of `field` as a number.
    #[must_use]
    pub fn num<T: FromStr>(&self, field: &str) -> Option<T> {
        self.get(field).and_then(|v| v.parse().ok())
    }

    /// The value of `field` as a float (`70.00`, `45`).
    #[must_use]
    pub fn float(&self, field: &str) -> Option<f64> {
        self.num::<f64>(field).filter(|f| f.is_finite())
    }
}

/// A CSV value, or `None` for nvidia-smi's placeholders.
fn csv_value(raw: &str) -> Option<String> {
    let v = raw.trim();
    if v.starts_with('[') && v.ends_with(']') {
        return None;
    }
    crate::smi::clean(v).map(str::to_owned)
}

/// Parse `--format=csv,noheader,nounits` output whose columns are `fields`.
///
/// nvidia-smi does not quote values: the last field takes the rest of the line, so a
/// free-text field (a process name) belongs last.
///
/// # Errors
/// `transient` when a line has fewer columns than `fields` (a cut output).
pub fn parse_csv(text: &str, fields: &[&str]) -> Result<Vec<CsvRow>, ConnectorError> {
    let mut rows = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // "No running processes found" and similar notes in place of rows.
        if !line.contains(',') && fields.len() > 1 {
            continue;
        }
        let cells: Vec<&str> = line.splitn(fields.len(), ',').collect();
        if cells.len() != fields.len() {
            return Err(ConnectorError::transient(format!("nvidia-smi csv line has {} of {} columns: `{line}`", cells.len(), fields.len())));
        }
        rows.push(CsvRow(fields.iter().zip(cells).map(|(f, c)| ((*f).to_string(), csv_value(c))).collect()));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use engine_connector::ErrorKind;

    use super::*;

    fn out(status: i32, stdout: &str) -> Output {
        Output { status, stdout: stdout.into(), stderr: String::new() }
    }

    #[test]
    fn csv_rows_are_read_by_name() {
        let fields = ["index", "uuid", "utilization.gpu", "power.draw", "name"];
        let rows = parse_csv("0, GPU-a, 45, 70.25, NVIDIA A10G\n1, GPU-b, [N/A], [Not Supported], Tesla T4, rev 2\n\n", &fields).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].num::<u32>("utilization.gpu"), Some(45));
        assert_eq!(rows[0].float("power.draw"), Some(70.25));
        assert_eq!(rows[1].get("utilization.gpu"), None);
        assert_eq!(rows[1].float("power.draw"), None);
        assert_eq!(rows[1].get("name"), Some("Tesla T4, rev 2"));
        assert!(parse_csv("0, GPU-a", &fields).is_err());
        assert!(parse_csv("No running processes found", &["pid", "process_name"]).unwrap().is_empty());
    }

    #[test]
    fn failures_are_classified() {
        let e = smi_failure("nvidia-smi", "local", &["-q", "-x"], &out(127, ""));
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(e.message.contains("was not found on the PATH") && e.message.contains("nvidia_smi"), "{}", e.message);
        let e = smi_failure("/opt/x/nvidia-smi", "local", &[], &out(127, ""));
        assert!(e.message.contains("`/opt/x/nvidia-smi` does not exist"), "{}", e.message);
        let e = smi_failure("nvidia-smi", "local", &[], &out(4, "Insufficient Permissions"));
        assert_eq!(e.kind, ErrorKind::Auth);
        let e = smi_failure("nvidia-smi", "local", &[], &out(6, "Unable to determine"));
        assert_eq!(e.kind, ErrorKind::Transient);
        let e = smi_failure("nvidia-smi", "local", &[], &out(2, "Field \"x\" is not a valid field to query."));
        assert!(is_unknown_field(&e));
        assert_eq!(e.kind, ErrorKind::Invalid);
        let e = smi_failure("nvidia-smi", "u@h", &[], &out(15, "Unable to determine the device handle for GPU 0000:01:00.0: GPU is lost."));
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(e.message.contains("on u@h"), "{}", e.message);
    }

    #[test]
    fn settings_have_defaults_and_are_checked() {
        let s = Settings::from_value(&Value::Null).unwrap();
        assert_eq!((s.nvidia_smi.as_str(), s.command_timeout), ("nvidia-smi", Duration::from_secs(60)));
        let s = Settings::from_value(&serde_json::json!({"nvidia_smi": "/usr/bin/nvidia-smi", "command_timeout": "5s", "ssh": {"user": "x"}})).unwrap();
        assert_eq!((s.nvidia_smi.as_str(), s.command_timeout), ("/usr/bin/nvidia-smi", Duration::from_secs(5)));
        assert!(Settings::from_value(&serde_json::json!({"command_timeout": "5 seconds"})).is_err());
        assert!(Settings::from_value(&serde_json::json!({"nvidia_smi": 3})).is_err());
    }
}
