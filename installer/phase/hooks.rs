//! The cluster file's `hooks`: shell commands a host runs before or after an action, as the SSH
//! user (not through sudo), in the order written, as k0sctl runs them.
//!
//! `connect.after` runs once the facts of every host are gathered, and `install.before` and
//! `install.after` run around each host's own `k0s install` and start (see `install.rs`). The
//! `reset` hooks run on the hosts a reset takes off (every host for `airlock reset`, the hosts
//! marked `reset: true` during `apply`), and the `backup` hooks on the leader, where `k0s backup`
//! runs.
//!
//! `connect.before` hooks are accepted but never run, as in k0sctl: a host cannot run a command
//! before airlock is connected to it.

use async_trait::async_trait;

use super::context::{Node, Run};
use super::{HostFailure, Phase, PhaseError, for_each_host};
use crate::config::{Hooks, Host as HostSpec};
use crate::remote::Host;

/// A hook command that failed, named as k0sctl names it.
#[derive(Debug, thiserror::Error)]
#[error(
    "failed to execute hook {command:?} for action {action:?} stage {stage:?} on host {host}: {reason}"
)]
pub struct HookError {
    pub command: String,
    pub action: &'static str,
    pub stage: &'static str,
    pub host: String,
    /// The exit status and standard error of the hook, or why it could not run.
    pub reason: String,
}

/// Describes why a hook failed without repeating the host and command that [`HookError`] names.
fn hook_failure(error: crate::remote::HostError) -> String {
    match error {
        crate::remote::HostError::Command { exit, stderr, .. } if stderr.is_empty() => exit,
        crate::remote::HostError::Command { exit, stderr, .. } => format!("{exit}: {stderr}"),
        other => other.to_string(),
    }
}

/// Runs the `action`/`stage` hooks of one host in order, stopping at the first that fails.
/// Returns the commands that ran.
pub async fn run_host_hooks(
    host: &Host,
    spec: &HostSpec,
    action: &'static str,
    stage: &'static str,
) -> Result<Vec<String>, HookError> {
    let commands = spec.hooks.commands(action, stage);
    for command in commands {
        host.run_as_login_user(command)
            .await
            .map_err(|source| HookError {
                command: command.clone(),
                action,
                stage,
                host: host.label().to_string(),
                reason: hook_failure(source),
            })?;
        tracing::info!(host = %host.label(), action, stage, command, "ran hook");
    }
    Ok(commands.to_vec())
}

/// Prints the `install` hooks a dry run would run around one host's install.
pub fn describe_install_hooks(run: &Run, node: &super::Node) {
    for stage in Hooks::STAGES {
        for command in node.spec.hooks.commands("install", stage) {
            run.ui.println(&format!(
                "{}: would run install.{stage} hook {command:?}",
                node.label()
            ));
        }
    }
}

/// Records in the audit log the `install` hooks that ran around a successful install of node
/// `index`. A successful install ran every one of them, because `install_and_start` stops at a
/// failing hook.
pub fn record_install_hooks(run: &mut Run, index: usize, phase: &'static str) {
    let label = run.nodes[index].label();
    for stage in Hooks::STAGES {
        for command in run.nodes[index]
            .spec
            .hooks
            .commands("install", stage)
            .to_vec()
        {
            run.record(
                phase,
                &label,
                format!("run install.{stage} hook {command:?}"),
                None,
            );
        }
    }
}

/// Phase "Run hooks": the `action`/`stage` hooks of every selected host that has them.
pub struct RunHooks {
    pub action: &'static str,
    pub stage: &'static str,
    pub title: &'static str,
    pub hosts: HookHosts,
}

/// The hosts whose hooks a [`RunHooks`] phase runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookHosts {
    All,
    Leader,
    MarkedForReset,
}

impl RunHooks {
    fn selected<'a>(&self, run: &'a Run) -> impl Iterator<Item = &'a Node> {
        let hosts = self.hosts;
        let (action, stage) = (self.action, self.stage);
        run.nodes
            .iter()
            .enumerate()
            .filter(move |(index, node)| match hosts {
                // A host marked `reset: true` leaves the cluster in this run, so only its
                // connect and reset hooks run on it.
                HookHosts::All => !node.spec.reset || matches!(action, "connect" | "reset"),
                HookHosts::Leader => *index == run.leader,
                HookHosts::MarkedForReset => node.spec.reset,
            })
            .map(|(_, node)| node)
            .filter(move |node| !node.spec.hooks.commands(action, stage).is_empty())
    }
}

#[async_trait]
impl Phase<Run> for RunHooks {
    fn title(&self) -> &'static str {
        self.title
    }

    fn should_run(&self, run: &Run) -> bool {
        self.selected(run).next().is_some()
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let (action, stage) = (self.action, self.stage);
        let work: Vec<_> = self
            .selected(run)
            .map(|node| (node.host(), node.label(), node.spec.clone()))
            .collect();
        let ui = &run.ui;
        let ran = for_each_host(
            work,
            run.settings.concurrency,
            |(host, label, spec)| async move {
                let commands = run_host_hooks(&host, &spec, action, stage)
                    .await
                    .map_err(|error| HostFailure::new(label.clone(), error))?;
                for command in &commands {
                    ui.println(&format!("{label}: ran {action}.{stage} hook {command:?}"));
                }
                Ok((label, commands))
            },
        )
        .await?;
        for (label, commands) in ran {
            for command in commands {
                run.record(
                    self.title,
                    &label,
                    format!("run {action}.{stage} hook {command:?}"),
                    None,
                );
            }
        }
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        for node in self.selected(run) {
            for command in node.spec.hooks.commands(self.action, self.stage) {
                run.ui.println(&format!(
                    "{}: would run {}.{} hook {command:?}",
                    node.label(),
                    self.action,
                    self.stage
                ));
            }
        }
        Ok(())
    }
}
