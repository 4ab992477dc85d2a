//! Pure translation of inputs into Docker Engine API shapes: commands, ports, volumes, restart
//! policies, sizes, GPU requests, image references, and the names and labels that tie a
//! container to the step that made it. No I/O here: `validate` uses all of it.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{DeviceRequest, PortBinding, PortMap, RestartPolicy, RestartPolicyNameEnum};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The label that holds the idempotency key (`RUN/STEP[/INDEX]`) of the step that made a
/// container: retries and resumes find their container by it, and undo too.
pub const LABEL_KEY: &str = "engine.key";
/// The label that holds the run id.
pub const LABEL_RUN: &str = "engine.run";
/// The label that holds the step id.
pub const LABEL_STEP: &str = "engine.step";
/// The label that records `gpus.memory` (bytes per GPU): Docker cannot reserve GPU memory, so
/// the requirement is kept where `docker inspect` shows it and `gpu_check` can test it.
pub const LABEL_GPU_MEMORY: &str = "engine.gpu.memory";

/// A command: a list of arguments, or one line split like a shell splits words (quotes and
/// backslashes, no variables, no pipes: write `[sh, -c, "..."]` for those).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Command {
    /// `[python, -m, http.server]`.
    Argv(Vec<String>),
    /// `"python -m http.server"`.
    Line(String),
}

impl Command {
    /// The argument vector.
    ///
    /// # Errors
    /// `invalid` for an empty command or an unterminated quote.
    pub fn argv(&self) -> Result<Vec<String>, Error> {
        let v = match self {
            Self::Argv(v) => v.clone(),
            Self::Line(s) => split_words(s)?,
        };
        if v.is_empty() {
            return Err(Error::Input("the command is empty".into()));
        }
        Ok(v)
    }
}

/// Split a line into words as `sh` would, without expansions: `'...'` keeps everything,
/// `"..."` keeps everything but `\"` and `\\`, a backslash outside quotes escapes one character.
///
/// # Errors
/// `invalid` for an unterminated quote or a trailing backslash.
pub fn split_words(line: &str) -> Result<Vec<String>, Error> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(Error::Input(format!("unterminated ' in `{line}`"))),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(Error::Input(format!("unterminated \" in `{line}`"))),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(Error::Input(format!("unterminated \" in `{line}`"))),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err(Error::Input(format!("trailing backslash in `{line}`"))),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// A published port: `[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]` (`8080:80`,
/// `127.0.0.1:11434:11434/tcp`, `53:53/udp`, `80` for a port Docker picks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// `80/tcp`.
    pub container: String,
    /// The host address, empty for all.
    pub host_ip: String,
    /// The host port, empty for one Docker picks.
    pub host_port: String,
}

fn is_port(s: &str) -> bool {
    s.parse::<u16>().is_ok_and(|p| p > 0)
}

/// Parse one `ports` entry.
///
/// # Errors
/// `invalid`, naming the entry.
pub fn parse_port(spec: &str) -> Result<PortSpec, Error> {
    let bad = |why: &str| Error::Input(format!("port `{spec}`: {why} (expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp|sctp])"));
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p),
        None => (spec, "tcp"),
    };
    if !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(bad("unknown protocol"));
    }
    // An IPv6 host address is written in brackets: `[::1]:8080:80`.
    let (host_ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, after) = r.split_once("]:").ok_or_else(|| bad("unterminated [ipv6]"))?;
        (ip.to_string(), after)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            1 | 2 => (String::new(), rest),
            3 => (parts[0].to_string(), rest.split_once(':').map_or(rest, |(_, r)| r)),
            _ => return Err(bad("too many `:`")),
        }
    };
    let (host_port, container) = match rest.split_once(':') {
        Some((h, c)) => (h.to_string(), c.to_string()),
        None => (String::new(), rest.to_string()),
    };
    if !is_port(&container) {
        return Err(bad("the container port is not a port number"));
    }
    if !host_port.is_empty() && !is_port(&host_port) {
        return Err(bad("the host port is not a port number"));
    }
    Ok(PortSpec { container: format!("{container}/{proto}"), host_ip, host_port })
}

/// `exposed_ports` and `port_bindings` for the `ports` input.
///
/// # Errors
/// `invalid` for a bad entry.
pub fn port_map(specs: &[String]) -> Result<(Vec<String>, PortMap), Error> {
    let mut exposed = Vec::new();
    let mut map: PortMap = HashMap::new();
    for s in specs {
        let p = parse_port(s)?;
        if !exposed.contains(&p.container) {
            exposed.push(p.container.clone());
        }
        let binding = PortBinding {
            host_ip: (!p.host_ip.is_empty()).then(|| p.host_ip.clone()),
            host_port: Some(p.host_port.clone()),
        };
        map.entry(p.container).or_insert_with(|| Some(Vec::new())).get_or_insert_with(Vec::new).push(binding);
    }
    Ok((exposed, map))
}

/// One `volumes` entry, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSpec {
    /// `SOURCE:TARGET[:OPTIONS]`: a host path or a named volume, as a bind.
    Bind(String),
    /// `TARGET`: an anonymous volume.
    Anonymous(String),
}

/// Parse one `volumes` entry: `/host/path:/in/container[:ro]`, `./relative:/in:ro` (relative to
/// the workflow's directory), `NAME:/in` (a named volume), or `/in` (an anonymous volume).
///
/// # Errors
/// `invalid`, naming the entry.
pub fn parse_volume(spec: &str, base: &std::path::Path) -> Result<VolumeSpec, Error> {
    let bad = |why: &str| Error::Input(format!("volume `{spec}`: {why} (expected SOURCE:/TARGET[:ro|rw|...] or /TARGET)"));
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        [target] => {
            if !target.starts_with('/') {
                return Err(bad("the target must be an absolute path"));
            }
            Ok(VolumeSpec::Anonymous((*target).to_string()))
        }
        [source, target, opts @ ..] if opts.len() <= 1 => {
            if source.is_empty() {
                return Err(bad("the source is empty"));
            }
            if !target.starts_with('/') {
                return Err(bad("the target must be an absolute path"));
            }
            for o in opts.iter().flat_map(|o| o.split(',')) {
                if !matches!(o, "ro" | "rw" | "z" | "Z" | "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" | "nocopy" | "consistent" | "cached" | "delegated") {
                    return Err(bad(&format!("unknown option `{o}`")));
                }
            }
            let source = if source.starts_with("./") || source.starts_with("../") || *source == "." || *source == ".." {
                let p = base.join(source);
                let abs = if p.is_absolute() { p } else { std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p) };
                normalize(&abs)
            } else {
                (*source).to_string()
            };
            let mut out = format!("{source}:{target}");
            if let [o] = opts {
                out.push(':');
                out.push_str(o);
            }
            Ok(VolumeSpec::Bind(out))
        }
        _ => Err(bad("too many `:`")),
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalize(p: &std::path::Path) -> String {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out.to_string_lossy().into_owned()
}

/// Parse a restart policy: `no`, `always`, `unless-stopped`, `on-failure[:MAX_RETRIES]`.
///
/// # Errors
/// `invalid` for anything else.
pub fn parse_restart(s: &str) -> Result<RestartPolicy, Error> {
    let (name, max) = match s.split_once(':') {
        Some(("on-failure", n)) => {
            let n: i64 = n.parse().map_err(|_| Error::Input(format!("restart `{s}`: the retry count is not a number")))?;
            (RestartPolicyNameEnum::ON_FAILURE, Some(n))
        }
        Some(_) => return Err(Error::Input(format!("restart `{s}`: only on-failure takes a count"))),
        None => match s {
            "no" => (RestartPolicyNameEnum::NO, None),
            "always" => (RestartPolicyNameEnum::ALWAYS, None),
            "unless-stopped" => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
            "on-failure" => (RestartPolicyNameEnum::ON_FAILURE, None),
            _ => return Err(Error::Input(format!("restart `{s}`: use no, always, unless-stopped or on-failure[:N]"))),
        },
    };
    Ok(RestartPolicy { name: Some(name), maximum_retry_count: max })
}

/// Parse a size in bytes as Docker does (`512m`, `2g`, `1.5GiB`, `1048576`): `k`, `m`, `g`,
/// `t` (with or without `b`, `ib`) are powers of 1024.
///
/// # Errors
/// `invalid` for anything else.
pub fn parse_size(s: &str) -> Result<u64, Error> {
    let bad = || Error::Input(format!("size `{s}`: expected a number with an optional unit (512m, 2g, 16GiB)"));
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bytes = (n * mult as f64).round() as u64;
    if !n.is_finite() || bytes == 0 {
        return Err(bad());
    }
    Ok(bytes)
}

/// Split an image reference into what `POST /images/create` wants: `fromImage` and `tag` (a tag
/// or a digest). A reference without either means `latest`; without this Docker would pull
/// every tag of the repository.
#[must_use]
pub fn split_reference(image: &str) -> (String, String) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name.to_string(), digest.to_string());
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (image[..at].to_string(), image[at + 1..].to_string())
        }
        None => (image.to_string(), "latest".to_string()),
    }
}

/// Check an image reference without a registry: non-empty, no spaces, lowercase repository.
///
/// # Errors
/// `invalid`.
pub fn check_image(image: &str) -> Result<(), Error> {
    let (name, tag) = split_reference(image);
    if name.is_empty() || tag.is_empty() || image.chars().any(char::is_whitespace) {
        return Err(Error::Input(format!("image `{image}` is not an image reference (repository[:tag] or repository@digest)")));
    }
    // The first component may be a registry (`Registry.Example.com:5000`), which may have
    // capitals; the repository path may not.
    let path = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => name.as_str(),
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(Error::Input(format!("image `{image}`: repository names are lowercase")));
    }
    Ok(())
}

/// Whether `name` is a valid container name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
#[must_use]
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// FNV-1a, 32 bits: a short stable fingerprint for names.
fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The name a container gets when the input gives none: `engine-` and the idempotency key with
/// every character Docker refuses turned into `-`, cut to fit, and a fingerprint of the key, so
/// that two keys never share a name (`r1/web/0` → `engine-r1-web-0-1a2b3c4d`).
#[must_use]
pub fn name_for_key(key: &str) -> String {
    let mut body: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' }).collect();
    body.truncate(100);
    format!("engine-{body}-{:08x}", fnv1a(key))
}

/// The labels every container the connector creates carries, above the input's own.
#[must_use]
pub fn step_labels(key: &str, run_id: &str, step: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_KEY.to_string(), key.to_string()), (LABEL_RUN.to_string(), run_id.to_string()), (LABEL_STEP.to_string(), step.to_string())])
}

/// The `gpus` input of `container.run` and `container.gpu_check`, as `docker run --gpus` takes
/// it.
///
/// ```yaml
/// gpus: { all: true }                                  # --gpus all
/// gpus: { count: 2, capabilities: [compute, utility] } # --gpus 2,capabilities=compute,utility
/// gpus: { ids: ["0", "GPU-3f2a..."] }                   # --gpus '"device=0,GPU-3f2a..."'
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuRequest {
    /// Every GPU of the host (the default when neither `count` nor `ids` is given).
    #[serde(default)]
    pub all: bool,
    /// These GPUs, by index (`"0"`) or UUID (`"GPU-..."`).
    #[serde(default)]
    pub ids: Vec<String>,
    /// This many GPUs, picked by the NVIDIA runtime.
    #[serde(default)]
    pub count: Option<u32>,
    /// Driver capabilities besides `gpu`: `compute`, `utility`, `graphics`, `video`, `display`,
    /// `compat32`, or `all`. They also become `NVIDIA_DRIVER_CAPABILITIES`. Default: the NVIDIA
    /// runtime's own (`utility,compute`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The GPU memory each GPU must have (`16GiB`, `24g`). Docker cannot reserve GPU memory:
    /// `container.run` records it as the label `engine.gpu.memory` (bytes); `container.gpu_check`
    /// fails when a GPU it sees has less.
    #[serde(default)]
    pub memory: Option<String>,
}

/// The NVIDIA driver capabilities (the ones `NVIDIA_DRIVER_CAPABILITIES` knows).
const NVIDIA_CAPS: &[&str] = &["compute", "compat32", "graphics", "utility", "video", "display", "all"];

impl GpuRequest {
    /// Check the request.
    ///
    /// # Errors
    /// `invalid` when `all`, `ids` and `count` are combined, `count` is 0, an id or capability is
    /// malformed, or `memory` is not a size.
    pub fn check(&self) -> Result<(), Error> {
        let given = usize::from(self.all) + usize::from(!self.ids.is_empty()) + usize::from(self.count.is_some());
        if given > 1 {
            return Err(Error::Input("gpus: give one of `all`, `ids` and `count`".into()));
        }
        if self.count == Some(0) {
            return Err(Error::Input("gpus: `count` must be at least 1 (leave `gpus` out for no GPU)".into()));
        }
        if let Some(bad) = self.ids.iter().find(|i| i.is_empty() || i.contains(',') || i.chars().any(char::is_whitespace)) {
            return Err(Error::Input(format!("gpus: id `{bad}` is not a GPU index or UUID")));
        }
        if let Some(bad) = self.capabilities.iter().find(|c| c.is_empty() || c.contains(',') || c.chars().any(char::is_whitespace)) {
            return Err(Error::Input(format!("gpus: capability `{bad}` is not a capability name")));
        }
        if let Some(m) = &self.memory {
            parse_size(m).map_err(|e| Error::Input(format!("gpus.memory: {e}")))?;
        }
        Ok(())
    }

    /// The `DeviceRequests` entry: driver `nvidia`, `count: -1` for all, the ids, and the
    /// capabilities `[["gpu", ...]]`.
    #[must_use]
    pub fn device_request(&self) -> DeviceRequest {
        let mut caps = vec!["gpu".to_string()];
        caps.extend(self.capabilities.iter().filter(|c| *c != "gpu").cloned());
        let (count, ids) = if !self.ids.is_empty() {
            (None, Some(self.ids.clone()))
        } else if let Some(n) = self.count {
            (Some(i64::from(n)), None)
        } else {
            (Some(-1), None)
        };
        DeviceRequest { driver: Some("nvidia".into()), count, device_ids: ids, capabilities: Some(vec![caps]), options: None }
    }

    /// The environment the NVIDIA runtime reads: `NVIDIA_VISIBLE_DEVICES` (`all`, the ids, or
    /// `0,..,N-1` for a count, as Docker's own nvidia driver sets it) and, when capabilities are
    /// given, `NVIDIA_DRIVER_CAPABILITIES`.
    #[must_use]
    pub fn env(&self) -> Vec<(String, String)> {
        let visible = if !self.ids.is_empty() {
            self.ids.join(",")
        } else if let Some(n) = self.count {
            (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
        } else {
            "all".to_string()
        };
        let mut out = vec![("NVIDIA_VISIBLE_DEVICES".to_string(), visible)];
        let caps: Vec<&str> = self.capabilities.iter().map(String::as_str).filter(|c| NVIDIA_CAPS.contains(c)).collect();
        if !caps.is_empty() {
            out.push(("NVIDIA_DRIVER_CAPABILITIES".to_string(), caps.join(",")));
        }
        out
    }

    /// `memory` in bytes.
    #[must_use]
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory.as_deref().and_then(|m| parse_size(m).ok())
    }
}

/// Check environment variable names: non-empty, no `=`.
///
/// # Errors
/// `invalid`, naming the variable.
pub fn check_env(env: &engine_core::env::EnvMap) -> Result<(), Error> {
    match env.keys().find(|k| k.is_empty() || k.contains('=') || k.contains('\0')) {
        Some(k) => Err(Error::Input(format!("env: `{k}` is not a variable name"))),
        None => Ok(()),
    }
}

/// `KEY=VALUE` lines, in the order of the map.
#[must_use]
pub fn env_lines(env: &engine_core::env::EnvMap) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}
