//! Phases "Lock hosts" and "Release host locks": keep two airlock runs off the same hosts.

use async_trait::async_trait;

use super::context::Run;
use super::{HostFailure, Phase, PhaseError, for_each_host_settled};
use crate::remote::HostLock;

pub struct Lock;

#[async_trait]
impl Phase<Run> for Lock {
    fn title(&self) -> &'static str {
        "Lock hosts"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let hosts: Vec<(usize, _, String)> = run
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| (index, node.host(), node.label()))
            .collect();
        let owner = &run.owner;
        let (locks, failures) = for_each_host_settled(
            hosts,
            run.settings.concurrency,
            |(index, host, label)| async move {
                HostLock::acquire(host, owner)
                    .await
                    .map(|lock| (index, lock))
                    .map_err(|e| HostFailure::new(label, e))
            },
        )
        .await;
        // Locks taken on the other hosts are kept here so that clean-up releases them.
        for (index, lock) in locks {
            run.nodes[index].lock = Some(lock);
        }
        match failures {
            None => Ok(()),
            Some(failures) => Err(PhaseError::new(failures)
                .with_help("another airlock run is working on these hosts; wait for it to finish")),
        }
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        run.ui
            .println(&format!("would lock {} hosts", run.nodes.len()));
        Ok(())
    }

    async fn clean_up(&mut self, run: &mut Run) {
        release_locks(run).await;
    }
}

/// Releases every lock this run holds, logging (not failing) where a host cannot be reached.
pub async fn release_locks(run: &mut Run) {
    for node in &mut run.nodes {
        if let (Some(lock), Some(host)) = (node.lock.take(), node.connection.clone())
            && let Err(error) = lock.release(&host).await
        {
            tracing::warn!(host = %node.label(), %error, "cannot release the host lock; it expires by itself");
        }
    }
}

pub struct ReleaseLocks;

#[async_trait]
impl Phase<Run> for ReleaseLocks {
    fn title(&self) -> &'static str {
        "Release host locks"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        release_locks(run).await;
        Ok(())
    }

    async fn dry_run(&mut self, _run: &mut Run) -> Result<(), PhaseError> {
        Ok(())
    }
}
