//! Writing files on the host over an exec channel (`cat` into a temporary file beside the
//! destination, checked, then renamed): no SFTP subsystem needed, works with `sudo`, and a
//! half-written file never replaces the old one.

use std::io::Cursor;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use engine_connector::{ConnectorError, LogStream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::Error;
use crate::session::{shell_quote, Session};

/// What to upload.
#[derive(Debug, Clone)]
pub enum UploadSource {
    /// A local file, streamed in chunks (never read whole into memory).
    File(PathBuf),
    /// Bytes held in memory.
    Bytes(Vec<u8>),
}

/// How to upload.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// Permission bits (`0o644`); `None` keeps those of the file being replaced, else `0644`.
    pub mode: Option<u32>,
    /// Create missing parent directories (`mkdir -p`).
    pub create_dirs: bool,
    /// Write as root through `sudo -n`.
    pub sudo: bool,
}

/// What was uploaded, as checked on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The remote path.
    pub path: String,
    /// Bytes written.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex (computed here, and checked on the host when
    /// it has `sha256sum`).
    pub sha256: String,
    /// The file's permission bits, four octal digits (`0644`).
    pub mode: String,
    /// Whether the host computed the checksum too (else only the size was compared).
    pub checksum_verified: bool,
}

/// Hashes and counts what passes through, and reports progress.
struct Hashing<'a, R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    total: u64,
    last_percent: u8,
    progress: &'a (dyn Fn(u8) + Send + Sync),
}

impl<R: AsyncRead + Unpin> AsyncRead for Hashing<'_, R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            this.hasher.update(new);
            this.bytes += new.len() as u64;
            if let Some(pct) = (this.bytes.min(this.total) * 100).checked_div(this.total) {
                let pct = u8::try_from(pct.min(100)).unwrap_or(100);
                if pct >= this.last_percent.saturating_add(5) {
                    this.last_percent = pct;
                    (this.progress)(pct);
                }
            }
        }
        r
    }
}

/// Run a generated `sh` script on the host, as root with `sudo`.
fn sh(script: &str, sudo: bool) -> String {
    let cmd = format!("sh -c {}", shell_quote(script));
    if sudo {
        format!("sudo -n -- {cmd}")
    } else {
        cmd
    }
}

impl Session {
    /// Write `source` to `remote_path` on the host: into a temporary file in the same
    /// directory, whose size and SHA-256 are compared with what was sent, then renamed over
    /// `remote_path` (atomic: readers never see half a file). A local file is streamed in
    /// 32 KiB chunks. Progress is reported for files over 1 MiB.
    ///
    /// # Errors
    /// `invalid` when the host refuses (no such directory without `create_dirs`, permission,
    /// `remote_path` is a directory), `auth` when `sudo` needs a password, `transient` when
    /// the content arrived damaged or the connection failed, `cancelled`.
    pub async fn upload(&self, source: UploadSource, remote_path: &str, options: &UploadOptions) -> Result<Uploaded, ConnectorError> {
        self.upload_inner(source, remote_path, options).await.map_err(ConnectorError::from)
    }

    async fn upload_inner(&self, source: UploadSource, remote_path: &str, options: &UploadOptions) -> Result<Uploaded, Error> {
        if remote_path.is_empty() || remote_path.ends_with('/') {
            return Err(Error::Config(format!("remote path `{remote_path}` must name a file")));
        }
        let cx = self.cx().clone();
        let (mut reader, total): (Box<dyn AsyncRead + Send + Unpin>, u64) = match source {
            UploadSource::File(path) => {
                let f = tokio::fs::File::open(&path).await.map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
                let len = f.metadata().await.map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?.len();
                (Box::new(f), len)
            }
            UploadSource::Bytes(b) => {
                let len = b.len() as u64;
                (Box::new(Cursor::new(b)), len)
            }
        };
        let progress_cx = cx.clone();
        let report = move |pct: u8| progress_cx.progress("uploading", Some(pct));
        let quiet = |_: u8| {};
        let mut hashing = Hashing {
            inner: &mut reader,
            hasher: Sha256::new(),
            bytes: 0,
            total,
            last_percent: 0,
            progress: if total > (1 << 20) { &report } else { &quiet },
        };

        let p = shell_quote(remote_path);
        let make_dir = if options.create_dirs {
            r#"mkdir -p -- "$d""#.to_string()
        } else {
            r#"echo "no directory $d on this host (set create_dirs)" >&2; exit 3"#.to_string()
        };
        let stage = format!(
            r#"set -e
p={p}
d=$(dirname -- "$p")
if [ -d "$p" ]; then echo "$p is a directory" >&2; exit 3; fi
if [ ! -d "$d" ]; then {make_dir}; fi
t=$(mktemp "$d/.engine-upload.XXXXXXXXXX")
trap 'rm -f -- "$t"' EXIT
cat > "$t"
s=$(wc -c < "$t")
h=$(sha256sum < "$t" 2>/dev/null) || h=-
trap - EXIT
printf '%s\n%s\n%s\n' "$t" $s "${{h%% *}}"
"#
        );
        let out = self.exec_inner(&sh(&stage, options.sudo), Some(&mut hashing), false).await?;
        let sent = hashing.bytes;
        let local_sum = hex(&hashing.hasher.finalize());
        if !out.success() {
            return Err(self.upload_failure(&out, remote_path, options.sudo));
        }
        let mut lines = out.stdout.lines();
        let (Some(temp), Some(size), Some(sum)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(Error::Lost(format!("unexpected answer from {} while uploading to {remote_path}: {:?}", self.addr(), out.stdout)));
        };
        let temp = temp.to_string();
        let size: u64 = size.trim().parse().unwrap_or(u64::MAX);
        let verified = sum != "-";
        if size != sent || (verified && sum != local_sum) {
            let _ = self.exec_inner(&sh(&format!("rm -f -- {}", shell_quote(&temp)), options.sudo), None, false).await;
            return Err(Error::Lost(format!(
                "the upload to {}:{remote_path} arrived damaged: sent {sent} bytes with sha256 {local_sum}, the host has {size} bytes \
                 with sha256 {sum}",
                self.addr()
            )));
        }
        if !verified {
            cx.log(LogStream::Stderr, &format!("warning: {} has no sha256sum; the upload to {remote_path} was checked by its size only", self.addr()));
        }

        let mode = match options.mode {
            Some(m) => format!("m={m:o}"),
            None => r#"m=$(stat -c %a -- "$p" 2>/dev/null) || m=644"#.to_string(),
        };
        let commit = format!(
            r#"set -e
t={t}
p={p}
trap 'rm -f -- "$t"' EXIT
{mode}
chmod "$m" "$t"
mv -f -- "$t" "$p"
trap - EXIT
stat -c %a -- "$p" 2>/dev/null || echo "$m"
"#,
            t = shell_quote(&temp),
        );
        let out = self.exec_inner(&sh(&commit, options.sudo), None, false).await?;
        if !out.success() {
            return Err(self.upload_failure(&out, remote_path, options.sudo));
        }
        let mode = out.stdout.trim();
        let mode = format!("{:0>4}", if mode.is_empty() { "644" } else { mode });
        Ok(Uploaded { path: remote_path.to_string(), size: sent, sha256: local_sum, mode, checksum_verified: verified })
    }

    fn upload_failure(&self, out: &crate::session::ExecOutput, remote_path: &str, sudo: bool) -> Error {
        if sudo {
            if let Some(e) = crate::run::sudo_failure(out, self.addr(), self.user()) {
                return e;
            }
        }
        match self.failure(out, &format!("writing {remote_path}")) {
            Some(e) => e,
            None => Error::Lost(format!("writing {remote_path} on {} failed", self.addr())),
        }
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_sha256() {
        assert_eq!(hex(&Sha256::digest(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[tokio::test]
    async fn hashing_reader_counts_hashes_and_reports() {
        let data = vec![7u8; 3 << 20];
        let seen = std::sync::Mutex::new(Vec::new());
        let report = |p: u8| seen.lock().unwrap().push(p);
        let mut h = Hashing { inner: Cursor::new(data.clone()), hasher: Sha256::new(), bytes: 0, total: data.len() as u64, last_percent: 0, progress: &report };
        let mut sink = Vec::new();
        tokio::io::copy(&mut h, &mut sink).await.unwrap();
        assert_eq!(h.bytes, data.len() as u64);
        assert_eq!(hex(&h.hasher.finalize()), hex(&Sha256::digest(&data)));
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.last(), Some(&100));
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }
}
