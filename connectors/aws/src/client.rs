//! The request layer: where the region, credentials and endpoint come from, and one signed
//! call of the EC2 Query API (`Action=...&Version=2016-11-15`, form-encoded POST, XML answer).
//!
//! Everything that talks to AWS goes through [`Ec2::call`]; signing is the `aws-sigv4` crate's
//! (the signer the official SDKs use), never ours.
//!
//! # Where settings come from, first match wins
//! | what | order |
//! |---|---|
//! | region | the action's `region` input, `connectors: aws: region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region` in `~/.aws/config` |
//! | credentials | `access_key_id` + `secret_access_key` (+ `session_token`) in the block; the block's `profile`; `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`); the profile `AWS_PROFILE` (else `default`) in `~/.aws/credentials` then `~/.aws/config` |
//! | files | `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`), `AWS_CONFIG_FILE` (default `~/.aws/config`, sections `[default]` and `[profile NAME]`) |
//! | endpoint | `endpoint` in the block, `AWS_ENDPOINT_URL_EC2`, `AWS_ENDPOINT_URL`, `https://ec2.REGION.amazonaws.com` |
//!
//! Profiles that need a role, SSO or a `credential_process` are refused with an `auth`
//! error that says so: this connector reads static keys only.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use engine_connector::{ConnectorError, Secret, StepContext};
use serde::Deserialize;

use crate::error::Error;

/// The EC2 API version every request names.
pub const API_VERSION: &str = "2016-11-15";
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The workflow's `connectors: aws:` block.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Default region of every action.
    #[serde(default)]
    pub region: Option<String>,
    /// A profile of `~/.aws/credentials` / `~/.aws/config`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Access key id (with `secret_access_key`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key.
    #[serde(default, deserialize_with = "opt_secret")]
    pub secret_access_key: Option<Secret>,
    /// Session token of temporary credentials.
    #[serde(default, deserialize_with = "opt_secret")]
    pub session_token: Option<Secret>,
    /// EC2 endpoint (an emulator, a private endpoint).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A file where `ami.lookup` keeps its answers across runs (besides its in-process cache).
    #[serde(default)]
    pub ami_cache_file: Option<PathBuf>,
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
        serde_json::from_value(cx.settings.clone()).map_err(|e| ConnectorError::invalid(format!("invalid `connectors: aws:` block: {e}")))
    }
}

/// The environment the resolution reads, so tests can give their own.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    home: Option<PathBuf>,
}

impl Env {
    /// The process environment.
    #[must_use]
    pub fn process() -> Self {
        let vars: HashMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("AWS_") || k == "HOME").collect();
        let home = vars.get("HOME").map(PathBuf::from);
        Self { vars, home }
    }

    /// Given variables (and `HOME` among them, for `~/.aws`).
    #[must_use]
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Self {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let home = vars.get("HOME").map(PathBuf::from);
        Self { vars, home }
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.vars.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn file(&self, var: &str, default: &str) -> Option<PathBuf> {
        self.get(var).map(PathBuf::from).or_else(|| self.home.as_ref().map(|h| h.join(".aws").join(default)))
    }
}

/// Static credentials, ready for signing.
#[derive(Clone)]
pub struct Creds {
    access_key_id: String,
    secret: Secret,
    token: Option<Secret>,
    /// Where they came from (for messages; never the values).
    pub source: String,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds").field("source", &self.source).finish_non_exhaustive()
    }
}

/// Where to send requests, with what.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The region.
    pub region: String,
    /// The endpoint URL.
    pub endpoint: String,
    /// The credentials, when any were found.
    pub creds: Option<Creds>,
    /// Why none were found.
    pub creds_error: Option<String>,
}

/// One parsed INI file: section name to key/values.
type Ini = HashMap<String, HashMap<String, String>>;

fn parse_ini(text: &str) -> Ini {
    let mut out: Ini = HashMap::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_string();
            out.entry(name.clone()).or_default();
            section = Some(name);
        } else if let (Some(s), Some((k, v))) = (&section, line.split_once('=')) {
            out.entry(s.clone()).or_default().insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

fn read_ini(path: Option<PathBuf>) -> Ini {
    path.and_then(|p| std::fs::read_to_string(p).ok()).map(|t| parse_ini(&t)).unwrap_or_default()
}

/// The profile's section in the config file: `[default]` or `[profile NAME]` (`[NAME]` is
/// accepted too, as the CLI does for some tools).
fn config_section<'a>(config: &'a Ini, profile: &str) -> Option<&'a HashMap<String, String>> {
    if profile == "default" {
        config.get("default").or_else(|| config.get("profile default"))
    } else {
        config.get(&format!("profile {profile}")).or_else(|| config.get(profile))
    }
}

/// Resolves region, endpoint and credentials.
///
/// # Errors
/// `invalid` when no region can be found.
pub fn resolve(settings: &Settings, region_input: Option<&str>, env: &Env) -> Result<Resolved, ConnectorError> {
    let profile_name = settings.profile.clone().or_else(|| env.get("AWS_PROFILE").map(str::to_string)).unwrap_or_else(|| "default".into());
    let credentials_file = read_ini(env.file("AWS_SHARED_CREDENTIALS_FILE", "credentials"));
    let config_file = read_ini(env.file("AWS_CONFIG_FILE", "config"));
    let profile_section = config_section(&config_file, &profile_name);

    let region = region_input
        .map(str::to_string)
        .or_else(|| settings.region.clone())
        .or_else(|| env.get("AWS_REGION").map(str::to_string))
        .or_else(|| env.get("AWS_DEFAULT_REGION").map(str::to_string))
        .or_else(|| profile_section.and_then(|s| s.get("region").cloned()))
        .ok_or_else(|| {
            ConnectorError::invalid(format!(
                "no AWS region: set `region` on the step or in `connectors: aws:`, or AWS_REGION, or `region` in the `{profile_name}` profile of ~/.aws/config"
            ))
        })?;
    if region.is_empty() || !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ConnectorError::invalid(format!("invalid AWS region {region:?}")));
    }

    let endpoint = settings
        .endpoint
        .clone()
        .or_else(|| env.get("AWS_ENDPOINT_URL_EC2").map(str::to_string))
        .or_else(|| env.get("AWS_ENDPOINT_URL").map(str::to_string))
        .unwrap_or_else(|| {
            let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
            format!("https://ec2.{region}.{suffix}")
        });
    let endpoint = endpoint.trim_end_matches('/').to_string();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(ConnectorError::invalid(format!("invalid EC2 endpoint {endpoint:?}: expected http:// or https://")));
    }

    let from_profile = |name: &str| -> Result<Option<Creds>, String> {
        let sections = [credentials_file.get(name), config_section(&config_file, name)];
        for s in sections.into_iter().flatten() {
            if let (Some(ak), Some(sk)) = (s.get("aws_access_key_id"), s.get("aws_secret_access_key")) {
                return Ok(Some(Creds {
                    access_key_id: ak.clone(),
                    secret: Secret::new(sk.clone()),
                    token: s.get("aws_session_token").map(|t| Secret::new(t.clone())),
                    source: format!("profile {name}"),
                }));
            }
        }
        if let Some(s) = config_section(&config_file, name) {
            for key in ["role_arn", "sso_session", "sso_start_url", "credential_process", "web_identity_token_file"] {
                if s.contains_key(key) {
                    return Err(format!(
                        "profile `{name}` uses `{key}`, which this connector does not support: give static keys (access_key_id/secret_access_key, AWS_ACCESS_KEY_ID, or aws_access_key_id in the profile), e.g. from `aws configure export-credentials --profile {name} --format env`"
                    ));
                }
            }
        }
        Ok(None)
    };

    let mut creds_error = None;
    let creds = if let (Some(ak), Some(sk)) = (&settings.access_key_id, &settings.secret_access_key) {
        Some(Creds { access_key_id: ak.clone(), secret: sk.clone(), token: settings.session_token.clone(), source: "connectors: aws: block".into() })
    } else if let Some(p) = &settings.profile {
        match from_profile(p) {
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                creds_error = Some(format!("profile `{p}` (from `connectors: aws: profile`) has no aws_access_key_id/aws_secret_access_key"));
                None
            }
            Err(e) => {
                creds_error = Some(e);
                None
            }
        }
    } else if let (Some(ak), Some(sk)) = (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")) {
        Some(Creds {
            access_key_id: ak.to_string(),
            secret: Secret::new(sk),
            token: env.get("AWS_SESSION_TOKEN").map(Secret::new),
            source: "environment".into(),
        })
    } else {
        match from_profile(&profile_name) {
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                creds_error = Some(format!(
                    "no AWS credentials: set access_key_id/secret_access_key in `connectors: aws:`, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a `{profile_name}` profile in ~/.aws/credentials"
                ));
                None
            }
            Err(e) => {
                creds_error = Some(e);
                None
            }
        }
    };
    Ok(Resolved { region, endpoint, creds, creds_error })
}

/// A client of the EC2 Query API for one region.
#[derive(Debug, Clone)]
pub struct Ec2 {
    http: reqwest::Client,
    /// Region and endpoint.
    pub target: Resolved,
}

impl Ec2 {
    /// A client for the step's settings and the given region input.
    ///
    /// # Errors
    /// `invalid` for bad settings or no region.
    pub fn for_step(cx: &StepContext, region: Option<&str>) -> Result<Self, ConnectorError> {
        let settings = Settings::from_context(cx)?;
        Self::new(resolve(&settings, region, &Env::process())?)
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

    /// The region.
    #[must_use]
    pub fn region(&self) -> &str {
        &self.target.region
    }

    /// Whether credentials were found.
    #[must_use]
    pub fn has_credentials(&self) -> bool {
        self.target.creds.is_some()
    }

    /// The signed request (no await here: the signer's types are not `Send`).
    fn signed(&self, action: &str, params: &[(String, String)]) -> Result<reqwest::RequestBuilder, Error> {
        let creds = self.target.creds.as_ref().ok_or_else(|| Error::NoCredentials(self.target.creds_error.clone().unwrap_or_default()))?;
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", action).append_pair("Version", API_VERSION);
        for (k, v) in params {
            form.append_pair(k, v);
        }
        let body = form.finish();
        let url = format!("{}/", self.target.endpoint);
        let host = url.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or_default().to_string();
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let headers = [("host", host.as_str()), ("content-type", content_type)];

        let identity: Identity = Credentials::new(
            creds.access_key_id.clone(),
            creds.secret.expose().to_string(),
            creds.token.as_ref().map(|t| t.expose().to_string()),
            None,
            "engine-aws",
        )
        .into();
        let signing_params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.target.region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Error::Signing(e.to_string()))?
            .into();
        let signable = SignableRequest::new("POST", url.as_str(), headers.iter().copied(), SignableBody::Bytes(body.as_bytes())).map_err(|e| Error::Signing(e.to_string()))?;
        let (instructions, _) = sign(signable, &signing_params).map_err(|e| Error::Signing(e.to_string()))?.into_parts();

        let mut req = self.http.post(&url).header("content-type", content_type).body(body);
        for (name, value) in instructions.headers() {
            req = req.header(name, value);
        }
        Ok(req)
    }

    /// One call: `action` with `params`, signed; returns the XML body of a 2xx answer.
    ///
    /// # Errors
    /// [`Error`]s classified by [`Error::kind`]: the provider's code stays in them.
    pub async fn call(&self, cx: &StepContext, action: &str, params: &[(String, String)]) -> Result<String, Error> {
        let req = self.signed(action, params)?;
        let send = req.send();
        let resp = tokio::select! {
            r = send => r.map_err(|e| Error::Transport { action: action.to_string(), endpoint: self.target.endpoint.clone(), detail: innermost(&e) })?,
            () = cx.cancelled() => return Err(Error::Cancelled(action.to_string())),
        };
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
        let text = resp.text().await.map_err(|e| Error::Transport { action: action.to_string(), endpoint: self.target.endpoint.clone(), detail: innermost(&e) })?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let (code, message) = parse_error(&text).unwrap_or_else(|| (format!("HTTP{status}"), text.chars().take(300).collect()));
        Err(Error::Api { action: action.to_string(), status, code, message, retry_after })
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

/// `(code, message)` of an EC2 error answer (`<Response><Errors><Error>`), or of the
/// `<ErrorResponse><Error>` other query services use.
#[must_use]
pub fn parse_error(xml: &str) -> Option<(String, String)> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let err = doc.descendants().find(|n| n.has_tag_name("Error"))?;
    let code = text(err, "Code")?;
    let message = text(err, "Message").unwrap_or_default();
    Some((code, message))
}

/// The text of the first child element called `name`.
#[must_use]
pub fn text(node: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    node.children().find(|c| c.is_element() && c.tag_name().name() == name).and_then(|c| c.text()).map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

/// The first child element called `name`.
#[must_use]
pub fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|c| c.is_element() && c.tag_name().name() == name)
}

/// The `<item>`s of the child list `name` (`instancesSet`, `tagSet`...).
pub fn items<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Vec<roxmltree::Node<'a, 'i>> {
    child(node, name).map(|l| l.children().filter(|c| c.is_element() && c.tag_name().name() == "item").collect()).unwrap_or_default()
}

/// Parses an answer.
///
/// # Errors
/// [`Error::Parse`] when it is not XML.
pub fn parse<'x>(action: &str, xml: &'x str) -> Result<roxmltree::Document<'x>, Error> {
    roxmltree::Document::parse(xml).map_err(|e| Error::Parse { action: action.to_string(), detail: e.to_string() })
}

/// Builds Query API parameters.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Empty.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
    /// One parameter.
    pub fn set(&mut self, k: impl Into<String>, v: impl Into<String>) -> &mut Self {
        self.0.push((k.into(), v.into()));
        self
    }
    /// A list: `Name.1`, `Name.2`...
    pub fn list<S: AsRef<str>>(&mut self, name: &str, values: &[S]) -> &mut Self {
        for (i, v) in values.iter().enumerate() {
            self.0.push((format!("{name}.{}", i + 1), v.as_ref().to_string()));
        }
        self
    }
    /// Filters: `Filter.N.Name`, `Filter.N.Value.M`.
    pub fn filters(&mut self, filters: &[(&str, Vec<String>)]) -> &mut Self {
        for (i, (name, values)) in filters.iter().enumerate() {
            let n = i + 1;
            self.0.push((format!("Filter.{n}.Name"), (*name).to_string()));
            for (j, v) in values.iter().enumerate() {
                self.0.push((format!("Filter.{n}.Value.{}", j + 1), v.clone()));
            }
        }
        self
    }
    /// The value of a parameter (for tests).
    #[must_use]
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(files: &[(&str, &str)], vars: &[(&str, &str)]) -> (tempfile::TempDir, Env) {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".aws")).unwrap();
        for (name, body) in files {
            std::fs::write(home.path().join(".aws").join(name), body).unwrap();
        }
        let mut v: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        v.push(("HOME".into(), home.path().display().to_string()));
        (home, Env::from_vars(v))
    }

    #[test]
    fn settings_beat_env_and_files() {
        let (_h, env) = env_with(&[("credentials", "[default]\naws_access_key_id=FILE\naws_secret_access_key=s\n")], &[("AWS_ACCESS_KEY_ID", "ENV"), ("AWS_SECRET_ACCESS_KEY", "e"), ("AWS_REGION", "eu-west-1")]);
        let s = Settings { access_key_id: Some("BLOCK".into()), secret_access_key: Some(Secret::new("x")), ..Settings::default() };
        let r = resolve(&s, None, &env).unwrap();
        assert_eq!(r.creds.unwrap().access_key_id, "BLOCK");
        assert_eq!(r.region, "eu-west-1");
        assert_eq!(r.endpoint, "https://ec2.eu-west-1.amazonaws.com");
        let r = resolve(&Settings::default(), Some("us-west-2"), &env).unwrap();
        assert_eq!(r.creds.unwrap().access_key_id, "ENV");
        assert_eq!(r.region, "us-west-2");
    }

    #[test]
    fn profiles_from_both_files_with_region() {
        let (_h, env) = env_with(
            &[
                ("credentials", "[default]\naws_access_key_id = DEF\naws_secret_access_key = s\n[work]\naws_access_key_id = WORK\naws_secret_access_key = w\naws_session_token = t\n"),
                ("config", "[default]\nregion = us-east-2\n[profile work]\nregion = eu-central-1\n[profile cfg]\naws_access_key_id = CFG\naws_secret_access_key = c\n[profile sso]\nsso_session = corp\n"),
            ],
            &[("AWS_PROFILE", "work")],
        );
        let r = resolve(&Settings::default(), None, &env).unwrap();
        assert_eq!(r.region, "eu-central-1");
        let c = r.creds.unwrap();
        assert_eq!(c.access_key_id, "WORK");
        assert!(c.token.is_some());
        assert_eq!(format!("{c:?}"), "Creds { source: \"profile work\", .. }");
        let s = Settings { profile: Some("cfg".into()), region: Some("us-east-1".into()), ..Settings::default() };
        assert_eq!(resolve(&s, None, &env).unwrap().creds.unwrap().access_key_id, "CFG");
        let s = Settings { profile: Some("sso".into()), region: Some("us-east-1".into()), ..Settings::default() };
        let r = resolve(&s, None, &env).unwrap();
        assert!(r.creds.is_none());
        assert!(r.creds_error.unwrap().contains("sso_session"));
        let s = Settings { profile: Some("default".into()), ..Settings::default() };
        let r = resolve(&s, None, &env).unwrap();
        assert_eq!((r.region.as_str(), r.creds.unwrap().access_key_id.as_str()), ("us-east-2", "DEF"));
    }

    #[test]
    fn endpoint_env_order_and_no_region() {
        let (_h, env) = env_with(&[], &[("AWS_ENDPOINT_URL", "http://generic:1"), ("AWS_ENDPOINT_URL_EC2", "http://ec2:2/"), ("AWS_DEFAULT_REGION", "ap-south-1")]);
        let r = resolve(&Settings::default(), None, &env).unwrap();
        assert_eq!(r.endpoint, "http://ec2:2");
        assert!(r.creds.is_none());
        assert!(r.creds_error.unwrap().contains("no AWS credentials"));
        let s = Settings { endpoint: Some("http://block:3".into()), ..Settings::default() };
        assert_eq!(resolve(&s, None, &env).unwrap().endpoint, "http://block:3");
        let (_h, env) = env_with(&[], &[("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"), ("AWS_CONFIG_FILE", "/nonexistent")]);
        let e = resolve(&Settings::default(), None, &env).unwrap_err();
        assert_eq!(e.kind, engine_connector::ErrorKind::Invalid);
        assert!(e.message.contains("no AWS region"));
        let r = resolve(&Settings::default(), Some("cn-north-1"), &env).unwrap();
        assert_eq!(r.endpoint, "https://ec2.cn-north-1.amazonaws.com.cn");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Settings { access_key_id: Some("AKIA".into()), secret_access_key: Some(Secret::new("topsecret")), session_token: Some(Secret::new("tok")), ..Settings::default() };
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("topsecret") && !dbg.contains("tok\""), "{dbg}");
    }

    #[test]
    fn parses_ec2_and_query_errors() {
        let x = "<?xml version=\"1.0\"?><Response><Errors><Error><Code>InsufficientInstanceCapacity</Code><Message>no</Message></Error></Errors><RequestID>r</RequestID></Response>";
        assert_eq!(parse_error(x), Some(("InsufficientInstanceCapacity".into(), "no".into())));
        let x = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>slow</Message></Error></ErrorResponse>";
        assert_eq!(parse_error(x), Some(("Throttling".into(), "slow".into())));
        assert_eq!(parse_error("not xml"), None);
    }
}
