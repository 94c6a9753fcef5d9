//! The ordered, named phases of `apply` and `upgrade`.
//!
//! A command is a list of [`Phase`] values built in one place, so that the list reads as the
//! command's table of contents. The runner prints a header per phase, runs it (or its dry-run
//! form), and when a phase fails, runs the clean-up of every phase that already ran, in reverse
//! order, before returning the error with the failed phase's title.

mod audit_log;
mod backup;
mod configure_k0s;
mod connect;
pub mod context;
mod facts;
mod gather_facts;
mod hooks;
mod hosts;
mod install;
mod install_stacks;
mod k0s_ops;
mod lock;
mod manifests;
pub mod plan;
mod preflight;
mod render_stacks;
mod reset;
mod upgrade;
mod upload;
pub mod user_files;
mod verify_bundle;
mod write_blueprint;

use std::fmt;
use std::time::Instant;

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

pub use audit_log::record_failure;
pub use backup::read_restore_source;
pub use context::{Node, RecordedAction, Run, RunMode, RunSettings, StackOutcome};
pub use facts::{Facts, Gpu};
use hooks::HookHosts;
pub use hosts::{HostFailure, HostFailures, for_each_host, for_each_host_settled};
pub use k0s_ops::K0sPaths;

use crate::ui::{Ui, format_duration};

/// The phases of `airlock apply`, in order: the table of contents of an install.
pub fn apply() -> Vec<Box<dyn Phase<Run>>> {
    vec![
        Box::new(verify_bundle::VerifyBundle),
        Box::new(connect::Connect),
        Box::new(lock::Lock),
        Box::new(audit_log::OpenAuditLog),
        Box::new(gather_facts::GatherFacts),
        Box::new(hooks::RunHooks {
            action: "connect",
            stage: "after",
            title: "Run the connect.after hooks",
            hosts: hooks::HookHosts::All,
        }),
        Box::new(render_stacks::RenderStacks),
        Box::new(preflight::Preflight),
        Box::new(upload::Upload),
        Box::new(configure_k0s::ConfigureK0s),
        Box::new(backup::RestoreCluster),
        Box::new(hooks::RunHooks {
            action: "apply",
            stage: "before",
            title: "Run the apply.before hooks",
            hosts: HookHosts::All,
        }),
        Box::new(install::InitializeCluster),
        Box::new(install::JoinControllers),
        Box::new(install::JoinWorkers),
        Box::new(hooks::RunHooks {
            action: "reset",
            stage: "before",
            title: "Run the reset.before hooks",
            hosts: HookHosts::MarkedForReset,
        }),
        Box::new(reset::ResetMarked),
        Box::new(hooks::RunHooks {
            action: "reset",
            stage: "after",
            title: "Run the reset.after hooks",
            hosts: HookHosts::MarkedForReset,
        }),
        Box::new(reset::PruneNodes),
        Box::new(install_stacks::InstallStacks),
        Box::new(manifests::ApplyManifests),
        Box::new(hooks::RunHooks {
            action: "apply",
            stage: "after",
            title: "Run the apply.after hooks",
            hosts: HookHosts::All,
        }),
        Box::new(write_blueprint::WriteBlueprint),
        Box::new(lock::ReleaseLocks),
    ]
}

/// The phases of `airlock upgrade`, in order.
pub fn upgrade(worker_batch: usize) -> Vec<Box<dyn Phase<Run>>> {
    vec![
        Box::new(verify_bundle::VerifyBundle),
        Box::new(connect::Connect),
        Box::new(lock::Lock),
        Box::new(audit_log::OpenAuditLog),
        Box::new(gather_facts::GatherFacts),
        Box::new(hooks::RunHooks {
            action: "connect",
            stage: "after",
            title: "Run the connect.after hooks",
            hosts: hooks::HookHosts::All,
        }),
        Box::new(upgrade::ReadInstalled),
        Box::new(upgrade::CheckUpgrade),
        Box::new(render_stacks::RenderStacks),
        Box::new(preflight::Preflight),
        Box::new(upgrade::PlanUpgrade { worker_batch }),
        Box::new(upload::Upload),
        Box::new(configure_k0s::ConfigureK0s),
        Box::new(hooks::RunHooks {
            action: "upgrade",
            stage: "before",
            title: "Run the upgrade.before hooks",
            hosts: HookHosts::All,
        }),
        Box::new(upgrade::UpgradeControllers),
        Box::new(upgrade::UpgradeWorkers {
            batch: worker_batch,
        }),
        Box::new(upgrade::UpgradeStacks),
        Box::new(hooks::RunHooks {
            action: "upgrade",
            stage: "after",
            title: "Run the upgrade.after hooks",
            hosts: HookHosts::All,
        }),
        Box::new(write_blueprint::WriteBlueprint),
        Box::new(lock::ReleaseLocks),
    ]
}

/// The phases of `airlock reset`, in order: workers, then controllers, the leader last.
pub fn reset() -> Vec<Box<dyn Phase<Run>>> {
    vec![
        Box::new(connect::Connect),
        Box::new(lock::Lock),
        Box::new(audit_log::OpenAuditLog),
        Box::new(gather_facts::GatherFacts),
        Box::new(hooks::RunHooks {
            action: "reset",
            stage: "before",
            title: "Run the reset.before hooks",
            hosts: HookHosts::All,
        }),
        Box::new(reset::ResetCluster),
        Box::new(hooks::RunHooks {
            action: "reset",
            stage: "after",
            title: "Run the reset.after hooks",
            hosts: HookHosts::All,
        }),
        Box::new(lock::ReleaseLocks),
    ]
}

/// The phases of `airlock backup`, in order.
pub fn backup() -> Vec<Box<dyn Phase<Run>>> {
    vec![
        Box::new(connect::Connect),
        Box::new(lock::Lock),
        Box::new(audit_log::OpenAuditLog),
        Box::new(gather_facts::GatherFacts),
        Box::new(hooks::RunHooks {
            action: "backup",
            stage: "before",
            title: "Run the backup.before hooks",
            hosts: HookHosts::Leader,
        }),
        Box::new(backup::TakeBackup),
        Box::new(hooks::RunHooks {
            action: "backup",
            stage: "after",
            title: "Run the backup.after hooks",
            hosts: HookHosts::Leader,
        }),
        Box::new(audit_log::SyncAuditLog),
        Box::new(lock::ReleaseLocks),
    ]
}

/// One step of a command.
#[async_trait]
pub trait Phase<C: Send>: Send {
    /// The header printed before the phase runs, e.g. "Connect to hosts".
    fn title(&self) -> &'static str;

    /// Returns whether the phase has anything to do. A phase that has nothing to do is skipped
    /// and logs why at debug level.
    fn should_run(&self, _context: &C) -> bool {
        true
    }

    /// Does the work.
    async fn run(&mut self, context: &mut C) -> Result<(), PhaseError>;

    /// Prints what [`Phase::run`] would change without changing it. Phases that only read
    /// (connecting, gathering facts) run for real in a dry run.
    async fn dry_run(&mut self, context: &mut C) -> Result<(), PhaseError>;

    /// Undoes what a run of this phase left half-done, after a later phase failed. Runs only for
    /// phases that ran.
    async fn clean_up(&mut self, _context: &mut C) {}
}

/// Ctrl-C stopped the run between two phases.
#[derive(Debug, thiserror::Error)]
#[error("Ctrl-C was pressed; the phases before this one finished")]
pub struct Interrupted;

/// A failed phase: its title and the error. It is not a `std::error::Error` itself, so that any
/// error converts into it with `?`.
#[derive(Debug)]
pub struct PhaseError {
    pub phase: &'static str,
    pub error: anyhow::Error,
    /// The action the user can take, printed as a `help:` line.
    pub help: Option<String>,
}

impl PhaseError {
    /// Wraps an error; the runner fills in the phase title.
    pub fn new(error: impl Into<anyhow::Error>) -> PhaseError {
        PhaseError {
            phase: "",
            error: error.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> PhaseError {
        self.help = Some(help.into());
        self
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for PhaseError {
    fn from(error: E) -> PhaseError {
        PhaseError::new(error)
    }
}

impl fmt::Display for PhaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "phase \"{}\" failed", self.phase)
    }
}

/// Set by the first Ctrl-C: the runner stops before the next phase and cleans up.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks the runner to stop before the next phase.
pub fn request_stop() {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Returns whether a stop was asked for.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// Runs `phases` in order on `context`, or their dry-run forms.
pub async fn run_phases<C: Send>(
    phases: &mut [Box<dyn Phase<C>>],
    context: &mut C,
    ui: &Ui,
    dry_run: bool,
) -> Result<(), PhaseError> {
    for index in 0..phases.len() {
        let phase = &mut phases[index];
        if !phase.should_run(context) {
            tracing::debug!(phase = phase.title(), "nothing to do, skipping");
            continue;
        }
        if stop_requested() {
            let mut error = PhaseError::new(Interrupted)
                .with_help("run the same command again to continue where it stopped");
            error.phase = phase.title();
            if !dry_run && index > 0 {
                clean_up(&mut phases[..index], context, ui).await;
            }
            return Err(error);
        }
        ui.header(phase.title());
        let started = Instant::now();
        let result = if dry_run {
            phase.dry_run(context).await
        } else {
            phase.run(context).await
        };
        match result {
            Ok(()) => {
                tracing::debug!(phase = phase.title(), elapsed = %format_duration(started.elapsed()), "phase done")
            }
            Err(mut error) => {
                error.phase = phase.title();
                if !dry_run {
                    clean_up(&mut phases[..=index], context, ui).await;
                }
                return Err(error);
            }
        }
    }
    Ok(())
}

async fn clean_up<C: Send>(phases: &mut [Box<dyn Phase<C>>], context: &mut C, ui: &Ui) {
    for phase in phases.iter_mut().rev() {
        if phase.should_run(context) {
            tracing::debug!(phase = phase.title(), "running clean-up");
            phase.clean_up(context).await;
        }
    }
    ui.println("clean-up after the failure is done");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A phase that records its calls into the context and can be told to fail.
    struct Recorder {
        title: &'static str,
        fail: bool,
        skip: bool,
    }

    #[async_trait]
    impl Phase<Vec<String>> for Recorder {
        fn title(&self) -> &'static str {
            self.title
        }

        fn should_run(&self, _calls: &Vec<String>) -> bool {
            !self.skip
        }

        async fn run(&mut self, calls: &mut Vec<String>) -> Result<(), PhaseError> {
            calls.push(format!("run {}", self.title));
            if self.fail {
                Err(PhaseError::new(anyhow::anyhow!("{} broke", self.title)))
            } else {
                Ok(())
            }
        }

        async fn dry_run(&mut self, calls: &mut Vec<String>) -> Result<(), PhaseError> {
            calls.push(format!("dry-run {}", self.title));
            Ok(())
        }

        async fn clean_up(&mut self, calls: &mut Vec<String>) {
            calls.push(format!("clean-up {}", self.title));
        }
    }

    fn phases(fail_at: Option<&str>, skip: &str) -> Vec<Box<dyn Phase<Vec<String>>>> {
        ["one", "two", "three", "four"]
            .into_iter()
            .map(|title| {
                Box::new(Recorder {
                    title,
                    fail: Some(title) == fail_at,
                    skip: title == skip,
                }) as Box<dyn Phase<_>>
            })
            .collect()
    }

    #[tokio::test]
    async fn phases_run_in_order_and_skip() {
        let mut calls = Vec::new();
        run_phases(&mut phases(None, "two"), &mut calls, &Ui::hidden(), false)
            .await
            .unwrap();
        assert_eq!(calls, ["run one", "run three", "run four"]);
    }

    #[tokio::test]
    async fn failure_cleans_up_in_reverse() {
        let mut calls = Vec::new();
        let error = run_phases(
            &mut phases(Some("three"), "two"),
            &mut calls,
            &Ui::hidden(),
            false,
        )
        .await
        .unwrap_err();
        assert_eq!(error.phase, "three");
        assert_eq!(error.to_string(), "phase \"three\" failed");
        assert_eq!(
            calls,
            ["run one", "run three", "clean-up three", "clean-up one"]
        );
    }

    #[tokio::test]
    async fn dry_run_calls_dry_run_forms() {
        let mut calls = Vec::new();
        run_phases(&mut phases(None, ""), &mut calls, &Ui::hidden(), true)
            .await
            .unwrap();
        assert_eq!(
            calls,
            [
                "dry-run one",
                "dry-run two",
                "dry-run three",
                "dry-run four"
            ]
        );
    }
}
