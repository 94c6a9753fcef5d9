//! The audit log: one JSON line per action airlock took on a host, hash-chained.
//!
//! Each line is a JSON object with the fields of [`Entry`], written in a fixed order. `prev` is
//! the sha256 of the previous line's bytes (without its newline), and the first line's `prev` is
//! the digest of the bundle the first run installed. So editing, removing or reordering a line
//! breaks the chain at that line, and [`verify`] names it. The last line has no successor that
//! records its digest, so each run also writes `audit.log.head` ([`Head`]): the line count and the
//! sha256 of the last line, which the blueprint repeats and `--sign-blueprint` signs.
//!
//! The file is only ever appended to: [`AuditLog::append`] opens it with `O_APPEND` and syncs
//! each line before returning.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// The file name of the audit log, locally and on controllers.
pub const FILE_NAME: &str = "audit.log";
/// The file name of the head record beside the audit log.
pub const HEAD_FILE_NAME: &str = "audit.log.head";
/// The `result` of an action that succeeded.
pub const RESULT_OK: &str = "ok";

/// The largest audit log airlock reads into memory: about 200,000 entries of some 330 bytes.
pub const MAX_LOG_SIZE: u64 = 64 << 20;

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The line number, from 1.
    pub seq: u64,
    /// When the action finished, RFC 3339 in UTC.
    pub time: String,
    /// The user who ran airlock, as `user@machine`.
    pub operator: String,
    /// The airlock version that took the action.
    pub airlock: String,
    /// The command: `apply` or `upgrade`.
    pub command: String,
    pub phase: String,
    /// The host as the cluster file names it (`address` or `address:port`), or `local` for
    /// actions on the machine running airlock.
    pub host: String,
    pub action: String,
    /// The digest of the artifact or file the action placed, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// `ok`, or `failed: <reason>`.
    pub result: String,
    /// The sha256 of the previous line; for the first line, the digest of the bundle.
    pub prev: Digest,
}

/// An action before it takes its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    pub time: String,
    pub phase: String,
    pub host: String,
    pub action: String,
    pub digest: Option<Digest>,
    pub result: String,
}

/// The fields every entry of one run shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunIdentity {
    pub operator: String,
    pub airlock: String,
    pub command: String,
}

impl RunIdentity {
    /// The identity of this process: the invoking user (`SUDO_USER` before `USER`) at this
    /// machine's hostname, and this airlock's version.
    pub fn this_process(command: &str) -> RunIdentity {
        let user = ["SUDO_USER", "USER", "LOGNAME"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
            .unwrap_or_else(user_of_this_process);
        let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        RunIdentity {
            operator: format!("{user}@{machine}"),
            airlock: env!("CARGO_PKG_VERSION").to_string(),
            command: command.to_string(),
        }
    }
}

/// Looks up this process's user in `/etc/passwd`; `uid N` when it has no name there.
fn user_of_this_process() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .unwrap_or("unknown")
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.get(2) == Some(&uid.as_str()))
        .and_then(|fields| fields.first().map(|name| name.to_string()))
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The line count and the digest of the last line: what the chain alone cannot protect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Head {
    pub lines: u64,
    /// The sha256 of the last line; for an empty log, the digest the first line will chain to.
    pub digest: Digest,
}

impl Head {
    /// Returns the text of `audit.log.head`: one JSON object and a newline.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n",
            serde_json::to_string(self).expect("a head always serializes")
        )
    }

    pub fn parse(text: &str) -> Result<Head, serde_json::Error> {
        serde_json::from_str(text.trim())
    }
}

/// Hashes one line, without its newline.
pub fn line_digest(line: &str) -> Digest {
    Digest::of_bytes(line.as_bytes())
}

/// A log that does not verify, with the line (from 1) where the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("line {line} is not a valid audit entry: {reason}")]
    Malformed { line: u64, reason: String },
    #[error("line {line} holds entry {found}: entry {line} was removed or lines were reordered")]
    OutOfOrder { line: u64, found: u64 },
    #[error(
        "line {line} was changed: its sha256 is {computed}, but line {next} records {recorded}"
    )]
    Changed {
        line: u64,
        next: u64,
        computed: Digest,
        recorded: Digest,
    },
    #[error(
        "line {line} was changed: its sha256 is {computed}, but the head record names {recorded}"
    )]
    HeadChanged {
        line: u64,
        computed: Digest,
        recorded: Digest,
    },
    #[error(
        "the log ends at line {lines}, but the head record counts {recorded} lines: line {} and later were removed",
        lines + 1
    )]
    Truncated { lines: u64, recorded: u64 },
    #[error("line {line} does not end with a newline: the log was cut off while it was written")]
    Unterminated { line: u64 },
}

impl ChainError {
    /// Returns the first broken line.
    pub fn line(&self) -> u64 {
        match self {
            ChainError::Malformed { line, .. }
            | ChainError::OutOfOrder { line, .. }
            | ChainError::Changed { line, .. }
            | ChainError::HeadChanged { line, .. }
            | ChainError::Unterminated { line } => *line,
            ChainError::Truncated { lines, .. } => lines + 1,
        }
    }
}

/// The content of a verified log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub entries: Vec<Entry>,
    /// The digests of the lines, in order.
    pub digests: Vec<Digest>,
    /// The digest the first line chains to: the bundle of the first run.
    pub genesis: Option<Digest>,
    /// How many lines follow the head record's last line; a run that stopped before writing
    /// the head leaves such lines.
    pub after_head: u64,
}

impl Verified {
    pub fn head(&self) -> Option<Head> {
        self.digests.last().map(|digest| Head {
            lines: self.digests.len() as u64,
            digest: *digest,
        })
    }
}

/// Checks the chain of a whole log and, when `head` is given, that the log still contains the
/// line it names. Returns the entries, or the first broken line.
///
/// A changed line is found through the record of its digest: its successor's `prev`, or the
/// head record for the last line. When the successor's own link is broken too, the successor is
/// the changed line (its `prev` field was edited), so it is named instead.
pub fn verify(text: &str, head: Option<&Head>) -> Result<Verified, ChainError> {
    let parsed: Vec<Result<(Entry, Digest), ChainError>> = text
        .split_inclusive('\n')
        .enumerate()
        .map(|(index, raw)| parse_line(index as u64 + 1, raw))
        .collect();
    let count = parsed.len();

    // The digest recorded for line `line` (from 1): the next line's prev, or the head's.
    let recorded_for = |line: usize| -> Option<Digest> {
        match parsed.get(line) {
            Some(Ok((next, _))) => Some(next.prev),
            Some(Err(_)) => None,
            None => head
                .filter(|head| head.lines == line as u64)
                .map(|head| head.digest),
        }
    };
    let link_broken = |line: usize| -> bool {
        match (&parsed[line - 1], recorded_for(line)) {
            (Ok((_, digest)), Some(recorded)) => *digest != recorded,
            _ => false,
        }
    };
    let changed = |line: usize| -> ChainError {
        let computed = parsed[line - 1]
            .as_ref()
            .map(|(_, digest)| *digest)
            .expect("parsed");
        let recorded = recorded_for(line).expect("a broken link has a recorded digest");
        if line < count {
            ChainError::Changed {
                line: line as u64,
                next: line as u64 + 1,
                computed,
                recorded,
            }
        } else {
            ChainError::HeadChanged {
                line: line as u64,
                computed,
                recorded,
            }
        }
    };

    for line in 1..=count {
        if let Err(error) = &parsed[line - 1] {
            return Err(error.clone());
        }
        if line > 1 && link_broken(line - 1) {
            return Err(match link_broken(line) {
                true => changed(line),
                false => changed(line - 1),
            });
        }
    }
    if count > 0 && link_broken(count) {
        return Err(changed(count));
    }

    let (entries, digests): (Vec<Entry>, Vec<Digest>) = parsed
        .into_iter()
        .map(|line| line.expect("checked above"))
        .unzip();
    let mut after_head = 0;
    if let Some(head) = head {
        let count = count as u64;
        if head.lines > count {
            return Err(ChainError::Truncated {
                lines: count,
                recorded: head.lines,
            });
        }
        if head.lines > 0 && head.lines < count {
            let line = head.lines as usize;
            if digests[line - 1] != head.digest {
                return Err(ChainError::HeadChanged {
                    line: head.lines,
                    computed: digests[line - 1],
                    recorded: head.digest,
                });
            }
        }
        after_head = count - head.lines;
    }
    Ok(Verified {
        genesis: entries.first().map(|entry| entry.prev),
        entries,
        digests,
        after_head,
    })
}

/// Parses line `number` (with its newline) and checks its sequence number.
fn parse_line(number: u64, raw: &str) -> Result<(Entry, Digest), ChainError> {
    let line = raw
        .strip_suffix('\n')
        .ok_or(ChainError::Unterminated { line: number })?;
    let entry: Entry = serde_json::from_str(line).map_err(|error| ChainError::Malformed {
        line: number,
        reason: error.to_string(),
    })?;
    if entry.seq != number {
        return Err(ChainError::OutOfOrder {
            line: number,
            found: entry.seq,
        });
    }
    Ok((entry, line_digest(line)))
}

/// The audit log file, open for appending.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    lines: u64,
    /// The digest the next line chains to.
    last: Digest,
}

/// An audit log that cannot be read, verified or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    #[error("cannot read the audit log {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "the audit log {path} is {size} bytes, more than the {MAX_LOG_SIZE} bytes airlock reads"
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("the audit log {path} does not verify")]
    Broken { path: PathBuf, source: ChainError },
    #[error("cannot write the audit log {path}")]
    Write { path: PathBuf, source: io::Error },
}

/// Reads a local log; `None` when the file does not exist.
pub fn read_log(path: &Path) -> Result<Option<String>, AuditLogError> {
    let read_error = |source| AuditLogError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = match std::fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(read_error(error)),
    };
    if size > MAX_LOG_SIZE {
        return Err(AuditLogError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    std::fs::read_to_string(path).map(Some).map_err(read_error)
}

impl AuditLog {
    /// Opens the log at `path` for appending, after checking its chain; a missing file is
    /// created, and its first line will chain to `genesis`.
    pub fn open(path: &Path, genesis: Digest) -> Result<AuditLog, AuditLogError> {
        let text = read_log(path)?.unwrap_or_default();
        let verified = verify(&text, None).map_err(|source| AuditLogError::Broken {
            path: path.to_path_buf(),
            source,
        })?;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| AuditLogError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|source| AuditLogError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        let head = verified.head();
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
            lines: head.map_or(0, |head| head.lines),
            last: head.map_or(genesis, |head| head.digest),
        })
    }

    /// Appends one entry, chained to the last line, and syncs it to disk.
    pub fn append(&mut self, identity: &RunIdentity, draft: Draft) -> Result<Entry, AuditLogError> {
        let entry = Entry {
            seq: self.lines + 1,
            time: draft.time,
            operator: identity.operator.clone(),
            airlock: identity.airlock.clone(),
            command: identity.command.clone(),
            phase: draft.phase,
            host: draft.host,
            action: draft.action,
            digest: draft.digest,
            result: draft.result,
            prev: self.last,
        };
        let line = serde_json::to_string(&entry).expect("an audit entry always serializes");
        let write_error = |source| AuditLogError::Write {
            path: self.path.clone(),
            source,
        };
        self.file
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(write_error)?;
        self.lines += 1;
        self.last = line_digest(&line);
        Ok(entry)
    }

    pub fn head(&self) -> Head {
        Head {
            lines: self.lines,
            digest: self.last,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The audit log of one run: entries wait in memory until the log is open (the first phases
/// run before the bundle digest and the controllers' copies are known), then each is appended
/// as it is recorded.
#[derive(Debug)]
pub struct AuditTrail {
    identity: RunIdentity,
    pending: Vec<Draft>,
    log: Option<AuditLog>,
    /// The first write that failed; later entries stay pending so that the log is never left
    /// with a gap.
    failure: Option<String>,
}

impl AuditTrail {
    pub fn new(identity: RunIdentity) -> AuditTrail {
        AuditTrail {
            identity,
            pending: Vec::new(),
            log: None,
            failure: None,
        }
    }

    pub fn identity(&self) -> &RunIdentity {
        &self.identity
    }

    /// Appends an entry, or keeps it until the log is open.
    pub fn record(&mut self, draft: Draft) {
        self.pending.push(draft);
        self.flush();
    }

    /// Opens the trail onto `log` and appends the entries recorded so far.
    pub fn attach(&mut self, log: AuditLog) {
        self.log = Some(log);
        self.flush();
    }

    fn flush(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let Some(log) = &mut self.log else { return };
        while !self.pending.is_empty() {
            let draft = self.pending.remove(0);
            if let Err(error) = log.append(&self.identity, draft.clone()) {
                tracing::error!(path = %log.path().display(), error = %format!("{error:#}"), "cannot append to the audit log");
                self.failure = Some(format!(
                    "{}: {}",
                    error,
                    std::error::Error::source(&error)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ));
                self.pending.insert(0, draft);
                return;
            }
        }
    }

    /// Returns the open log, once the phase that opens it has run.
    pub fn log(&self) -> Option<&AuditLog> {
        self.log.as_ref()
    }

    /// Returns why an entry could not be written, if one could not.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Returns the entries not written yet.
    pub fn pending(&self) -> &[Draft] {
        &self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> RunIdentity {
        RunIdentity {
            operator: "ops@build-1".into(),
            airlock: "0.1.0".into(),
            command: "apply".into(),
        }
    }

    fn draft(action: &str) -> Draft {
        Draft {
            time: "2026-12-04T20:10:10Z".into(),
            phase: "Upload artifacts".into(),
            host: "127.0.1.11".into(),
            action: action.into(),
            digest: Some(Digest::of_bytes(action.as_bytes())),
            result: RESULT_OK.into(),
        }
    }

    /// Writes a log of `count` entries and returns its text and head.
    fn log_of(count: usize) -> (String, Head) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut log = AuditLog::open(&path, Digest::of_bytes(b"bundle.yaml")).unwrap();
        for index in 0..count {
            log.append(&identity(), draft(&format!("action {index}")))
                .unwrap();
        }
        (std::fs::read_to_string(&path).unwrap(), log.head())
    }

    fn replace_line(text: &str, line: usize, new: &str) -> String {
        text.lines()
            .enumerate()
            .map(|(index, old)| if index + 1 == line { new } else { old })
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn appended_log_verifies_and_chains_to_genesis() {
        let (text, head) = log_of(4);
        let verified = verify(&text, Some(&head)).unwrap();
        assert_eq!(verified.entries.len(), 4);
        assert_eq!(verified.genesis, Some(Digest::of_bytes(b"bundle.yaml")));
        assert_eq!(verified.head(), Some(head));
        assert_eq!(verified.after_head, 0);
    }

    #[test]
    fn entry_fields_keep_their_order() {
        let (text, _) = log_of(1);
        let keys: Vec<String> = text
            .split(",\"")
            .map(|part| {
                part.trim_start_matches("{\"")
                    .split('"')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            keys,
            [
                "seq", "time", "operator", "airlock", "command", "phase", "host", "action",
                "digest", "result", "prev"
            ]
        );
    }

    #[test]
    fn edited_line_is_named() {
        let (text, head) = log_of(5);
        for line in 1..=5 {
            let original = text.lines().nth(line - 1).unwrap();
            let edited = replace_line(&text, line, &original.replace("action", "act1on"));
            let error = verify(&edited, Some(&head)).unwrap_err();
            assert_eq!(error.line(), line as u64, "{error}");
        }
    }

    #[test]
    fn edited_prev_field_is_named() {
        let (text, head) = log_of(4);
        let line = text.lines().nth(2).unwrap();
        let entry: Entry = serde_json::from_str(line).unwrap();
        let edited_line =
            line.replace(&entry.prev.to_string(), &Digest::of_bytes(b"x").to_string());
        let error = verify(&replace_line(&text, 3, &edited_line), Some(&head)).unwrap_err();
        assert_eq!(error.line(), 3, "{error}");
    }

    #[test]
    fn deleted_line_is_named() {
        let (text, head) = log_of(5);
        for line in 1..=5 {
            let kept: String = text
                .lines()
                .enumerate()
                .filter(|(index, _)| index + 1 != line)
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            let error = verify(&kept, Some(&head)).unwrap_err();
            assert_eq!(error.line(), line as u64, "{error}");
        }
    }

    #[test]
    fn swapped_lines_are_named() {
        let (text, head) = log_of(5);
        let lines: Vec<&str> = text.lines().collect();
        for first in 1..5 {
            let mut swapped = lines.clone();
            swapped.swap(first - 1, first);
            let swapped: String = swapped.iter().map(|l| format!("{l}\n")).collect();
            let error = verify(&swapped, Some(&head)).unwrap_err();
            assert_eq!(error.line(), first as u64, "{error}");
        }
    }

    #[test]
    fn last_line_needs_the_head() {
        let (text, head) = log_of(3);
        let original = text.lines().nth(2).unwrap();
        let edited = replace_line(&text, 3, &original.replace("action 2", "action 9"));
        assert!(
            verify(&edited, None).is_ok(),
            "without a head the last line is unprotected"
        );
        let error = verify(&edited, Some(&head)).unwrap_err();
        assert!(
            matches!(error, ChainError::HeadChanged { line: 3, .. }),
            "{error}"
        );
    }

    #[test]
    fn lines_after_the_head_are_counted() {
        let (text, _) = log_of(4);
        let verified = verify(&text, None).unwrap();
        let earlier = Head {
            lines: 2,
            digest: verified.digests[1],
        };
        assert_eq!(verify(&text, Some(&earlier)).unwrap().after_head, 2);
    }

    #[test]
    fn reopened_log_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let genesis = Digest::of_bytes(b"bundle 1");
        let mut log = AuditLog::open(&path, genesis).unwrap();
        log.append(&identity(), draft("first run")).unwrap();
        drop(log);
        let mut log = AuditLog::open(&path, Digest::of_bytes(b"bundle 2")).unwrap();
        let entry = log.append(&identity(), draft("second run")).unwrap();
        assert_eq!(entry.seq, 2);
        let verified = verify(&std::fs::read_to_string(&path).unwrap(), Some(&log.head())).unwrap();
        assert_eq!(verified.genesis, Some(genesis));
    }

    #[test]
    fn broken_log_is_not_opened_for_appending() {
        let (text, _) = log_of(3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, replace_line(&text, 2, "{}")).unwrap();
        let error = AuditLog::open(&path, Digest::of_bytes(b"b")).unwrap_err();
        assert!(matches!(error, AuditLogError::Broken { .. }), "{error}");
    }

    #[test]
    fn cut_off_last_line_is_reported() {
        let (text, _) = log_of(2);
        let error = verify(text.trim_end(), None).unwrap_err();
        assert_eq!(error, ChainError::Unterminated { line: 2 });
    }
}
