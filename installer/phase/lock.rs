//! Phases "Lock hosts" and "Release host locks": keep two airlock runs off the same hosts.

use async_trait::async_trait;
use futures::StreamExt;

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

/// Releases every lock this run holds, on every host at once, after each host's
/// [`on_release`](super::context::Node::on_release) commands. Logs (does not fail) where a host
/// cannot be reached.
pub async fn release_locks(run: &mut Run) {
    let releases: Vec<_> = run
        .nodes
        .iter_mut()
        .filter_map(|node| {
            let (lock, host) = (node.lock.take()?, node.connection.clone()?);
            let first = std::mem::take(&mut node.on_release).join("\n");
            Some((node.label(), lock, host, first))
        })
        .collect();
    let concurrency = run.settings.concurrency;
    futures::stream::iter(releases)
        .for_each_concurrent(concurrency, |(label, lock, host, first)| async move {
            if let Err(error) = lock.release_after(&host, &first).await {
                tracing::warn!(host = %label, %error, "cannot release the host lock; it expires by itself");
            }
        })
        .await;
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
