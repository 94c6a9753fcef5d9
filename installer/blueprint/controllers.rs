//! The copies of the blueprint and the audit log on the controllers, in
//! `<data-dir>/airlock/`.
//!
//! A controller's audit log is only ever appended to: [`sync_log`] reads the copy's line count and
//! the sha256 of its whole content, checks that the copy equals the first lines of the local log,
//! and appends the lines it lacks. A copy that is not such a prefix was changed or written by
//! another run; it is reported, never overwritten.

use crate::digest::Digest;
use crate::remote::{Host, HostError};
use crate::shell::quote;

use super::audit::{self, Head, MAX_LOG_SIZE};

/// Returns the directory of airlock's files on a host with k0s data directory `data_dir`.
pub fn airlock_dir(data_dir: &str) -> String {
    format!("{}/airlock", data_dir.trim_end_matches('/'))
}

/// Returns the path of `name` in a host's airlock directory.
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
        "{host}: the audit log {path} has {remote} lines, and they differ from the first {remote} lines of the local log: one of the two was changed, or written by another run"
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
        "{host}: after appending, {path} has {found} lines that differ from the {expected} lines of the local log"
    )]
    NotSynced {
        host: String,
        path: String,
        found: u64,
        expected: u64,
    },
}

/// The state of a controller's copy of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteLog {
    pub head: Head,
    /// The sha256 of the whole file.
    pub content: Digest,
}

/// Reads the line count, last-line digest and content digest of a remote log; `None` when it
/// is missing.
pub async fn log_state(host: &Host, path: &str) -> Result<Option<RemoteLog>, RemoteLogError> {
    let quoted = quote(path);
    let script = format!(
        "if [ -f {quoted} ]; then printf '%s %s %s\\n' \"$(wc -l < {quoted})\" \
         \"$(tail -n 1 {quoted} | tr -d '\\n' | sha256sum | cut -d' ' -f1)\" \
         \"$(sha256sum < {quoted} | cut -d' ' -f1)\"; else echo missing; fi"
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
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [lines, last, content] = fields[..] else {
        return Err(parse_error());
    };
    Ok(Some(RemoteLog {
        head: Head {
            lines: lines.parse().map_err(|_| parse_error())?,
            digest: Digest::from_hex(last).map_err(|_| parse_error())?,
        },
        content: Digest::from_hex(content).map_err(|_| parse_error())?,
    }))
}

/// Hashes the first `lines` lines of a remote log on the host; `None` when it is shorter.
pub async fn prefix_digest(
    host: &Host,
    path: &str,
    lines: u64,
) -> Result<Option<Digest>, RemoteLogError> {
    let quoted = quote(path);
    let script = format!(
        "if [ \"$(wc -l < {quoted})\" -ge {lines} ]; then \
         head -n {lines} {quoted} | sha256sum | cut -d' ' -f1; fi"
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

/// Returns the first `lines` lines of `text`, newlines included.
pub fn first_lines(text: &str, lines: u64) -> &str {
    let end = text
        .split_inclusive('\n')
        .take(lines as usize)
        .map(str::len)
        .sum();
    &text[..end]
}

/// Checks that a controller's copy described by `remote` equals the first lines of the local
/// log `text`.
pub fn check_prefix(
    host: &str,
    path: &str,
    remote: &RemoteLog,
    text: &str,
) -> Result<(), RemoteLogError> {
    let local_lines = text.split_inclusive('\n').count() as u64;
    if remote.head.lines > local_lines {
        return Err(RemoteLogError::Ahead {
            host: host.to_string(),
            path: path.to_string(),
            remote: remote.head.lines,
            local: local_lines,
        });
    }
    if Digest::of_bytes(first_lines(text, remote.head.lines).as_bytes()) != remote.content {
        return Err(RemoteLogError::Diverged {
            host: host.to_string(),
            path: path.to_string(),
            remote: remote.head.lines,
        });
    }
    Ok(())
}

/// Brings a controller's copy of the audit log up to the local log `text`: creates it when
/// missing, else appends the lines it lacks. Returns the copy's head as read back, after
/// checking that the copy now equals the local log.
pub async fn sync_log(host: &Host, path: &str, text: &str) -> Result<Head, RemoteLogError> {
    let verified = audit::verify(text, None).map_err(|source| RemoteLogError::Broken {
        host: "local".to_string(),
        path: path.to_string(),
        source: Box::new(source),
    })?;
    match log_state(host, path).await? {
        None => host.write_file(path, text.as_bytes(), "0600").await?,
        Some(remote) => {
            check_prefix(host.label(), path, &remote, text)?;
            let missing: String = text
                .split_inclusive('\n')
                .skip(remote.head.lines as usize)
                .collect();
            if !missing.is_empty() {
                host.run_with_input(&format!("cat >> {}", quote(path)), missing.as_bytes())
                    .await?;
            }
        }
    }
    let after = log_state(host, path).await?;
    match after {
        Some(after) if after.content == Digest::of_bytes(text.as_bytes()) => Ok(after.head),
        _ => Err(RemoteLogError::NotSynced {
            host: host.label().to_string(),
            path: path.to_string(),
            found: after.map_or(0, |after| after.head.lines),
            expected: verified.entries.len() as u64,
        }),
    }
}
