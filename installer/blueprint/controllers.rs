//! The copies of the blueprint and the audit log on the controllers, in
//! `<data-dir>/airlock/`.
//!
//! A controller's audit log is only ever appended to: [`sync_log`] reads the copy's line count
//! and last-line digest, checks that the copy is a prefix of the local log, and appends the lines
//! it lacks. A copy that is not a prefix was changed or written by another run; it is reported,
//! never overwritten.

use crate::digest::Digest;
use crate::remote::{Host, HostError};
use crate::shell::quote;

use super::audit::{self, Head, MAX_LOG_SIZE};

/// The directory of airlock's files on a host with k0s data directory `data_dir`.
pub fn airlock_dir(data_dir: &str) -> String {
    format!("{}/airlock", data_dir.trim_end_matches('/'))
}

/// The path of `name` in a host's airlock directory.
pub fn remote_path(data_dir: &str, name: &str) -> String {
    format!("{}/{name}", airlock_dir(data_dir))
}

/// A controller's copy of the audit log that cannot be read, checked or extended.
#[derive(Debug, thiserror::Error)]
pub enum RemoteLogError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{host}: unexpected output {output:?} while reading {path}")]
    Parse {
        host: String,
        path: String,
        output: String,
    },
    #[error(
        "{host}: the audit log {path} has {remote} lines and its line {remote} differs from line {remote} of the local log: it was changed, or written by another run"
    )]
    Diverged {
        host: String,
        path: String,
        remote: u64,
    },
    #[error(
        "{host}: the audit log {path} has {remote} lines, more than the {local} of the local log"
    )]
    Ahead {
        host: String,
        path: String,
        remote: u64,
        local: u64,
    },
    #[error("{host}: the audit log {path} does not verify")]
    Broken {
        host: String,
        path: String,
        source: Box<audit::ChainError>,
    },
    #[error(
        "{host}: after appending, {path} has {found} lines ending in {digest}, expected {expected}"
    )]
    NotSynced {
        host: String,
        path: String,
        found: u64,
        digest: String,
        expected: u64,
    },
}

/// The line count of a remote log and the digest of its last line; `None` when it is missing.
pub async fn log_head(host: &Host, path: &str) -> Result<Option<Head>, RemoteLogError> {
    let quoted = quote(path);
    let script = format!(
        "if [ -f {quoted} ]; then printf '%s ' \"$(wc -l < {quoted})\"; \
         tail -n 1 {quoted} | tr -d '\\n' | sha256sum | cut -d' ' -f1; else echo missing; fi"
    );
    let output = host.run(&script).await?;
    let parse_error = || RemoteLogError::Parse {
        host: host.label().to_string(),
        path: path.to_string(),
        output: output.clone(),
    };
    let text = output.trim();
    if text == "missing" {
        return Ok(None);
    }
    let (lines, digest) = text.split_once(' ').ok_or_else(parse_error)?;
    let lines: u64 = lines.trim().parse().map_err(|_| parse_error())?;
    let digest = Digest::from_hex(digest.trim()).map_err(|_| parse_error())?;
    Ok(Some(Head { lines, digest }))
}

/// The sha256 of line `line` (from 1) of a remote log; `None` when the log is shorter.
pub async fn line_digest_at(
    host: &Host,
    path: &str,
    line: u64,
) -> Result<Option<Digest>, RemoteLogError> {
    let quoted = quote(path);
    let script = format!(
        "if [ \"$(wc -l < {quoted})\" -ge {line} ]; then \
         sed -n '{line}p' {quoted} | tr -d '\\n' | sha256sum | cut -d' ' -f1; fi"
    );
    let output = host.run(&script).await?;
    let text = output.trim();
    if text.is_empty() {
        return Ok(None);
    }
    Digest::from_hex(text)
        .map(Some)
        .map_err(|_| RemoteLogError::Parse {
            host: host.label().to_string(),
            path: path.to_string(),
            output: output.clone(),
        })
}

/// Reads the lines of a remote log after the first `skip`.
pub async fn read_log_after(host: &Host, path: &str, skip: u64) -> Result<String, RemoteLogError> {
    let quoted = quote(path);
    let script = format!(
        "size=$(stat -c %s {quoted}) || exit 1; \
         if [ \"$size\" -gt {MAX_LOG_SIZE} ]; then echo \"$size bytes is too large\" >&2; exit 4; fi; \
         tail -n +{} {quoted}",
        skip + 1
    );
    Ok(host.run(&script).await?)
}

/// Checks that a controller's copy described by `remote` is a prefix of the local log, whose
/// line digests are `digests`.
pub fn check_prefix(
    host: &str,
    path: &str,
    remote: &Head,
    digests: &[Digest],
) -> Result<(), RemoteLogError> {
    if remote.lines == 0 {
        return Ok(());
    }
    match digests.get(remote.lines as usize - 1) {
        Some(digest) if *digest == remote.digest => Ok(()),
        Some(_) => Err(RemoteLogError::Diverged {
            host: host.to_string(),
            path: path.to_string(),
            remote: remote.lines,
        }),
        None => Err(RemoteLogError::Ahead {
            host: host.to_string(),
            path: path.to_string(),
            remote: remote.lines,
            local: digests.len() as u64,
        }),
    }
}

/// Brings a controller's copy of the audit log up to the local log `text`: creates it when
/// missing, else appends the lines it lacks. Returns the copy's head as read back.
pub async fn sync_log(host: &Host, path: &str, text: &str) -> Result<Head, RemoteLogError> {
    let verified = audit::verify(text, None).map_err(|source| RemoteLogError::Broken {
        host: "local".to_string(),
        path: path.to_string(),
        source: Box::new(source),
    })?;
    let local = verified.head().unwrap_or(Head {
        lines: 0,
        digest: Digest::of_bytes(b""),
    });
    match log_head(host, path).await? {
        None => host.write_file(path, text.as_bytes(), "0600").await?,
        Some(remote) => {
            check_prefix(host.label(), path, &remote, &verified.digests)?;
            let missing: String = text
                .split_inclusive('\n')
                .skip(remote.lines as usize)
                .collect();
            if !missing.is_empty() {
                host.run_with_input(&format!("cat >> {}", quote(path)), missing.as_bytes())
                    .await?;
            }
        }
    }
    let after = log_head(host, path).await?.unwrap_or(Head {
        lines: 0,
        digest: Digest::of_bytes(b""),
    });
    if after.lines != local.lines || (local.lines > 0 && after.digest != local.digest) {
        return Err(RemoteLogError::NotSynced {
            host: host.label().to_string(),
            path: path.to_string(),
            found: after.lines,
            digest: after.digest.to_string(),
            expected: local.lines,
        });
    }
    Ok(after)
}
