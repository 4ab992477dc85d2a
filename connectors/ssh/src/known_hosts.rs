//! Reading OpenSSH `known_hosts` files, as `ssh` does: comma-separated host patterns with
//! `*`/`?` wildcards and `!` negation, `[host]:port` for ports other than 22, hashed
//! entries (`|1|salt|hash`, HMAC-SHA1), `@revoked` keys. `@cert-authority` lines are
//! skipped (host certificates are not offered), as are lines that do not parse.

use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use hmac::{KeyInit, Mac};
use russh::keys::{Algorithm, HashAlg, PublicKey};

/// The SHA-256 fingerprint of a key as OpenSSH prints it: `SHA256:` and unpadded base64.
#[must_use]
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// One usable line of a known_hosts file.
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    revoked: bool,
    patterns: String,
    key: PublicKey,
}

/// The entries of a known_hosts file.
#[derive(Debug, Clone, Default)]
pub(crate) struct KnownHosts {
    /// The file (for messages).
    pub path: Option<PathBuf>,
    /// Whether the file existed.
    pub exists: bool,
    entries: Vec<Entry>,
}

/// What a known_hosts file says about one host.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostEntries {
    /// Trusted keys, with their line numbers.
    pub keys: Vec<(usize, PublicKey)>,
    /// Revoked keys (`@revoked`), with their line numbers.
    pub revoked: Vec<(usize, PublicKey)>,
}

impl HostEntries {
    /// The algorithms of the trusted keys, first seen first, for the host-key preference.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut out: Vec<Algorithm> = Vec::new();
        for (_, k) in &self.keys {
            let a = k.algorithm();
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }
}

impl KnownHosts {
    /// Read a file; a missing one is empty.
    ///
    /// # Errors
    /// When the file exists but cannot be read.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self { path: Some(path.to_path_buf()), exists: true, entries: parse(&text) }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self { path: Some(path.to_path_buf()), exists: false, entries: Vec::new() }),
            Err(e) => Err(e),
        }
    }

    /// Parse the text of a file (for tests).
    #[cfg(test)]
    pub fn from_text(text: &str) -> Self {
        Self { path: None, exists: true, entries: parse(text) }
    }

    /// The entries for `host` on `port`.
    pub fn lookup(&self, host: &str, port: u16) -> HostEntries {
        let name = host_name(host, port);
        let mut out = HostEntries::default();
        for e in &self.entries {
            if host_matches(&e.patterns, &name) {
                if e.revoked {
                    out.revoked.push((e.line, e.key.clone()));
                } else {
                    out.keys.push((e.line, e.key.clone()));
                }
            }
        }
        out
    }

    /// `FILE:LINE` for messages.
    pub fn at(&self, line: usize) -> String {
        match &self.path {
            Some(p) => format!("{}:{line}", p.display()),
            None => format!("line {line}"),
        }
    }

    /// The file, for messages.
    pub fn shown(&self) -> String {
        self.path.as_ref().map_or_else(|| "known_hosts".to_string(), |p| p.display().to_string())
    }
}

/// The name a host is recorded under: `host`, or `[host]:port` when the port is not 22.
/// Host names are compared in lower case.
pub(crate) fn host_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

fn parse(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut revoked = false;
        if let Some(marker) = first.strip_prefix('@') {
            match marker {
                "revoked" => revoked = true,
                // Host certificates are never negotiated, so CA lines cannot apply.
                _ => continue,
            }
            first = match fields.next() {
                Some(f) => f,
                None => continue,
            };
        }
        let (Some(_key_type), Some(blob)) = (fields.next(), fields.next()) else { continue };
        let Ok(key) = russh::keys::parse_public_key_base64(blob) else { continue };
        out.push(Entry { line: i + 1, revoked, patterns: first.to_string(), key });
    }
    out
}

/// Whether a comma-separated pattern list matches `name`: some positive pattern (or hash)
/// matches and no negated one does.
fn host_matches(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for p in patterns.split(',') {
        if let Some(hashed) = p.strip_prefix("|1|") {
            matched |= hashed_matches(hashed, name);
        } else if let Some(neg) = p.strip_prefix('!') {
            if wildcard(&neg.to_ascii_lowercase(), name) {
                return false;
            }
        } else if wildcard(&p.to_ascii_lowercase(), name) {
            matched = true;
        }
    }
    matched
}

/// `salt|hash`, both base64: HMAC-SHA1 keyed by the salt over the name.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else { return false };
    let (Ok(salt), Ok(hash)) = (BASE64.decode(salt.as_bytes()), BASE64.decode(hash.as_bytes())) else { return false };
    let Ok(mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else { return false };
    mac.chain_update(name.as_bytes()).verify_slice(&hash).is_ok()
}

/// Glob match with `*` (any run) and `?` (one character).
fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two real ed25519 public keys.
    const K1: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const K2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";

    #[test]
    fn wildcards() {
        assert!(wildcard("*.example.com", "a.example.com"));
        assert!(!wildcard("*.example.com", "example.com"));
        assert!(wildcard("10.0.0.?", "10.0.0.7"));
        assert!(!wildcard("10.0.0.?", "10.0.0.17"));
        assert!(wildcard("*", "anything"));
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(!wildcard("a*b*c", "axxbyy"));
    }

    #[test]
    fn plain_ported_negated_and_revoked_entries() {
        let text = format!(
            "# comment\n\
             web1,web2 ssh-ed25519 {K1} user@x\n\
             [web1]:2222 ssh-ed25519 {K2}\n\
             *.lan,!bad.lan ssh-ed25519 {K1}\n\
             @revoked * ssh-ed25519 {K2}\n\
             @cert-authority *.lan ssh-ed25519 {K2}\n\
             broken line\n\
             WEB3\tssh-ed25519\t{K2}\n"
        );
        let kh = KnownHosts::from_text(&text);
        let web1 = kh.lookup("web1", 22);
        assert_eq!(web1.keys.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![2]);
        assert_eq!(web1.revoked.len(), 1);
        assert_eq!(web1.revoked[0].0, 5);
        assert_eq!(kh.lookup("web1", 2222).keys.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![3]);
        assert_eq!(kh.lookup("a.lan", 22).keys.len(), 1);
        assert!(kh.lookup("bad.lan", 22).keys.is_empty(), "negation wins");
        assert!(kh.lookup("web9", 22).keys.is_empty());
        assert_eq!(kh.lookup("web3", 22).keys.len(), 1, "tabs and upper case");
        assert_eq!(web1.algorithms(), vec![Algorithm::Ed25519]);
    }

    #[test]
    fn hashed_entries() {
        // `|1|salt|hash` with hash = HMAC-SHA1(salt, "[10.1.2.3]:2200"), made the way
        // `ssh-keygen -H` makes it; the integration tests check real ssh-keygen output.
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[10.1.2.3]:2200");
        let hash = mac.finalize().into_bytes();
        let line = format!("|1|{}|{} ssh-ed25519 {K1}\n", BASE64.encode(&salt), BASE64.encode(&hash));
        let kh = KnownHosts::from_text(&line);
        assert_eq!(kh.lookup("10.1.2.3", 2200).keys.len(), 1);
        assert!(kh.lookup("10.1.2.3", 22).keys.is_empty());
        assert!(kh.lookup("10.1.2.4", 2200).keys.is_empty());
    }

    #[test]
    fn fingerprints_look_like_openssh() {
        let k = russh::keys::parse_public_key_base64(K1).unwrap();
        let fp = fingerprint(&k);
        assert!(fp.starts_with("SHA256:") && !fp.ends_with('='), "{fp}");
        assert_eq!(fp.len(), "SHA256:".len() + 43);
    }
}
