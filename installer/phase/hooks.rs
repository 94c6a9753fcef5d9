//! The cluster file's `hooks`: shell commands a host runs before or after an action, as the SSH
//! user (not through sudo), in the order written, as k0sctl runs them.
//!
//! The `reset` hooks run on the hosts a reset takes off (every host for `airlock reset`, the
//! hosts marked `reset: true` during `apply`), and the `backup` hooks on the leader, where
//! `k0s backup` runs.
//!
//! NOTE: the `install.before`/`install.after` hooks around each host's own install, and the
//! `connect` hooks, are loaded but not run.

use async_trait::async_trait;

use super::context::{Node, Run};
use super::{HostFailure, Phase, PhaseError, for_each_host};

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
                HookHosts::All => true,
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
            .map(|node| {
                (
                    node.host(),
                    node.label(),
                    node.spec.hooks.commands(action, stage).to_vec(),
                )
            })
            .collect();
        let ui = &run.ui;
        let ran = for_each_host(
            work,
            run.settings.concurrency,
            |(host, label, commands)| async move {
                for command in &commands {
                    host.run_as_login_user(command).await.map_err(|error| {
                        HostFailure::new(
                            label.clone(),
                            anyhow::Error::new(error)
                                .context(format!("hook {command:?} of {action}.{stage} failed")),
                        )
                    })?;
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
