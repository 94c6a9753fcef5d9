//! `airlock audit`: the hash-chained audit log.

use super::report::print_output;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{CliError, CliResult, Status};
use crate::blueprint::audit::{self, AuditLogError, Head};
use crate::blueprint::sign::SIGNATURE_SUFFIX;
use crate::blueprint::{self, Blueprint};
use crate::bundle::PublicKey;
use crate::bundle::keys::{SignatureError, verify_detached};
use crate::ui::{Ui, format_count};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that no line of an audit log was edited, removed or reordered.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The audit log (JSON lines). audit.log.head and blueprint.yaml beside it are checked too
    /// when they exist: without a head record, an edit of the last line cannot be detected.
    pub file: PathBuf,
    /// The head record to check the last line against (default: FILE.head when it exists).
    #[arg(long, value_name = "FILE")]
    pub head: Option<PathBuf>,
    /// Require the head record's minisign signature (HEAD.minisig) by this public key.
    #[arg(long, value_name = "PUB")]
    pub key: Option<PathBuf>,
}

pub fn run(command: AuditCommand, ui: &Ui) -> CliResult {
    match command {
        AuditCommand::Verify(args) => verify(args, ui),
    }
}

fn verify(args: VerifyArgs, ui: &Ui) -> CliResult {
    let text = match audit::read_log(&args.file) {
        Ok(Some(text)) => text,
        Ok(None) => {
            return Err(
                CliError::usage(anyhow::anyhow!("{} does not exist", args.file.display())).help(
                    "pass the audit.log from the --out directory of apply, or a controller's copy",
                ),
            );
        }
        Err(error @ AuditLogError::TooLarge { .. }) => return Err(CliError::failure(error)),
        Err(error) => return Err(CliError::failure(error)),
    };
    let head_path = args
        .head
        .clone()
        .unwrap_or_else(|| with_suffix(&args.file, ".head"));
    let head = read_head(&head_path, args.head.is_some())?;
    let signer = match &args.key {
        Some(key) => {
            let head = head.as_ref().ok_or_else(|| {
                CliError::usage(anyhow::anyhow!(
                    "--key needs the head record {}, which does not exist",
                    head_path.display()
                ))
            })?;
            Some(check_head_signature(&head_path, head, key)?)
        }
        None => None,
    };

    let verified = audit::verify(&text, head.as_ref()).map_err(|error| {
        CliError::failure(error).context(format!("{} failed verification", args.file.display()))
    })?;
    let blueprint_check = check_blueprint(&args.file, &verified)?;

    let mut lines = vec![format!(
        "{}: {} verified",
        args.file.display(),
        format_count(verified.entries.len(), "entry", "entries")
    )];
    if let Some(genesis) = verified.genesis {
        lines.push(format!("chained from bundle {genesis}"));
    }
    match (&head, signer) {
        (Some(head), Some(key)) => lines.push(format!(
            "the last line matches {} ({} entries, {}), signed by key {key}",
            head_path.display(),
            head.lines,
            head.digest
        )),
        (Some(head), None) => lines.push(format!(
            "the last line matches {} ({} entries, {})",
            head_path.display(),
            head.lines,
            head.digest
        )),
        (None, _) => ui.warn(&format!(
            "no head record at {}: an edit of the last line cannot be detected",
            head_path.display()
        )),
    }
    if verified.after_head > 0 {
        ui.warn(&format!(
            "{} entries follow the head record: a run stopped before it wrote the head",
            verified.after_head
        ));
    }
    if let Some(text) = blueprint_check {
        lines.push(text);
    }
    print_output(&format!("{}\n", lines.join("\n")))?;
    Ok(Status::Success)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Reads a head record; a missing default one is `None`, a missing explicit one an error.
fn read_head(path: &Path, explicit: bool) -> Result<Option<Head>, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Head::parse(&text).map(Some).map_err(|error| {
            CliError::failure(anyhow::anyhow!(
                "the head record {} is invalid: {error}",
                path.display()
            ))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
        Err(error) => {
            Err(CliError::usage(error).context(format!("cannot read {}", path.display())))
        }
    }
}

/// Checks `HEAD.minisig` against `key` and that its trusted comment names the same head.
fn check_head_signature(path: &Path, head: &Head, key: &Path) -> Result<String, CliError> {
    let key = PublicKey::load(key).map_err(CliError::usage)?;
    let signature_path = with_suffix(path, SIGNATURE_SUFFIX);
    let signature = std::fs::read(&signature_path).map_err(|error| {
        CliError::failure(error)
            .context(format!(
                "cannot read the signature {}",
                signature_path.display()
            ))
            .help("apply writes it with --sign-blueprint KEY")
    })?;
    let data = std::fs::read(path).map_err(CliError::failure)?;
    let comment = verify_detached(&key, &data, &signature).map_err(|error| {
        let reason = match error {
            SignatureError::UntrustedKey { key_id, .. } => {
                format!("{} is signed by key {key_id}", path.display())
            }
            SignatureError::Invalid { .. } => {
                format!("{} was changed after it was signed", path.display())
            }
            other => other.to_string(),
        };
        CliError::failure(anyhow::anyhow!(
            "the signature {} does not verify with key {}: {reason}",
            signature_path.display(),
            key.id()
        ))
    })?;
    let signed_head = comment
        .split('\t')
        .find_map(|field| field.strip_prefix("head:"));
    if signed_head.is_some_and(|digest| digest != head.digest.to_string()) {
        return Err(CliError::failure(anyhow::anyhow!(
            "the signed comment of {} names head {}, but the head record contains {}",
            signature_path.display(),
            signed_head.unwrap_or_default(),
            head.digest
        )));
    }
    Ok(key.id().to_string())
}

/// Checks the audit head that `blueprint.yaml` beside the log records, when there is one.
fn check_blueprint(log: &Path, verified: &audit::Verified) -> Result<Option<String>, CliError> {
    let path = log
        .parent()
        .unwrap_or(Path::new("."))
        .join(blueprint::FILE_NAME);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let recorded = Blueprint::parse(&text)
        .map_err(|error| {
            CliError::failure(error).context(format!("cannot read {}", path.display()))
        })?
        .audit_log;
    let found = (recorded.entries as usize)
        .checked_sub(1)
        .and_then(|index| verified.digests.get(index));
    match found {
        Some(digest) if *digest == recorded.head => Ok(Some(format!(
            "{} records entry {} with the same digest",
            path.display(),
            recorded.entries
        ))),
        Some(digest) => Err(CliError::failure(anyhow::anyhow!(
            "line {} was changed: its sha256 is {digest}, but {} records {}",
            recorded.entries,
            path.display(),
            recorded.head
        ))),
        None if recorded.entries == 0 => Ok(None),
        None => Err(CliError::failure(anyhow::anyhow!(
            "the log ends at line {}, but {} records {} entries: line {} and later were removed",
            verified.entries.len(),
            path.display(),
            recorded.entries,
            verified.entries.len() + 1
        ))),
    }
}
