//! `aws.ami.lookup`: the newest Deep Learning AMI of a region, cached, with a fallback to a
//! standard Ubuntu AMI (whose user data must then install the driver).
//!
//! ## What it does
//! `DescribeImages` (owner `amazon`, `state=available`, the architecture, the Deep Learning AMI
//! name patterns) and takes the newest by `creationDate`. When none matches and `fallback` is on,
//! the same for Canonical's Ubuntu 22.04 images (owner `099720109477`) and says so:
//! `fallback: true` with a `reason`. Answers are cached per endpoint, region, architecture and
//! patterns for [`CACHE_TTL`] in the process, and in `ami_cache_file` when that setting is given.
//! ## Undo
//! Nothing to undo.
//! ## Errors
//! `not_found` when neither finds an image; EC2's errors as classified in [`crate::error`].
//! ## Example
//! `uses: aws.ami.lookup` `with: {region: us-east-1}`

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use engine_connector::{Action, ConnectorError, LogStream, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::client::{items, parse, text, Ec2, Params, Settings};

/// How long a lookup is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(6 * 3600);
/// The Deep Learning AMI name patterns, preferred first.
pub const DLAMI_PATTERNS: &[&str] = &["Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *", "Deep Learning AMI (Ubuntu 22.04) *", "Deep Learning OSS Nvidia Driver AMI GPU PyTorch * (Ubuntu 22.04) *"];
/// Canonical's account.
pub const CANONICAL: &str = "099720109477";

/// Input of `aws.ami.lookup`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmiLookupInput {
    /// Region (default: the connector's).
    #[serde(default)]
    pub region: Option<String>,
    /// `x86_64` (default) or `arm64`.
    #[serde(default = "default_arch")]
    pub architecture: String,
    /// Name patterns of the GPU image (`*` wildcards); default: the Deep Learning AMIs for Ubuntu 22.04.
    #[serde(default)]
    pub name_patterns: Option<Vec<String>>,
    /// Owners of the GPU image (default `amazon`).
    #[serde(default)]
    pub owners: Option<Vec<String>>,
    /// Fall back to a standard Ubuntu AMI (default true).
    #[serde(default = "yes")]
    pub fallback: bool,
    /// Name patterns of the fallback image (default Canonical's Ubuntu 22.04 server images).
    #[serde(default)]
    pub fallback_name_patterns: Option<Vec<String>>,
    /// Use cached answers (default true).
    #[serde(default = "yes")]
    pub cache: bool,
}

fn default_arch() -> String {
    "x86_64".into()
}
fn yes() -> bool {
    true
}

/// Output of `aws.ami.lookup`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AmiLookupOutput {
    /// The AMI id.
    pub image_id: String,
    /// Its name.
    pub name: String,
    /// When it was made.
    pub creation_date: String,
    /// Owner account.
    pub owner_id: String,
    /// Architecture.
    pub architecture: String,
    /// Root device (`/dev/sda1`).
    pub root_device_name: String,
    /// Region.
    pub region: String,
    /// True when no Deep Learning AMI was found and a standard one was taken.
    pub fallback: bool,
    /// Why the fallback was taken.
    pub reason: Option<String>,
    /// Whether the user data must install the NVIDIA driver (true with the fallback).
    pub driver_install_needed: bool,
    /// The login user.
    pub ssh_user: String,
    /// Whether the answer came from the cache.
    pub cached: bool,
}

/// `aws.ami.lookup`.
#[derive(Debug, Clone, Default)]
pub struct AmiLookup;

type CacheMap = HashMap<String, (u64, AmiLookupOutput)>;

fn memory() -> &'static Mutex<CacheMap> {
    static CACHE: OnceLock<Mutex<CacheMap>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn validate_arch(a: &str) -> Result<(), ConnectorError> {
    if matches!(a, "x86_64" | "arm64") {
        Ok(())
    } else {
        Err(ConnectorError::invalid(format!("unknown architecture {a:?}: use x86_64 or arm64")))
    }
}

#[async_trait]
impl Action for AmiLookup {
    const ID: &'static str = "aws.ami.lookup";
    const DESCRIPTION: &'static str = "newest Deep Learning AMI of a region (cached), else a standard Ubuntu AMI plus driver install";
    type Input = AmiLookupInput;
    type Output = AmiLookupOutput;

    fn validate(&self, input: &Self::Input) -> Result<(), ConnectorError> {
        validate_arch(&input.architecture)
    }

    async fn run(&self, input: Self::Input, cx: &StepContext) -> Result<Self::Output, ConnectorError> {
        let ec2 = Ec2::for_step(cx, input.region.as_deref())?;
        let settings = Settings::from_context(cx)?;
        lookup(&ec2, cx, &input, settings.ami_cache_file.as_deref()).await
    }
}

/// The lookup itself (used by `aws.instance.create` with `ami: auto`).
///
/// # Errors
/// `not_found` when no image matches; EC2's errors.
pub async fn lookup(ec2: &Ec2, cx: &StepContext, input: &AmiLookupInput, cache_file: Option<&std::path::Path>) -> Result<AmiLookupOutput, ConnectorError> {
    validate_arch(&input.architecture)?;
    let patterns: Vec<String> = input.name_patterns.clone().unwrap_or_else(|| DLAMI_PATTERNS.iter().map(|s| (*s).to_string()).collect());
    let owners: Vec<String> = input.owners.clone().unwrap_or_else(|| vec!["amazon".into()]);
    let arch_word = if input.architecture == "arm64" { "arm64" } else { "amd64" };
    let fallback_patterns: Vec<String> = input
        .fallback_name_patterns
        .clone()
        .unwrap_or_else(|| vec![format!("ubuntu/images/hvm-ssd-gp3/ubuntu-jammy-22.04-{arch_word}-server-*"), format!("ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-{arch_word}-server-*")]);
    let cache_key = format!("{}|{}|{}|{}|{}|{}|{}", ec2.target.endpoint, ec2.region(), input.architecture, patterns.join(","), owners.join(","), input.fallback, fallback_patterns.join(","));

    if input.cache {
        let now = now_secs();
        if let Some((at, out)) = memory().lock().map_err(|_| ConnectorError::invalid("ami cache lock poisoned"))?.get(&cache_key) {
            if now.saturating_sub(*at) < CACHE_TTL.as_secs() {
                return Ok(AmiLookupOutput { cached: true, ..out.clone() });
            }
        }
        if let Some(path) = cache_file {
            let file: CacheMap = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
            if let Some((at, out)) = file.get(&cache_key) {
                if now.saturating_sub(*at) < CACHE_TTL.as_secs() {
                    memory().lock().map_err(|_| ConnectorError::invalid("ami cache lock poisoned"))?.insert(cache_key.clone(), (*at, out.clone()));
                    return Ok(AmiLookupOutput { cached: true, ..out.clone() });
                }
            }
        }
    }

    let mut out = match newest(ec2, cx, &owners, &patterns, &input.architecture).await? {
        Some(img) => AmiLookupOutput { fallback: false, reason: None, driver_install_needed: false, ..img },
        None if input.fallback => {
            let reason = format!("no Deep Learning AMI matching {patterns:?} (owners {owners:?}) in {}; using a standard Ubuntu AMI and installing the NVIDIA driver in user data", ec2.region());
            cx.log(LogStream::Stderr, &reason);
            let img = newest(ec2, cx, &[CANONICAL.to_string(), "amazon".to_string()], &fallback_patterns, &input.architecture).await?.ok_or_else(|| {
                ConnectorError::not_found(format!("no Deep Learning AMI matching {patterns:?} and no Ubuntu AMI matching {fallback_patterns:?} for {} in {}", input.architecture, ec2.region()))
            })?;
            AmiLookupOutput { fallback: true, reason: Some(reason), driver_install_needed: true, ..img }
        }
        None => return Err(ConnectorError::not_found(format!("no Deep Learning AMI matching {patterns:?} (owners {owners:?}) for {} in {}", input.architecture, ec2.region()))),
    };
    out.cached = false;
    let at = now_secs();
    memory().lock().map_err(|_| ConnectorError::invalid("ami cache lock poisoned"))?.insert(cache_key.clone(), (at, out.clone()));
    if let Some(path) = cache_file {
        let mut file: CacheMap = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        file.insert(cache_key, (at, out.clone()));
        if let Ok(text) = serde_json::to_string_pretty(&file) {
            // Best effort: a cache that cannot be written only costs a lookup next time.
            if let Err(e) = std::fs::write(path, text) {
                cx.log(LogStream::Stderr, &format!("failed to write the AMI cache {}: {e}", path.display()));
            }
        }
    }
    Ok(out)
}

async fn newest(ec2: &Ec2, cx: &StepContext, owners: &[String], patterns: &[String], arch: &str) -> Result<Option<AmiLookupOutput>, ConnectorError> {
    let mut p = Params::new();
    p.list("Owner", owners).filters(&[("name", patterns.to_vec()), ("state", vec!["available".into()]), ("architecture", vec![arch.into()])]);
    let xml = ec2.call(cx, "DescribeImages", &p.0).await?;
    let doc = parse("DescribeImages", &xml)?;
    let images = parse_images(doc.root_element(), ec2.region());
    Ok(images.into_iter().max_by(|a, b| a.creation_date.cmp(&b.creation_date).then_with(|| a.name.cmp(&b.name))))
}

/// Images of a `DescribeImages` answer.
#[must_use]
pub fn parse_images(root: roxmltree::Node<'_, '_>, region: &str) -> Vec<AmiLookupOutput> {
    items(root, "imagesSet")
        .into_iter()
        .map(|i| {
            let name = text(i, "name").unwrap_or_default();
            let lower = name.to_ascii_lowercase();
            AmiLookupOutput {
                image_id: text(i, "imageId").unwrap_or_default(),
                creation_date: text(i, "creationDate").unwrap_or_default(),
                owner_id: text(i, "imageOwnerId").unwrap_or_default(),
                architecture: text(i, "architecture").unwrap_or_default(),
                root_device_name: text(i, "rootDeviceName").unwrap_or_else(|| "/dev/sda1".into()),
                region: region.to_string(),
                fallback: false,
                reason: None,
                driver_install_needed: false,
                ssh_user: ssh_user_for(&lower).into(),
                cached: false,
                name,
            }
        })
        .collect()
}

/// The login user of an image, from its name.
#[must_use]
pub fn ssh_user_for(lower_name: &str) -> &'static str {
    if lower_name.contains("amazon linux") || lower_name.starts_with("amzn") || lower_name.starts_with("al20") {
        "ec2-user"
    } else if lower_name.contains("ubuntu") || lower_name.contains("deep learning") {
        "ubuntu"
    } else if lower_name.contains("debian") {
        "admin"
    } else {
        "ec2-user"
    }
}

/// `DescribeImages` of one id: its root device and name.
///
/// # Errors
/// `invalid` when the image does not exist.
pub async fn describe_one(ec2: &Ec2, cx: &StepContext, id: &str) -> Result<AmiLookupOutput, ConnectorError> {
    let mut p = Params::new();
    p.set("ImageId.1", id);
    let xml = ec2.call(cx, "DescribeImages", &p.0).await?;
    let doc = parse("DescribeImages", &xml)?;
    parse_images(doc.root_element(), ec2.region()).into_iter().next().ok_or_else(|| ConnectorError::invalid(format!("AMI {id} does not exist in {} (or is not shared with this account)", ec2.region())))
}
