//! Phase "Open the audit log": continue the hash chain where the last run left it.
//!
//! The log lives in `--out` and on every controller. This phase reads the local copy and the
//! line count and content digest of each controller's copy. A local copy that lags behind a
//! controller's (another machine ran airlock since) gets the lines it lacks appended, and a
//! missing local copy is fetched whole. Copies that are not prefixes of one another stop the
//! run, because one of them was changed. With no copy anywhere, the chain
//! starts at the bundle digest. Entries recorded by earlier phases are appended once the log is
//! open. [`record_failure`] records a failed phase and copies the log to the controllers.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::context::Run;
use super::{HostFailure, HostFailures, Phase, PhaseError, for_each_host};
use crate::blueprint::audit::{self, AuditLog, AuditLogError, Draft};
use crate::blueprint::controllers::remote_path;
use crate::blueprint::controllers::{self, RemoteLog, RemoteLogError};
use crate::blueprint::{now_rfc3339, write_file};
use crate::digest::Digest;
use crate::remote::Host;
use crate::ui::format_count;

pub struct OpenAuditLog;

/// A controller's copy of the log.
struct Copy {
    host: Arc<Host>,
    label: String,
    path: String,
    state: Option<RemoteLog>,
}

/// Reads the head of every controller's copy.
async fn controller_copies(run: &Run) -> Result<Vec<Copy>, PhaseError> {
    let controllers: Vec<_> = run
        .nodes
        .iter()
        .filter(|node| node.spec.role.is_controller())
        .map(|node| {
            (
                node.host(),
                node.label(),
                controllers::remote_path(&node.spec.data_dir, audit::FILE_NAME),
            )
        })
        .collect();
    let copies = for_each_host(
        controllers,
        run.settings.concurrency,
        |(host, label, path)| async move {
            match controllers::log_state(&host, &path).await {
                Ok(state) => Ok(Copy {
                    host,
                    label,
                    path,
                    state,
                }),
                Err(error) => Err(HostFailure::new(label, error)),
            }
        },
    )
    .await?;
    Ok(copies)
}

/// Brings the local log at `path` up to the longest controller copy. Returns where the log
/// continues from, for the message.
async fn catch_up(path: &Path, copies: &[Copy]) -> Result<String, PhaseError> {
    let local = audit::read_log(path)?;
    let verified = match &local {
        Some(text) => Some(audit::verify(text, None).map_err(|source| {
            PhaseError::new(AuditLogError::Broken {
                path: path.to_path_buf(),
                source,
            })
            .with_help(format!(
                "`airlock audit verify {}` shows the broken line; keep the file as evidence, move it away, and run again to continue from the controllers' copy",
                path.display()
            ))
        })?),
        None => None,
    };
    let local_text = local.as_deref().unwrap_or_default();
    let local_lines = verified.as_ref().map_or(0, |v| v.entries.len() as u64);
    let longest = copies
        .iter()
        .filter_map(|copy| copy.state.map(|state| (copy, state)))
        .max_by_key(|(_, state)| state.head.lines);

    let source = match longest {
        Some((copy, state)) if state.head.lines > local_lines => {
            let host_error = |error| HostFailure::new(copy.label.clone(), error).into_error();
            let prefix = controllers::prefix_digest(&copy.host, &copy.path, local_lines)
                .await
                .map_err(host_error)?;
            if local_lines > 0 && prefix != Some(Digest::of_bytes(local_text.as_bytes())) {
                return Err(diverged(RemoteLogError::Diverged {
                    host: copy.label.clone(),
                    path: copy.path.clone(),
                    remote: local_lines,
                }));
            }
            let missing = controllers::read_log_after(&copy.host, &copy.path, local_lines)
                .await
                .map_err(host_error)?;
            append_local(path, local_text, &missing)?;
            format!(
                "continued from the copy on {} ({} entries)",
                copy.label, state.head.lines
            )
        }
        _ => match &verified {
            Some(verified) => format!(
                "continues after {}",
                format_count(verified.entries.len(), "entry", "entries")
            ),
            None => "a new log, chained to the bundle digest".to_string(),
        },
    };

    // Every copy must now equal the first lines of the local log.
    let text = audit::read_log(path)?.unwrap_or_default();
    audit::verify(&text, None).map_err(|source| {
        PhaseError::new(RemoteLogError::Broken {
            host: "the controllers' copy".to_string(),
            path: path.display().to_string(),
            source: Box::new(source),
        })
    })?;
    for copy in copies {
        if let Some(state) = &copy.state {
            controllers::check_prefix(&copy.label, &copy.path, state, &text).map_err(diverged)?;
        }
    }
    Ok(source)
}

/// Appends the lines `missing` to the local log whose current text is `current`, after checking
/// that the result verifies.
fn append_local(path: &Path, current: &str, missing: &str) -> Result<(), PhaseError> {
    let combined = format!("{current}{missing}");
    audit::verify(&combined, None).map_err(|source| {
        PhaseError::new(AuditLogError::Broken {
            path: path.to_path_buf(),
            source,
        })
        .with_help("the controller's copy of the audit log does not verify; run `airlock audit verify` on it")
    })?;
    use std::io::Write;
    let write_error = |source| AuditLogError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_error)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(write_error)?;
    file.write_all(missing.as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(write_error)?;
    Ok(())
}

fn diverged(error: RemoteLogError) -> PhaseError {
    PhaseError::new(error).with_help(
        "copies of the audit log differ: verify each with `airlock audit verify`, keep the genuine one as --out/audit.log, and move the others away",
    )
}

#[async_trait]
impl Phase<Run> for OpenAuditLog {
    fn title(&self) -> &'static str {
        "Open the audit log"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let path = run.settings.out_dir.join(audit::FILE_NAME);
        let copies = controller_copies(run).await?;
        let source = catch_up(&path, &copies).await?;
        let log = AuditLog::open(&path, run.audit_genesis())?;
        run.ui
            .println(&format!("audit log {}: {source}", path.display()));
        run.audit.attach(log);
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let path = run.settings.out_dir.join(audit::FILE_NAME);
        let local = audit::read_log(&path)?;
        let lines = local.as_deref().map_or(0, |text| text.lines().count());
        let copies = controller_copies(run).await?;
        let remote: Vec<String> = copies
            .iter()
            .map(|copy| match copy.state {
                Some(state) => format!("{} holds {} entries", copy.label, state.head.lines),
                None => format!("{} holds none", copy.label),
            })
            .collect();
        run.ui.println(&format!(
            "would append to {} ({lines} entries; {})",
            path.display(),
            remote.join(", ")
        ));
        Ok(())
    }
}

/// Records a failed phase in the audit log, one entry per failed host, then writes the log head
/// and brings the controllers' copies up to date where they can be reached. A failure before
/// the log was opened stays unrecorded: no host was changed by then.
pub async fn record_failure(run: &mut Run, error: &PhaseError) {
    let failed: Vec<(String, String)> = match error.error.downcast_ref::<HostFailures>() {
        Some(failures) => failures
            .failures
            .iter()
            .map(|failure| (failure.host.clone(), summary(&failure.error)))
            .collect(),
        None => vec![("local".to_string(), summary(&error.error))],
    };
    for (host, reason) in failed {
        run.audit.record(Draft {
            time: now_rfc3339(),
            phase: error.phase.to_string(),
            host,
            action: "phase failed".to_string(),
            digest: None,
            result: format!("failed: {reason}"),
        });
    }
    copy_to_controllers(run).await;
}

/// Writes the audit log head locally and brings the controllers' copies up to the local log,
/// warning (not failing) where a controller cannot be reached.
async fn copy_to_controllers(run: &Run) {
    // A reset deletes the controllers' data directories, where the copies live.
    if run.settings.mode == super::RunMode::Reset {
        return;
    }
    let Some(head) = run.audit.log().map(|log| log.head()) else {
        return;
    };
    if let Err(error) = write_file(
        &run.settings.out_dir,
        audit::HEAD_FILE_NAME,
        head.to_text().as_bytes(),
    ) {
        tracing::warn!(error = %format!("{error:#}"), "cannot write the audit log head");
    }
    let log_path = run.settings.out_dir.join(audit::FILE_NAME);
    let Ok(Some(text)) = audit::read_log(&log_path) else {
        return;
    };
    for node in run
        .nodes
        .iter()
        .filter(|node| node.spec.role.is_controller() && !node.spec.reset)
    {
        let Some(host) = node.connection.clone() else {
            continue;
        };
        let path = remote_path(&node.spec.data_dir, audit::FILE_NAME);
        let head_path = remote_path(&node.spec.data_dir, audit::HEAD_FILE_NAME);
        let synced = async {
            controllers::sync_log(&host, &path, &text).await?;
            host.write_file(&head_path, head.to_text().as_bytes(), "0600")
                .await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(error) = synced {
            tracing::warn!(host = %node.label(), error = %format!("{error:#}"), "cannot copy the audit log to the controller");
        }
    }
}

/// Phase "Copy the audit log to the controllers": for commands that write no blueprint (which
/// copies the log as part of its outputs).
pub struct SyncAuditLog;

#[async_trait]
impl Phase<Run> for SyncAuditLog {
    fn title(&self) -> &'static str {
        "Copy the audit log to the controllers"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        copy_to_controllers(run).await;
        Ok(())
    }

    async fn dry_run(&mut self, _run: &mut Run) -> Result<(), PhaseError> {
        Ok(())
    }
}

/// Joins the error and its causes on one line, each cut at its first line break, to at most 400
/// characters, so that an audit entry names the failure without a page of context.
fn summary(error: &anyhow::Error) -> String {
    let text = error
        .chain()
        .map(|cause| {
            cause
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(": ");
    match text.char_indices().nth(400) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}
