//! The request layer: where the secret key, project, zone and API URL come from, the way
//! `scw` users expect, and one call of the Scaleway REST APIs (JSON, `X-Auth-Token`).
//!
//! # Where settings come from, first match wins
//! | what | order |
//! |---|---|
//! | secret key | `secret_key` in `connectors: scaleway:`, `SCW_SECRET_KEY`, the profile's `secret_key` in the `scw` config file |
//! | access key | `access_key`, `SCW_ACCESS_KEY`, the profile (informational: the API authenticates with the secret key) |
//! | project | `project_id`, `SCW_DEFAULT_PROJECT_ID`, the profile's `default_project_id`; else the organization (its default project) |
//! | organization | `organization_id`, `SCW_DEFAULT_ORGANIZATION_ID`, the profile's `default_organization_id` |
//! | zone | the action's `zone`, `zone` in the block, `SCW_DEFAULT_ZONE`, the profile's `default_zone`, `fr-par-1` |
//! | region | `region`, `SCW_DEFAULT_REGION`, the profile's `default_region`, else from the zone |
//! | API URL | `endpoint` or `api_url`, `SCW_API_URL`, the profile's `api_url`, `https://api.scaleway.com` |
//! | profile | `profile`, `SCW_PROFILE`, the file's `active_profile`, `default` (the top-level keys) |
//! | config file | `SCW_CONFIG_PATH`, else `$XDG_CONFIG_HOME/scw/config.yaml`, else `~/.config/scw/config.yaml` |
//!
//! A named profile's keys override the file's top-level keys, as in `scw` and the SDKs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use engine_connector::{ConnectorError, Secret, StepContext};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{parse_error, Error};

/// The public API URL.
pub const DEFAULT_API_URL: &str = "https://api.scaleway.com";
/// The zone used when none is configured anywhere (as `scw` does).
pub const DEFAULT_ZONE: &str = "fr-par-1";
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The workflow's `connectors: scaleway:` block.
#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Secret key (an API key's secret): sent as `X-Auth-Token`.
    #[serde(default, deserialize_with = "opt_secret")]
    pub secret_key: Option<Secret>,
    /// Access key (`SCW...`), informational.
    #[serde(default)]
    pub access_key: Option<String>,
    /// Project that owns what is created.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Organization (used as the project when no project is set: its default project).
    #[serde(default)]
    pub organization_id: Option<String>,
    /// Default zone of every action (`fr-par-2`).
    #[serde(default)]
    pub zone: Option<String>,
    /// Default region (`fr-par`).
    #[serde(default)]
    pub region: Option<String>,
    /// API URL (an emulator, a private endpoint); `api_url` is the same.
    #[serde(default, alias = "api_url")]
    pub endpoint: Option<String>,
    /// A profile of the `scw` config file.
    #[serde(default)]
    pub profile: Option<String>,
    /// Where a public IP is reached from here for `wait_ssh` (`{"51.15.0.1": "10.0.0.5:22"}`, `*`
    /// for every IP): NAT, a bastion's forwarded ports, an emulator.
    #[serde(default)]
    pub ip_map: HashMap<String, String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("secret_key", &self.secret_key)
            .field("access_key", &self.access_key)
            .field("project_id", &self.project_id)
            .field("zone", &self.zone)
            .field("endpoint", &self.endpoint)
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

fn opt_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()).map(Secret::new))
}

impl Settings {
    /// Reads the block from the step context (`null` is an empty block).
    ///
    /// # Errors
    /// `invalid` for an unknown key or a wrong type.
    pub fn from_context(cx: &StepContext) -> Result<Self, ConnectorError> {
        if cx.settings.is_null() {
            return Ok(Self::default());
        }
        serde_json::from_value(cx.settings.clone()).map_err(|e| ConnectorError::invalid(format!("invalid `connectors: scaleway:` block: {e}")))
    }
}

/// The environment the resolution reads, so tests can give their own.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The process environment (`SCW_*`, `HOME`, `XDG_CONFIG_HOME`).
    #[must_use]
    pub fn process() -> Self {
        Self::from_vars(std::env::vars().filter(|(k, _)| k.starts_with("SCW_") || k == "HOME" || k == "XDG_CONFIG_HOME"))
    }

    /// Given variables.
    #[must_use]
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Self {
        Self { vars: vars.into_iter().collect() }
    }

    /// A variable, when set and not empty.
    #[must_use]
    pub fn get(&self, k: &str) -> Option<&str> {
        self.vars.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The `scw` config file's path.
    #[must_use]
    pub fn config_path(&self) -> Option<PathBuf> {
        if let Some(p) = self.get("SCW_CONFIG_PATH") {
            return Some(PathBuf::from(p));
        }
        if let Some(x) = self.get("XDG_CONFIG_HOME") {
            return Some(PathBuf::from(x).join("scw").join("config.yaml"));
        }
        self.get("HOME").map(|h| PathBuf::from(h).join(".config").join("scw").join("config.yaml"))
    }
}

/// The keys of a profile in the `scw` config file.
#[derive(Debug, Default, Clone, Deserialize)]
struct Profile {
    #[serde(default)]
    access_key: Option<String>,
    #[serde(default)]
    secret_key: Option<String>,
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    default_organization_id: Option<String>,
    #[serde(default)]
    default_project_id: Option<String>,
    #[serde(default)]
    default_region: Option<String>,
    #[serde(default)]
    default_zone: Option<String>,
}

impl Profile {
    fn overridden_by(mut self, o: Profile) -> Self {
        macro_rules! take {
            ($($f:ident),*) => {$( if o.$f.as_deref().is_some_and(|v| !v.is_empty()) { self.$f = o.$f; } )*};
        }
        take!(access_key, secret_key, api_url, default_organization_id, default_project_id, default_region, default_zone);
        self
    }
}

/// The `scw` config file: the default profile's keys at the top level, named ones under `profiles:`.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(flatten)]
    top: Profile,
    #[serde(default)]
    active_profile: Option<String>,
    #[serde(default)]
    profiles: HashMap<String, Profile>,
}

/// The profile `name` of the config file at `path` (top-level keys overridden by the named
/// profile's). A missing file is an empty profile.
fn file_profile(path: Option<PathBuf>, explicit: Option<&str>) -> Result<(Profile, String), ConnectorError> {
    let Some(path) = path else { return Ok((Profile::default(), "default".into())) };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(p) = explicit.filter(|p| *p != "default") {
                return Err(ConnectorError::invalid(format!("scaleway profile `{p}` asked, but there is no scw config file at {}", path.display())));
            }
            return Ok((Profile::default(), "default".into()));
        }
        Err(e) => return Err(ConnectorError::invalid(format!("failed to read the scw config file {}: {e}", path.display()))),
    };
    let file: ConfigFile = if text.trim().is_empty() {
        ConfigFile::default()
    } else {
        serde_norway::from_str(&text).map_err(|e| ConnectorError::invalid(format!("invalid scw config file {}: {e}", path.display())))?
    };
    let name = explicit.map(str::to_string).or(file.active_profile.clone()).unwrap_or_else(|| "default".into());
    if name == "default" {
        return Ok((file.top, name));
    }
    match file.profiles.get(&name) {
        Some(p) => Ok((file.top.clone().overridden_by(p.clone()), name)),
        None => Err(ConnectorError::invalid(format!("scaleway profile `{name}` not found in {} (profiles: {})", path.display(), {
            let mut names: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
            names.sort_unstable();
            names.join(", ")
        }))),
    }
}

/// Where to send requests, with what.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// API URL without a trailing slash.
    pub api_url: String,
    /// Zone of the action.
    pub zone: String,
    /// Region (from the settings, else the zone without its number).
    pub region: String,
    /// Project id (or the organization id, whose default project it names), if known.
    pub project: Option<String>,
    /// Organization id, if known.
    pub organization: Option<String>,
    /// Access key, if known.
    pub access_key: Option<String>,
    /// The secret key, when one was found.
    pub secret_key: Option<Secret>,
    /// Where the secret came from, or why none was found (never the value).
    pub secret_source: String,
}

/// Resolves API URL, zone, project and secret key.
///
/// # Errors
/// `invalid` for a bad config file, an unknown profile, or a bad zone or URL.
pub fn resolve(settings: &Settings, zone_input: Option<&str>, env: &Env) -> Result<Resolved, ConnectorError> {
    let explicit_profile = settings.profile.as_deref().or_else(|| env.get("SCW_PROFILE"));
    let (file, profile_name) = file_profile(env.config_path(), explicit_profile)?;
    let nonempty = |o: &Option<String>| o.clone().filter(|v| !v.is_empty());

    let zone = zone_input
        .map(str::to_string)
        .or_else(|| nonempty(&settings.zone))
        .or_else(|| env.get("SCW_DEFAULT_ZONE").map(str::to_string))
        .or_else(|| nonempty(&file.default_zone))
        .unwrap_or_else(|| DEFAULT_ZONE.to_string());
    check_zone(&zone)?;
    let region = nonempty(&settings.region)
        .or_else(|| env.get("SCW_DEFAULT_REGION").map(str::to_string))
        .or_else(|| nonempty(&file.default_region))
        .unwrap_or_else(|| region_of(&zone));
    let api_url = nonempty(&settings.endpoint)
        .or_else(|| env.get("SCW_API_URL").map(str::to_string))
        .or_else(|| nonempty(&file.api_url))
        .unwrap_or_else(|| DEFAULT_API_URL.to_string());
    let api_url = api_url.trim_end_matches('/').to_string();
    if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
        return Err(ConnectorError::invalid(format!("invalid Scaleway API URL {api_url:?}: expected http:// or https://")));
    }
    let organization = nonempty(&settings.organization_id)
        .or_else(|| env.get("SCW_DEFAULT_ORGANIZATION_ID").map(str::to_string))
        .or_else(|| nonempty(&file.default_organization_id));
    let project = nonempty(&settings.project_id)
        .or_else(|| env.get("SCW_DEFAULT_PROJECT_ID").map(str::to_string))
        .or_else(|| nonempty(&file.default_project_id))
        .or_else(|| organization.clone());
    let access_key = nonempty(&settings.access_key).or_else(|| env.get("SCW_ACCESS_KEY").map(str::to_string)).or_else(|| nonempty(&file.access_key));
    let (secret_key, secret_source) = if let Some(s) = &settings.secret_key {
        (Some(s.clone()), "connectors: scaleway: secret_key".to_string())
    } else if let Some(s) = env.get("SCW_SECRET_KEY") {
        (Some(Secret::new(s)), "SCW_SECRET_KEY".to_string())
    } else if let Some(s) = nonempty(&file.secret_key) {
        (Some(Secret::new(s)), format!("profile `{profile_name}` of the scw config file"))
    } else {
        (None, format!("no Scaleway secret key: set `secret_key` in `connectors: scaleway:`, or SCW_SECRET_KEY, or `secret_key` in the `{profile_name}` profile of ~/.config/scw/config.yaml (`scw init`)"))
    };
    Ok(Resolved { api_url, zone, region, project, organization, access_key, secret_key, secret_source })
}

/// Checks a zone's shape (`fr-par-2`).
///
/// # Errors
/// `invalid` for anything else.
pub fn check_zone(zone: &str) -> Result<(), ConnectorError> {
    let parts: Vec<&str> = zone.split('-').collect();
    let ok = parts.len() == 3 && parts[..2].iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase())) && parts[2].chars().all(|c| c.is_ascii_digit()) && !parts[2].is_empty();
    if ok {
        Ok(())
    } else {
        Err(ConnectorError::invalid(format!("invalid Scaleway zone {zone:?}: expected a zone like fr-par-2")))
    }
}

/// The region of a zone (`fr-par-2` → `fr-par`).
#[must_use]
pub fn region_of(zone: &str) -> String {
    zone.rsplit_once('-').map_or_else(|| zone.to_string(), |(r, _)| r.to_string())
}

/// A client of the Scaleway APIs for one zone.
#[derive(Debug, Clone)]
pub struct Scw {
    http: reqwest::Client,
    /// Where and with what.
    pub target: Resolved,
}

impl Scw {
    /// A client for the step's settings and the given zone input.
    ///
    /// # Errors
    /// `invalid` for bad settings.
    pub fn for_step(cx: &StepContext, zone: Option<&str>) -> Result<Self, ConnectorError> {
        let settings = Settings::from_context(cx)?;
        Self::new(resolve(&settings, zone, &Env::process())?)
    }

    /// A client for a resolved target.
    ///
    /// # Errors
    /// `invalid` when the HTTP client cannot be built.
    pub fn new(target: Resolved) -> Result<Self, ConnectorError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ConnectorError::invalid(format!("failed to build the HTTP client: {e}")))?;
        Ok(Self { http, target })
    }

    /// The same client for another zone.
    #[must_use]
    pub fn in_zone(&self, zone: &str) -> Self {
        let mut s = self.clone();
        s.target.zone = zone.to_string();
        s
    }

    /// The zone.
    #[must_use]
    pub fn zone(&self) -> &str {
        &self.target.zone
    }

    /// `/instance/v1/zones/ZONE` + `rest`.
    #[must_use]
    pub fn instance(&self, rest: &str) -> String {
        format!("/instance/v1/zones/{}{rest}", self.target.zone)
    }

    /// `/block/v1/zones/ZONE` + `rest`.
    #[must_use]
    pub fn block(&self, rest: &str) -> String {
        format!("/block/v1/zones/{}{rest}", self.target.zone)
    }

    /// GET `path` with a query.
    ///
    /// # Errors
    /// Classified [`Error`]s.
    pub async fn get(&self, cx: &StepContext, path: &str, query: &[(&str, String)]) -> Result<Value, Error> {
        self.call(cx, reqwest::Method::GET, path, query, None).await
    }

    /// POST `body` to `path`.
    ///
    /// # Errors
    /// Classified [`Error`]s.
    pub async fn post(&self, cx: &StepContext, path: &str, body: &Value) -> Result<Value, Error> {
        self.call(cx, reqwest::Method::POST, path, &[], Some(body)).await
    }

    /// PATCH `body` to `path`.
    ///
    /// # Errors
    /// Classified [`Error`]s.
    pub async fn patch(&self, cx: &StepContext, path: &str, body: &Value) -> Result<Value, Error> {
        self.call(cx, reqwest::Method::PATCH, path, &[], Some(body)).await
    }

    /// DELETE `path`.
    ///
    /// # Errors
    /// Classified [`Error`]s.
    pub async fn delete(&self, cx: &StepContext, path: &str) -> Result<Value, Error> {
        self.call(cx, reqwest::Method::DELETE, path, &[], None).await
    }

    /// One call; the JSON of a 2xx answer (`null` for an empty one).
    ///
    /// # Errors
    /// [`Error`]s classified by [`Error::kind`]: the API's type and message stay in them.
    pub async fn call(&self, cx: &StepContext, method: reqwest::Method, path: &str, query: &[(&str, String)], body: Option<&Value>) -> Result<Value, Error> {
        let what = format!("{method} {path}");
        let secret = self.target.secret_key.as_ref().ok_or_else(|| Error::NoCredentials(self.target.secret_source.clone()))?;
        let url = format!("{}{path}", self.target.api_url);
        let mut req = self.http.request(method, &url).header("X-Auth-Token", secret.expose()).header("User-Agent", "engine-connector-scaleway");
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let transport = |e: &reqwest::Error| Error::Transport { what: what.clone(), endpoint: self.target.api_url.clone(), detail: innermost(e) };
        let resp = tokio::select! {
            r = req.send() => r.map_err(|e| transport(&e))?,
            () = cx.cancelled() => return Err(Error::Cancelled(what)),
        };
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
        let text = resp.text().await.map_err(|e| transport(&e))?;
        if (200..300).contains(&status) {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| Error::Parse { what, detail: e.to_string() });
        }
        let (error_type, message) = parse_error(status, &text);
        Err(Error::Api { what, status, error_type, message, retry_after })
    }
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg = format!("{msg}: {s}");
        cur = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(config: Option<&str>, vars: &[(&str, &str)]) -> (tempfile::TempDir, Env) {
        let home = tempfile::tempdir().unwrap();
        if let Some(c) = config {
            std::fs::create_dir_all(home.path().join(".config/scw")).unwrap();
            std::fs::write(home.path().join(".config/scw/config.yaml"), c).unwrap();
        }
        let mut v: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        v.push(("HOME".into(), home.path().display().to_string()));
        (home, Env::from_vars(v))
    }

    const CONFIG: &str = "\
# written by `scw init`
access_key: SCWTOPLEVEL0000000000
secret_key: 11111111-1111-4111-8111-111111111111
default_organization_id: 22222222-2222-4222-8222-222222222222
default_project_id: 33333333-3333-4333-8333-333333333333
default_zone: fr-par-1
default_region: fr-par
send_telemetry: false
profiles:
  gpu:
    secret_key: 44444444-4444-4444-8444-444444444444
    default_zone: fr-par-2
  emu:
    api_url: http://127.0.0.1:9999/
";

    #[test]
    fn config_file_profiles() {
        let (_h, env) = env_with(Some(CONFIG), &[]);
        let r = resolve(&Settings::default(), None, &env).unwrap();
        assert_eq!(r.secret_key.unwrap().expose(), "11111111-1111-4111-8111-111111111111");
        assert_eq!((r.zone.as_str(), r.region.as_str()), ("fr-par-1", "fr-par"));
        assert_eq!(r.project.as_deref(), Some("33333333-3333-4333-8333-333333333333"));
        assert_eq!(r.api_url, DEFAULT_API_URL);
        assert!(r.secret_source.contains("default"));
        // SCW_PROFILE selects a profile whose keys override the top level.
        let (_h, env) = env_with(Some(CONFIG), &[("SCW_PROFILE", "gpu")]);
        let r = resolve(&Settings::default(), None, &env).unwrap();
        assert_eq!(r.secret_key.unwrap().expose(), "44444444-4444-4444-8444-444444444444");
        assert_eq!(r.zone, "fr-par-2");
        assert_eq!(r.access_key.as_deref(), Some("SCWTOPLEVEL0000000000"));
        // The block's profile beats SCW_PROFILE; the file's api_url is used.
        let s = Settings { profile: Some("emu".into()), ..Settings::default() };
        let r = resolve(&s, Some("nl-ams-1"), &env).unwrap();
        assert_eq!(r.api_url, "http://127.0.0.1:9999");
        assert_eq!((r.zone.as_str(), r.region.as_str()), ("nl-ams-1", "fr-par"));
        let s = Settings { profile: Some("nope".into()), ..Settings::default() };
        let e = resolve(&s, None, &env).unwrap_err();
        assert!(e.message.contains("`nope` not found") && e.message.contains("emu, gpu"), "{}", e.message);
    }

    #[test]
    fn scw_config_path_and_active_profile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.yaml");
        std::fs::write(&path, "active_profile: p\nsecret_key: top\nprofiles:\n  p:\n    secret_key: from-p\n    default_project_id: proj-p\n").unwrap();
        let env = Env::from_vars([("SCW_CONFIG_PATH".to_string(), path.display().to_string()), ("HOME".to_string(), "/nonexistent".to_string())]);
        let r = resolve(&Settings::default(), None, &env).unwrap();
        assert_eq!(r.secret_key.unwrap().expose(), "from-p");
        assert_eq!(r.project.as_deref(), Some("proj-p"));
        std::fs::write(&path, "secret_key: [unclosed\n").unwrap();
        assert!(resolve(&Settings::default(), None, &env).unwrap_err().message.contains("invalid scw config file"));
    }

    #[test]
    fn block_beats_env_beats_file() {
        let (_h, env) = env_with(
            Some(CONFIG),
            &[("SCW_SECRET_KEY", "env-secret"), ("SCW_DEFAULT_PROJECT_ID", "env-project"), ("SCW_DEFAULT_ZONE", "pl-waw-2"), ("SCW_API_URL", "http://env:1")],
        );
        let r = resolve(&Settings::default(), None, &env).unwrap();
        assert_eq!(r.secret_key.unwrap().expose(), "env-secret");
        assert_eq!(r.secret_source, "SCW_SECRET_KEY");
        assert_eq!((r.project.as_deref(), r.zone.as_str(), r.api_url.as_str()), (Some("env-project"), "pl-waw-2", "http://env:1"));
        let s: Settings = serde_json::from_value(serde_json::json!({
            "secret_key": "block-secret", "project_id": "block-project", "zone": "fr-par-3", "api_url": "http://block:2/"
        }))
        .unwrap();
        let r = resolve(&s, None, &env).unwrap();
        assert_eq!(r.secret_key.unwrap().expose(), "block-secret");
        assert_eq!((r.project.as_deref(), r.zone.as_str(), r.api_url.as_str()), (Some("block-project"), "fr-par-3", "http://block:2"));
        let s: Settings = serde_json::from_value(serde_json::json!({"endpoint": "http://e:3"})).unwrap();
        assert_eq!(resolve(&s, None, &env).unwrap().api_url, "http://e:3");
        assert!(serde_json::from_value::<Settings>(serde_json::json!({"secret": "x"})).is_err());
    }

    #[test]
    fn nothing_found_and_bad_values() {
        let (_h, env) = env_with(None, &[("SCW_DEFAULT_ORGANIZATION_ID", "org-1")]);
        let r = resolve(&Settings::default(), None, &env).unwrap();
        assert!(r.secret_key.is_none());
        assert!(r.secret_source.contains("no Scaleway secret key"));
        assert_eq!(r.zone, DEFAULT_ZONE);
        assert_eq!(r.project.as_deref(), Some("org-1"));
        assert!(resolve(&Settings::default(), Some("paris"), &env).is_err());
        let s = Settings { endpoint: Some("api.scaleway.com".into()), ..Settings::default() };
        assert!(resolve(&s, None, &env).is_err());
        let s = Settings { profile: Some("gpu".into()), ..Settings::default() };
        assert!(resolve(&s, None, &env).unwrap_err().message.contains("no scw config file"));
    }

    #[test]
    fn secrets_are_redacted() {
        let s: Settings = serde_json::from_value(serde_json::json!({"secret_key": "topsecret-uuid", "access_key": "SCWX"})).unwrap();
        assert!(!format!("{s:?}").contains("topsecret"), "{s:?}");
        let (_h, env) = env_with(None, &[]);
        let r = resolve(&s, None, &env).unwrap();
        assert!(!format!("{r:?}").contains("topsecret"), "{r:?}");
    }

    #[test]
    fn zones_and_regions() {
        assert_eq!(region_of("fr-par-2"), "fr-par");
        assert_eq!(region_of("pl-waw-3"), "pl-waw");
        assert!(check_zone("nl-ams-1").is_ok());
        assert!(check_zone("fr-par").is_err());
        assert!(check_zone("FR-par-1").is_err());
    }
}
