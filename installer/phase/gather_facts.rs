//! Phase "Gather facts": what each host is and what it already runs.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::context::Run;
use super::facts;
use super::{HostFailure, Phase, PhaseError, for_each_host};

pub struct GatherFacts;

#[async_trait]
impl Phase<Run> for GatherFacts {
    fn title(&self) -> &'static str {
        "Gather facts"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let work: Vec<_> = run
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                let script = facts::script(&node.spec.k0s_install_path, &node.spec.data_dir);
                (index, node.host(), node.label(), script)
            })
            .collect();
        let gathered = for_each_host(work, run.settings.concurrency, |(index, host, label, script)| async move {
            let failure = |error: anyhow::Error| HostFailure::new(label.clone(), error);
            let output = host.run(&script).await.map_err(|e| {
                let error = anyhow::Error::new(e);
                if host.uses_sudo() {
                    failure(error.context("the facts script failed; check that the SSH user may run sudo without a password"))
                } else {
                    failure(error)
                }
            })?;
            let local_clock = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
            let mut facts = facts::parse(&output).map_err(|e| failure(e.into()))?;
            facts.clock_skew_seconds = facts.clock - local_clock;
            Ok((index, facts))
        })
        .await?;
        for (index, facts) in gathered {
            let node = &mut run.nodes[index];
            let k0s = match (&facts.k0s_status, &facts.k0s_binary_version) {
                (Some(status), _) => format!("k0s {} running as {}", status.version, status.role),
                (None, Some(version)) => format!("k0s {version} installed, not running"),
                (None, None) => "no k0s".to_string(),
            };
            run.ui.println(&format!(
                "{}: {} {} {}, {} CPUs, {} memory, {}{}",
                node.label(),
                facts.hostname,
                facts.os_name,
                facts.architecture,
                facts.cpus,
                crate::ui::format_bytes(facts.memory_bytes),
                k0s,
                if facts.gpus.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", {}",
                        crate::ui::format_count(facts.gpus.len(), "NVIDIA GPU", "NVIDIA GPUs")
                    )
                },
            ));
            node.facts = facts;
        }
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        self.run(run).await
    }
}
